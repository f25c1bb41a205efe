"""Probe runs that need no thread of their own: served from memory, or not at all.

Every probe runs on a probe thread so that a probe stuck in a system call
(a hung NFS mount, a server that never answers) costs its own rule and no
other (``engine/probepool.py``). That hand-off costs two thread wake-ups per
run: at 1,000 rules every 5 s, 1,200 context switches a second and about
1.5 % of a core, a third of the daemon's CPU, where most runs only read
what one shared read of the cycle already holds (``SharedRead``, the
process table).

So the runner first tries a probe that declares itself ``inline`` on its own
thread, *inside* ``only()``: there every shared layer hands out what it
holds and, where it would have to read (a stale value, a read in flight, a
fact not yet known), raises ``WouldBlock`` instead of reading. The runner
then sends the same run to a probe thread as before. A probe is ``inline``
only when every read it makes goes through such a layer, or cannot block at
all (``/proc/meminfo``, ``getloadavg``); a probe with a read of its own
(a ping, a pipeline, a directory listing) is not.

``WouldBlock`` is a ``BaseException``: a probe's ``except Exception``, which
turns a failed read into a ``ProbeError``, must not catch it.

The opposite case lives here too: a verify's re-probe right after an action
must see what the action changed, not a shared value read before it (a
``statvfs`` from before ``files.clean``, a ping from before a restart). Inside
``fresh()`` the shared layers read again whatever they hold; ``fresh_call``
carries that onto the probe thread the re-probe runs on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TypeVar

T = TypeVar("T")

INLINE_ATTRIBUTE = "inline"
"""A probe's flag (class or instance attribute): its ``measure`` reads only through layers that call ``check``."""


class WouldBlock(BaseException):
    """Raised inside ``only()`` where a read would be needed; the run goes to a probe thread instead."""


class _State(threading.local):
    active = False
    fresh = False


_STATE = _State()
"""Per thread, whether the thread is inside ``only()`` or ``fresh()``: the one piece of module state, a thread's
own flags."""


@contextmanager
def _flag(name: str) -> Iterator[None]:
    setattr(_STATE, name, True)
    try:
        yield
    finally:
        setattr(_STATE, name, False)


def only() -> AbstractContextManager[None]:
    """Run the block with reads refused (``check`` raises); not re-entrant, and never nested by the runner."""
    return _flag("active")


def active() -> bool:
    return _STATE.active


def fresh() -> AbstractContextManager[None]:
    """Run the block with every shared value read again (``wants_fresh``)."""
    return _flag("fresh")


def fresh_call(fn: Callable[[], T]) -> T:
    """``fn()`` inside ``fresh()``: what a verify hands to a probe thread."""
    with fresh():
        return fn()


def wants_fresh() -> bool:
    return _STATE.fresh


def check(what: str) -> None:
    """Where a layer is about to read (or wait for a read): refuse inside ``only()``."""
    if _STATE.active:
        raise WouldBlock(what)
