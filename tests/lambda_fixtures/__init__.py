"""Apps for tests/test_lambda_runtime.py: plain ASGI, no gateway code."""
