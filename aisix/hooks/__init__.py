"""The hook pipeline: the interface, the pipeline, and the built-in hooks."""

from .base import Call, Hook, Pipeline, TokenUsage, load_hook
from .rate_limit import RateLimitHook
from .validate_model import ValidateModelHook

__all__ = [
    "Call",
    "Hook",
    "Pipeline",
    "RateLimitHook",
    "TokenUsage",
    "ValidateModelHook",
    "load_hook",
]
