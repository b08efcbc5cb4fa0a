"""OpenAI embeddings, client and upstream alike (OpenAI, Azure, compatible servers).

The answer goes back as it came; its usage is read from the end of the body
(`aisix.dialects.openai_embeddings.embeddings_usage`) rather than by parsing
what may be megabytes of vectors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..dialects.openai_embeddings import embeddings_usage
from ..errors import bad_request
from ..upstream import open_ok, read_answer

if TYPE_CHECKING:
    from ..call import Call
    from ..gateway import Gateway
    from ..providers.openai import OpenAIProvider


class OpenAIEmbeddingsPassthrough:
    """One embeddings call relayed to an OpenAI-compatible upstream (never streamed)."""

    def __init__(self, gateway: "Gateway", call: "Call", provider: "OpenAIProvider", request: Any = None) -> None:
        self.client = gateway.client
        self.call = call
        self.provider = provider
        self.completion_chars = 0

    async def complete(self) -> bytes:
        try:
            request = self.provider.build_embeddings_request(self.client, self.call.body)
        except RecursionError:
            raise bad_request("The request body is nested too deeply.") from None
        body = await read_answer(await open_ok(self.client, self.call, self.provider, request))
        self.call.usage = embeddings_usage(body)
        return body
