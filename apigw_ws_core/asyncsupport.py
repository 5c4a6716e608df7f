"""``async def`` handlers and hooks in a synchronous pipeline.

The pipeline (:meth:`WebSocketApp.handle <apigw_ws_core.app.WebSocketApp.handle>`) is
synchronous: storage backends, Django's ORM and the rate limiters block. A handler, a hook
or a permission check may still be ``async def``; :func:`resolve` turns what it returned
into its value:

* **served by ASGI** (:mod:`apigw_ws_core.asgi`): the pipeline runs in a worker thread, off
  the event loop, and the coroutine runs *on the server's event loop* (so it can share the
  loop's clients, e.g. an async HTTP or database pool), while the worker thread waits;
* **anywhere else** (WSGI, Django, Flask, Lambda, a shell): the coroutine runs to
  completion on an event loop kept per thread (created on first use), so async clients
  created by one call can be reused by the next call on the same thread. If the calling
  thread is itself running an event loop, the coroutine runs on a helper thread instead of
  blocking that loop's thread into a deadlock.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar, copy_context
from typing import Any, TypeVar

__all__ = ["resolve", "run_off_loop"]

T = TypeVar("T")

#: The event loop of the ASGI server that is running the current request, if any.
_SERVER_LOOP: ContextVar[asyncio.AbstractEventLoop | None] = ContextVar(
    "apigw_ws_server_loop", default=None
)

_local = threading.local()


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


def _thread_runner() -> asyncio.Runner:
    runner: asyncio.Runner | None = getattr(_local, "runner", None)
    if runner is None:
        runner = _local.runner = asyncio.Runner()
    return runner


def _in_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def run_awaitable(awaitable: Awaitable[T]) -> T:
    """Run ``awaitable`` to completion from synchronous code (see the module docstring)."""
    coro: Coroutine[Any, Any, T] = _await(awaitable)
    loop = _SERVER_LOOP.get()
    if loop is not None and loop.is_running() and not _in_running_loop():
        return asyncio.run_coroutine_threadsafe(coro, loop).result()
    if not _in_running_loop():
        # the caller's context variables, not the ones the runner captured on first use
        return _thread_runner().run(coro, context=copy_context())
    # This thread runs an event loop that is waiting for us: run on a helper thread.
    with ThreadPoolExecutor(1, thread_name_prefix="apigw-ws-async") as helper:
        return helper.submit(copy_context().run, asyncio.run, coro).result()


def resolve(value: Any) -> Any:
    """``value`` itself, or, when it is awaitable (an ``async def`` handler's result), what
    it resolves to."""
    if inspect.isawaitable(value):
        return run_awaitable(value)
    return value


async def run_off_loop(func: Callable[..., T], *args: Any) -> T:
    """Run the synchronous ``func(*args)`` in a worker thread, with the caller's context
    variables, so that ``async def`` handlers it meets run back on this event loop."""
    loop = asyncio.get_running_loop()
    context = copy_context()
    context.run(_SERVER_LOOP.set, loop)
    return await loop.run_in_executor(None, context.run, func, *args)
