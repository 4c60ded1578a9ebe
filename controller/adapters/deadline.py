"""One time budget per delivery, shared by every call the delivery makes.

Cloud Functions stops a delivery at its timeout (60 s by default) and answers 504, wherever the
work was. So each delivery gets one :class:`Deadline` (``ROLLBACK_DELIVERY_DEADLINE``, 50 s by
default, below the function's ``--timeout``): the Cloud Run reads, the Monitoring queries, the write
and the operation wait all take their timeouts from what remains, and the delivery acts,
acknowledges or raises before the platform kills it.

The deadline of the running delivery is held in a context variable (:func:`scope` /
:func:`current`), so the adapters find it without every interface in between carrying it; outside
a delivery :func:`current` is an unbounded deadline. Time is injected (``clock``) for tests.
"""

from __future__ import annotations

import contextvars
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from controller.core.errors import TemporaryError

__all__ = ["Deadline", "DeadlineReached", "current", "scope"]

MonotonicClock = Callable[[], float]


class DeadlineReached(TemporaryError):
    """The delivery's time budget ran out before a call could start (Pub/Sub redelivers)."""


class Deadline:
    """An absolute point on a monotonic clock, ``seconds`` after creation (``math.inf`` = none)."""

    def __init__(self, seconds: float, *, clock: MonotonicClock = time.monotonic) -> None:
        if not seconds > 0:
            raise ValueError(f"a deadline must be positive, got {seconds}")
        self.seconds = seconds
        self._clock = clock
        self._end = clock() + seconds

    def remaining(self) -> float:
        """Seconds left (never negative)."""
        return max(0.0, self._end - self._clock())

    def remaining_for_waiting(self) -> float:
        """What an open-ended wait (the operation) may use: the rest minus a reserve for reporting.

        The reserve (10 %, at most 5 s) leaves time to post to Slack and log after the wait.
        """
        return max(0.0, self.remaining() - min(5.0, self.seconds * 0.1))

    def expired(self) -> bool:
        return self.remaining() <= 0.0

    def timeout(self, cap: float, what: str, *, floor: float = 0.05) -> float:
        """The timeout for one call: ``cap``, or less if less remains; raise if nothing useful remains."""
        left = self.remaining()
        if left < floor:
            raise DeadlineReached(f"delivery deadline of {self.seconds:g}s reached before {what}")
        return min(cap, left)


_UNBOUNDED = Deadline(math.inf)
_current: contextvars.ContextVar[Deadline] = contextvars.ContextVar("delivery_deadline", default=_UNBOUNDED)


def current() -> Deadline:
    """The running delivery's deadline (unbounded outside :func:`scope`)."""
    return _current.get()


@contextmanager
def scope(deadline: Deadline) -> Iterator[Deadline]:
    """Make ``deadline`` the current one for the calls made inside the ``with`` block."""
    token = _current.set(deadline)
    try:
        yield deadline
    finally:
        _current.reset(token)
