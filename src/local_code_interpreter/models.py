"""Chat back-end selection: Azure OpenAI (Entra ID through DefaultAzureCredential), OpenAI, or the embedded default."""

from __future__ import annotations

from typing import Any

from .offline import EmbeddedChatClient
from .settings import ModelSettings


def build_chat_client(model: ModelSettings) -> Any:
    """The chat client for these settings. 429s are retried by the OpenAI SDK with backoff and jitter."""
    if model.kind == "embedded":
        return EmbeddedChatClient()
    from agent_framework.openai import OpenAIChatClient

    if model.kind == "azure-openai":
        auth: dict[str, Any]
        if model.api_key:
            auth = {"api_key": model.api_key}
        else:
            from azure.identity import DefaultAzureCredential

            auth = {"credential": DefaultAzureCredential()}
        client = OpenAIChatClient(model=model.deployment, azure_endpoint=model.endpoint,
                                  api_version=model.api_version or None, **auth)
    else:
        client = OpenAIChatClient(model=model.model, api_key=model.api_key)
    client.client = client.client.with_options(max_retries=model.max_retries)
    return client
