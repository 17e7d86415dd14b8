"""What one DICOMweb server may cost mammoseg: time per request, bytes per answer, instances per search.

Why: a server is not trusted to end its answers. requests' `timeout` is an idle timeout (it
restarts with every byte), so a server that sends one byte every few seconds holds a request
forever; and requests, like dicomweb-client, reads a whole answer into memory. Here:

- **Deadline.** Each attempt of a request must bring its whole answer, headers and body, within
  `Limits.deadline` seconds. A timer (`Watch`) shuts the attempt's socket down when the time is
  up, which wakes a read blocked on a trickling server; the request then fails with
  `DeadlineExceeded` and is not retried (a server that trickles once trickles again). Waits
  between retries do not count; each is at most `MAX_WAIT_S`, Retry-After included.
- **Size.** An answer read into memory (QIDO pages, metadata, STOW replies) is at most
  `Limits.max_answer_bytes`; an instance (WADO-RS) streams to its file in the cache and is at
  most `Limits.max_instance_bytes`. Reading stops at the cap (`AnswerTooLarge`).
- **Results.** A search stops with an error past `Limits.max_instances` results (the client).

`iter_answer` reads a body in chunks under both rules. The HTTP adapter that applies them to
every request is in `mammoseg.dicomweb.session`.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mammoseg.dicomweb.source import DEFAULT_MAX_INSTANCES

MIB = 2**20
#: Seconds one attempt of a request may take to bring its whole answer, unless --timeout says otherwise.
DEFAULT_DEADLINE_S = 600.0
#: An instance streamed to disk: the largest image the reader takes (60 Mpx x 2 bytes = 120 MB) with headroom.
MAX_INSTANCE_BYTES = 256 * MIB
#: An answer held in memory: a QIDO page of 1000 results or a SEG's metadata is a few MB at most.
MAX_ANSWER_BYTES = 32 * MIB
#: The longest wait between two attempts of a request, a server's Retry-After included.
MAX_WAIT_S = 30.0
CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class Limits:
    """The bounds every request to one server keeps (module docstring)."""

    deadline: float = DEFAULT_DEADLINE_S
    max_instances: int = DEFAULT_MAX_INSTANCES
    max_instance_bytes: int = MAX_INSTANCE_BYTES
    max_answer_bytes: int = MAX_ANSWER_BYTES

    def __post_init__(self) -> None:
        for name in ("deadline", "max_instances", "max_instance_bytes", "max_answer_bytes"):
            if not getattr(self, name) > 0:
                raise ValueError(f"DICOMweb limit {name} must be positive, got {getattr(self, name)}")


class DeadlineExceeded(Exception):
    """The whole answer did not arrive within the deadline: the server stalls or sends too slowly.

    Not an OSError (as requests' own errors are), so that urllib3 does not retry it."""


class AnswerTooLarge(Exception):
    """An answer larger than its cap; reading stopped there."""


class Watch:
    """The deadline of one request: each attempt must bring its whole answer within `seconds`.

    `attempt(connection)` starts an attempt's clock; when it runs out, the attempt's socket is
    shut down (a blocked read returns at once) and `expired` is set, so the next attempt is
    refused. `pause()` between attempts and `finish()` after the answer stop the clock.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._generation = 0
        self._connection: Any = None
        self._sock: Any = None

    def message(self) -> str:
        return (f"no complete answer within {self.seconds:g} s (the deadline per request, --timeout); "
                "the server stalls or sends too slowly")

    def attempt(self, connection: Any) -> None:
        """An attempt on `connection` starts (or goes on, if its clock already runs for that connection)."""
        with self._lock:
            if self.expired:
                raise DeadlineExceeded(self.message())
            if self._timer is not None and self._connection is connection:
                return
            self._stop()
            self._connection, self._sock = connection, None
            self._timer = threading.Timer(self.seconds, self._expire, args=(self._generation,))
            self._timer.daemon = True
            self._timer.start()

    def reading(self, sock: Any) -> None:
        """The socket the answer is read from (kept: http.client may drop the connection's own reference)."""
        self._sock = sock

    def pause(self) -> None:
        """Between attempts: the wait before a retry does not count."""
        with self._lock:
            self._stop()

    finish = pause

    def _stop(self) -> None:
        self._generation += 1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self, generation: int) -> None:
        with self._lock:
            if generation != self._generation:
                return  # the attempt ended (or a new one began) meanwhile
            self.expired = True
            self._timer = None
            sock = self._sock if self._sock is not None else getattr(self._connection, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def iter_answer(response: Any, max_bytes: int) -> Iterator[bytes]:
    """The body of a streamed `response` in chunks: within its request's deadline, at most `max_bytes`.

    The watch that `mammoseg.dicomweb.session` attached to the response ends when the generator
    does (read to the end, failed, or closed early).
    """
    watch: Watch | None = getattr(response, "mammoseg_watch", None)
    total = 0
    try:
        for chunk in response.iter_content(CHUNK_BYTES):
            if watch is not None and watch.expired:
                raise DeadlineExceeded(watch.message())
            total += len(chunk)
            if total > max_bytes:
                raise AnswerTooLarge(f"the answer is larger than {max_bytes / MIB:g} MiB, the cap; reading stopped "
                                     "there")
            yield chunk
        if watch is not None and watch.expired:  # a body without a length ends quietly when its socket is shut
            raise DeadlineExceeded(watch.message())
    except (DeadlineExceeded, AnswerTooLarge):
        raise
    except Exception as exc:
        if watch is not None and watch.expired:
            raise DeadlineExceeded(watch.message()) from exc
        raise
    finally:
        if watch is not None:
            watch.finish()


def end_answer(response: Any) -> None:
    """Stop a streamed answer: its deadline clock, and the connection (the rest of the body is not read)."""
    watch: Watch | None = getattr(response, "mammoseg_watch", None)
    if watch is not None:
        watch.finish()
    response.close()
