"""A user's own hooks, loaded by import path from the models file (see test_hooks.py)."""

from aisix.errors import GatewayError
from aisix.hooks import Hook

SEEN: list[dict] = []


class BlockWordHook(Hook):
    """Refuses prompts containing a forbidden word, and records every finished call."""

    async def pre_call(self, call):
        for message in call.body["messages"]:
            if "forbidden" in str(message.get("content", "")):
                raise GatewayError(400, "This prompt is not allowed here.", param="messages", code="blocked")
        call.response_headers["x-example-hook"] = "seen"

    async def post_call(self, call):
        SEEN.append({"model": call.model_name, "stream": call.stream, "usage": call.usage, "status": call.status})
