"""ValidateModelHook: the model exists, and the calling key may use it."""

from __future__ import annotations

from typing import Mapping

from ..config import ModelConfig
from ..errors import GatewayError
from .base import Call, Hook


class ValidateModelHook(Hook):
    """Resolves ``call.model_name`` to its `ModelConfig`, or refuses the call.

    Aliases match exactly (case included), so an allow-list naming
    ``my-gpt4-mini`` cannot be got round with ``MY-GPT4-MINI``.
    """

    def __init__(self, models: Mapping[str, ModelConfig]) -> None:
        self.models = models

    async def pre_call(self, call: Call) -> None:
        model = self.models.get(call.model_name)
        if model is None:
            raise GatewayError(
                404,
                f"The model '{call.model_name}' does not exist or you do not have access to it.",
                param="model",
                code="model_not_found",
            )
        if call.key is None or not call.key.may_use(model.name):
            raise GatewayError(
                403,
                f"This API key is not allowed to use the model '{model.name}'.",
                type="permission_error",
                param="model",
                code="model_not_allowed",
            )
        call.model = model
