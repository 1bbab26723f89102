"""A run stops when its client goes away (a closed connection: a stopped stream, a closed tab, a client timeout).

While the model writes, the run is cancelled at once: nothing it had is lost, and no more tokens are spent. While the
sandbox runs a call, the call finishes (cancelling it would kill the conversation's interpreter, and the state in
it), its result is kept, and the run ends there: no model call follows, and the response kept for it says
`cancelled`. `StopsAfterCalls`, a function middleware of the agent, ends the function loop with Agent Framework's
`MiddlewareTermination`. So the work a client has the server do is bounded by the connections it holds open, and a
user who presses stop keeps a conversation that holds what ran.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import TypeVar

from agent_framework import FunctionMiddleware, MiddlewareTermination
from starlette.types import Message, Receive, Send

T = TypeVar("T")


class Stop:
    """One request's run, and whether its client left. `run` is the way in."""

    def __init__(self) -> None:
        self.requested = False
        self.cut_short = False  # the run ended after a call for it: its response holds no answer of the model's
        self._calls = 0  # calls the sandbox is running for this run
        self._answered = False  # the response was sent whole
        self._task: asyncio.Future | None = None

    @contextlib.contextmanager
    def running_call(self) -> Iterator[None]:
        """While the sandbox runs a call of this run: a client that leaves meanwhile does not cancel it."""
        self._calls += 1
        try:
            yield
        finally:
            self._calls -= 1

    async def run(self, serve: Callable[[Send], Awaitable[T]], receive: Receive, send: Send) -> T | None:
        """`serve(send)` in a task of its own, stopped as above if the client leaves before its response is whole;
        None if it was cancelled so. (After the response, what `serve` still does, such as keeping it, goes on:
        uvicorn reports a whole response to `receive` as a disconnect.)"""

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body"):
                self._answered = True
            await send(message)

        token = STOP.set(self)
        try:
            task = self._task = asyncio.ensure_future(serve(sending))  # the task's context holds STOP
        finally:
            STOP.reset(token)
        watch = asyncio.ensure_future(disconnected(receive))
        watch.add_done_callback(self._left)
        try:
            await asyncio.wait({task})
        finally:
            watch.cancel()
            if not task.done():  # this request itself was cancelled (the server stops)
                task.cancel()
        if task.cancelled() and self.requested:
            return None
        return task.result()

    def _left(self, watch: asyncio.Future) -> None:
        if watch.cancelled() or watch.exception() is not None or self._answered:
            return
        self.requested = True
        if not self._calls and self._task is not None and not self._task.done():
            self._task.cancel()


STOP: ContextVar[Stop | None] = ContextVar("lci_stop", default=None)


def cut_short() -> bool:
    """Whether the run of the request in hand was ended early because its client left (see `StopsAfterCalls`)."""
    stop = STOP.get()
    return stop is not None and stop.cut_short


class StopsAfterCalls(FunctionMiddleware):
    """Counts the calls in flight for the run's `Stop`; after one, if the client left meanwhile, ends the run with
    the call's result kept."""

    async def process(self, context, call_next) -> None:
        stop = STOP.get()
        if stop is None:
            return await call_next()
        with stop.running_call():
            await call_next()
        if stop.requested:
            stop.cut_short = True
            raise MiddlewareTermination("the client went away", result=context.result)


async def disconnected(receive: Receive) -> None:
    """Returns when an ASGI request's client has gone (its body already read)."""
    while (await receive())["type"] != "http.disconnect":
        pass
