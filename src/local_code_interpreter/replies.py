"""The agent's reply stream, made safe for DevUI: model failures become a reply the user can act on, and the
Responses API's closing `.done` events (which repeat what the deltas already carried) are not shown twice."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable

from agent_framework import (AgentContext, AgentMiddleware, AgentResponse, AgentResponseUpdate, Content,
                             FunctionMiddleware, Message, MiddlewareFailure, ResponseStream)

log = logging.getLogger(__name__)

_BY_STATUS = {
    400: "The model service rejected the request (400 Bad Request): {detail}",
    401: ("The model service refused the credentials (401 Unauthorized). With workload identity, check the "
          "federated credential and the service account's azure.workload.identity/client-id annotation."),
    403: ("The identity may not call this deployment (403 Forbidden): assign it the 'Cognitive Services OpenAI "
          "User' role on the Azure OpenAI resource (role assignments take a few minutes to apply)."),
    404: "The model deployment was not found (404): check AZURE_OPENAI_RESPONSES_DEPLOYMENT_NAME and the endpoint.",
    429: ("The model service is rate limiting this deployment (429 Too Many Requests), and still was after the "
          "retries: wait a moment and ask again, or raise the deployment's quota."),
}


def explain(error: BaseException) -> str:
    """One clear sentence (or two) for a model-service failure, from the innermost cause we recognise."""
    import openai

    for cause in _chain(error):
        if isinstance(cause, openai.APIStatusError):
            template = _BY_STATUS.get(cause.status_code)
            detail = _first_line(getattr(cause, "message", "") or str(cause))
            if template:
                return template.format(detail=detail)
            return f"The model service failed ({cause.status_code}): {detail}"
        if isinstance(cause, openai.APITimeoutError):
            return "The model service did not answer in time: try again."
        if isinstance(cause, openai.APIConnectionError):
            return ("The model service could not be reached: check AZURE_OPENAI_ENDPOINT (or OPENAI_BASE_URL) "
                    "and that this pod may connect to it over HTTPS.")
        if type(cause).__module__.startswith("azure.") and "Credential" in type(cause).__name__ or \
                type(cause).__name__ == "ClientAuthenticationError":
            return "Could not get a token for Azure OpenAI: " + _first_line(str(cause)) + _token_file_hint()
    return f"The model service failed: {_first_line(str(error)) or type(error).__name__}"


def _token_file_hint() -> str:
    """Point at the workload identity token file when that is what is missing."""
    path = os.environ.get("AZURE_FEDERATED_TOKEN_FILE")
    if path and not os.path.isfile(path):
        return (f" The federated token file AZURE_FEDERATED_TOKEN_FILE={path} does not exist: is the pod labelled "
                "azure.workload.identity/use=true, and its service account annotated with the client ID?")
    return " (in AKS, check the workload identity: AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE)."


def _chain(error: BaseException):
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending += [c for c in (current.__cause__, current.__context__) if c is not None]
        pending += [a for a in current.args if isinstance(a, BaseException)]


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:300] if text.strip() else ""


def sandbox_busy(error: BaseException) -> bool:
    """Whether the run failed because every sandbox slot was busy (the HTTP layer answers 429)."""
    from .sandbox import SandboxBusy

    return any(isinstance(cause, SandboxBusy) for cause in _chain(error))


class BusyAborts(FunctionMiddleware):
    """A tool call that finds the sandbox busy aborts the run (the framework would otherwise hand the model an
    error result and answer 200); the HTTP layer turns it into 429 so the client retries later."""

    async def process(self, context, call_next) -> None:
        try:
            await call_next()
        except Exception as error:
            if sandbox_busy(error):
                raise MiddlewareFailure(str(error)) from error
            raise


class SafeReplies(AgentMiddleware):
    """Answer with `explain(error)` when the model service fails (the server stays healthy), and drop the
    repeated closing text of streamed answers."""

    async def process(self, context: AgentContext, call_next: Callable[[], Awaitable[None]]) -> None:
        try:
            await call_next()
        except Exception as error:  # noqa: BLE001 - every model failure becomes a reply
            if sandbox_busy(error):
                raise
            log.warning("model call failed: %r", error)
            context.result = text_reply(explain(error), stream=context.stream)
            return
        if context.stream and isinstance(context.result, ResponseStream):
            context.result = _cleaned(context.result)


def text_reply(text: str, *, stream: bool) -> AgentResponse | ResponseStream:
    """`text` as the agent's whole answer, in the shape the caller asked for: a stream (of one update) or not."""
    if not stream:
        return AgentResponse(messages=[Message(role="assistant", contents=[Content.from_text(text)])])

    async def updates() -> AsyncIterator[AgentResponseUpdate]:
        yield AgentResponseUpdate(role="assistant", contents=[Content.from_text(text)])
    return ResponseStream(updates(), finalizer=AgentResponse.from_updates)


def _cleaned(stream: ResponseStream) -> ResponseStream:
    """The same stream without `replace` contents that repeat streamed deltas (DevUI appends every text it is
    given), ending in an explanation instead of an exception if the model fails mid-way."""
    async def updates() -> AsyncIterator[AgentResponseUpdate]:
        streamed: set[tuple[str, str]] = set()
        try:
            async for update in stream:
                kept = []
                for content in update.contents:
                    key = (content.type, getattr(content, "call_id", None) or "")
                    if getattr(content, "merge_mode", None) == "replace" and key in streamed:
                        continue
                    if getattr(content, "merge_mode", None) == "append":
                        streamed.add(key)
                    kept.append(content)
                if kept or not update.contents:
                    update.contents = kept
                    yield update
        except Exception as error:  # noqa: BLE001
            if sandbox_busy(error):
                raise
            log.warning("model stream failed: %r", error)
            yield AgentResponseUpdate(role="assistant", contents=[Content.from_text(explain(error))])
    return ResponseStream(updates(), finalizer=AgentResponse.from_updates)
