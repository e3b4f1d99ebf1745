"""One asyncio event loop per process, in a daemon thread, for the gateway and relays.

Why: every gateway channel and every node relay is an aiohttp site; serving them all from
one loop costs one thread in total (``http.server`` cost one per connection, and one per
kept-alive relay connection), while the synchronous parts (the upstream call through the
openai SDK, accounting, the trajectory write) run in one shared, bounded thread pool. The
rest of ratchet is synchronous: it calls in with :func:`run`.

``RATCHET_GATEWAY_THREADS`` (default 1024) bounds the calls in flight to upstream models at
once, in the pool and on the loop (`upstream_slot`); more wait in order, none is refused.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["offload", "run", "upstream_slot"]

T = TypeVar("T")

_lock = threading.Lock()
_state: tuple[int, asyncio.AbstractEventLoop, ThreadPoolExecutor, asyncio.Semaphore] | None = None


def _started() -> tuple[asyncio.AbstractEventLoop, ThreadPoolExecutor]:
    """The process's loop and pool, started on first use (and again in a forked child,
    where the parent's loop thread does not exist)."""
    global _state
    with _lock:
        if _state is None or _state[0] != os.getpid():
            loop = asyncio.new_event_loop()
            bound = int(os.environ.get("RATCHET_GATEWAY_THREADS", "1024"))
            pool = ThreadPoolExecutor(bound, thread_name_prefix="gateway-call")
            threading.Thread(target=loop.run_forever, name="gateway-loop", daemon=True).start()
            _state = (os.getpid(), loop, pool, asyncio.Semaphore(bound))
        return _state[1], _state[2]


def run(coroutine: Coroutine[Any, Any, T], timeout: float | None = 60.0) -> T:
    """Run `coroutine` on the process's loop and wait for its result (from any other thread)."""
    loop, _ = _started()
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout)


async def offload(function: Callable[..., T], *args: Any) -> T:
    """`function(*args)` in the shared pool, awaited: blocking work off the loop."""
    _, pool = _started()
    return await asyncio.get_running_loop().run_in_executor(pool, function, *args)


def upstream_slot() -> asyncio.Semaphore:
    """The loop's bound on upstream calls awaited at once (``async with upstream_slot():``)."""
    _started()
    assert _state is not None
    return _state[3]

