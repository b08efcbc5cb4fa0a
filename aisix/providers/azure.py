"""Azure OpenAI: OpenAI's wire format behind Azure's URLs and ``api-key`` header.

Two URL shapes, chosen by the model's ``api_version``:

* a dated version (``"2024-10-21"``, ``"2025-04-01-preview"``): the deployment
  URL ``{base_url}/openai/deployments/{model}/chat/completions?api-version=...``
  (``model`` is the deployment's name; Azure ignores ``model`` in the body);
* ``"v1"`` or none: the v1 API, ``{base_url}/openai/v1/chat/completions``, with
  ``model`` (the deployment's name) in the body, as OpenAI's own API.

Everything else (bodies, answers, streams, errors) is OpenAI's, read by
`OpenAIProvider`. Azure's own additions are harmless there: ``prompt_filter_results``
and ``content_filter_results`` ride along in chunks (a chunk with no choices
is skipped), a filtered answer ends with ``finish_reason: "content_filter"``,
and a filtered prompt is a 400 whose ``error`` carries ``code: "content_filter"``
and the message, which `refusal` keeps.
"""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import quote

from .openai import OpenAIProvider

# The first dated api-versions whose chat completions take ``max_completion_tokens``.
_FIRST_PREVIEW_WITH_COMPLETION_TOKENS = "2024-09-01-preview"
_LAST_GA_WITHOUT_COMPLETION_TOKENS = "2024-10-21"


class AzureOpenAIProvider(OpenAIProvider):
    kind: ClassVar[str] = "azure"

    def v1(self) -> bool:
        version = self.model.api_version
        return not version or version in ("v1", "preview")

    def _resource_root(self) -> str:
        """``base_url`` without a trailing ``/openai`` or ``/openai/v1``, should the models file give one."""
        root = self.model.base_url.rstrip("/")
        for suffix in ("/openai/v1", "/openai"):
            if root.endswith(suffix):
                return root[: -len(suffix)]
        return root

    def chat_url(self) -> str:
        return self.endpoint_url("chat/completions")

    def endpoint_url(self, endpoint: str) -> str:
        root = self._resource_root()
        version = self.model.api_version
        if self.v1():
            query = "?api-version=preview" if version == "preview" else ""
            return f"{root}/openai/v1/{endpoint}{query}"
        deployment = quote(self.model.model, safe="")
        return f"{root}/openai/deployments/{deployment}/{endpoint}?api-version={quote(version or '', safe='')}"

    def auth_headers(self) -> dict[str, str]:
        return {"api-key": self.model.api_key} if self.model.api_key else {}

    def choose_max_tokens_field(self) -> str:
        """``max_completion_tokens`` where the api-version knows it (reasoning deployments refuse ``max_tokens``).

        The v1 API and previews from 2024-09-01-preview take it; the GA
        2024-10-21 does not (its spec lists ``max_tokens`` only), GA versions
        after it do. A deployment's name says nothing of its model, so the
        choice follows the api-version alone.
        """
        version = self.model.api_version or "v1"
        if self.v1():
            return "max_completion_tokens"
        if version.endswith("-preview"):
            return "max_completion_tokens" if version >= _FIRST_PREVIEW_WITH_COMPLETION_TOKENS else "max_tokens"
        return "max_completion_tokens" if version > _LAST_GA_WITHOUT_COMPLETION_TOKENS else "max_tokens"
