"""AISIX: an OpenAI-compatible LLM gateway for AWS Lambda and local servers."""

__version__ = "0.1.0"
