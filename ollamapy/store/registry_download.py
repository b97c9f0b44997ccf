"""Fetching one blob's bytes: its parts in parallel ranged requests, resumed where they stopped.

A `Transfer` runs in threads of its own and fills a `PartialBlob`; the pull that wanted it only
watches `completed`. Pulls of the same blob running at once share one transfer (Ollama's
blobDownloadManager): each joins it with its cancel event, and once every pull that joined
has cancelled (its client went away) or left, the transfer stops between two chunks, keeping
its partial files for the next pull. The transfer watches those events itself: a pull's
iterator suspended in a worker thread need not run again for its download to stop.

Each part asks for `Range: bytes=<offset+completed>-<end>` and writes what arrives at its
offset, never more than the part's size whatever the registry sends. A `206` must say it
starts where we asked (`Content-Range`) and that the blob has the size the manifest declared.
A `200` to a ranged request means the registry ignores ranges: the parts are dropped and the
blob is fetched again in one piece from byte 0. A dropped connection, a short body, a stalled
read or a 5xx is retried a few times from where the part got to; anything else fails the
transfer (and its sibling parts stop).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable

import httpx

from ollamapy.store.atomic import no_space_is_an_error
from ollamapy.store.registry import RegistryError
from ollamapy.store.registry_http import Session
from ollamapy.store.registry_partial import Part, PartialBlob

log = logging.getLogger(__name__)

RETRIES = 3  # per part, after the first attempt
BACKOFF_S = 0.5  # doubled after each failed attempt
RECORD_EVERY = 1 << 20  # bytes between two rewrites of a part's Completed count
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")

_active: dict[str, Transfer] = {}
_active_guard = threading.Lock()


class _RangesIgnored(Exception):
    """The registry answered a ranged request with the whole blob."""


class _Retryable(Exception):
    """A failure that a new request may get past (a short body, a 5xx)."""


def shared_transfer(digest: str, start: Callable[[], Transfer],
                    cancel: threading.Event) -> Transfer | None:
    """The running transfer of `digest`, or a new one from `start`, joined by a pull with its
    cancel event; None if that is set while waiting for a transfer that is winding down."""
    while not cancel.is_set():
        with _active_guard:
            transfer = _active.get(digest)
            new = transfer is None
            if transfer is None:
                transfer = _active[digest] = start()
            joined = new or not transfer.abandoned()
            if joined:
                transfer.pulls.append(cancel)  # for a new one, before its threads can look
        if new:
            # started outside the lock: a thread's start waits for the thread, which may first
            # run the garbage collector, which may finalize an abandoned pull's iterator
            transfer.start()
        if joined:
            return transfer
        # abandoned by its pulls and still stopping: its threads may still write, so a new
        # transfer of the same files waits until they are gone
        transfer.done.wait(0.1)
    return None


class Transfer:
    def __init__(self, session: Session, url: str, blob: PartialBlob) -> None:
        self.session = session  # owned: closed when the transfer ends
        self.url = url
        self.blob = blob
        self.parts: list[Part] = []
        self.pulls: list[threading.Event] = []  # the cancel events of the pulls joined
        self.done = threading.Event()
        self.error: BaseException | None = None

    @property
    def completed(self) -> int:
        return sum(p.completed for p in self.parts)

    def start(self) -> None:
        threading.Thread(target=self._run, name=f"pull {self.blob.digest[7:19]}",
                         daemon=True).start()

    def abandoned(self) -> bool:
        """Every pull that joined has cancelled or left: time to stop."""
        return all(cancel.is_set() for cancel in list(self.pulls))

    def leave(self, cancel: threading.Event) -> None:
        # no lock: this runs in the finally of a pull's iterator, which the garbage collector
        # may run in any thread at any time (list.remove is atomic under the GIL)
        with contextlib.suppress(ValueError):
            self.pulls.remove(cancel)

    def _run(self) -> None:
        try:
            # a full disk is not retried (Ollama #911): the parts keep what they have, and
            # the next pull, once there is room, resumes from there
            with no_space_is_an_error(f"downloading blob {self.blob.digest}"):
                self._download()
        except BaseException as e:  # handed to the pulls watching; this thread just ends
            self.error = e
        finally:
            self.session.close()
            with _active_guard:
                if _active.get(self.blob.digest) is self:
                    del _active[self.blob.digest]
                self.done.set()

    def _download(self) -> None:
        with self.blob.lock:
            if self.blob.final.exists():
                return  # another pull finished it meanwhile
            self.parts = self.blob.prepare()
        if not all(p.done for p in self.parts):
            log.info("downloading %s in %d part(s)", self.blob.digest[7:19], len(self.parts))
        try:
            self._fetch(self.parts, ranged=True)
        except _RangesIgnored:
            log.info("%s: the registry ignores Range; fetching it whole", self.blob.digest[7:19])
            with self.blob.lock:
                self.parts = self.blob.start_over([Part(0, 0, self.blob.size)])
            self._fetch(self.parts, ranged=False)

    def _fetch(self, parts: list[Part], *, ranged: bool) -> None:
        """Fetch every unfinished part at once; the first error stops the others."""
        errors: list[BaseException] = []
        sibling_failed = threading.Event()

        def stopped() -> bool:
            return sibling_failed.is_set() or self.abandoned()

        def run(part: Part) -> None:
            try:
                self._fetch_part(part, ranged, stopped)
            except BaseException as e:
                errors.append(e)
                sibling_failed.set()

        threads = [threading.Thread(target=run, args=(p,), daemon=True)
                   for p in parts if not p.done]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise next((e for e in errors if isinstance(e, _RangesIgnored)), errors[0])
        if self.abandoned():
            raise RegistryError("pull canceled", status=499)

    def _fetch_part(self, part: Part, ranged: bool, stopped: Callable[[], bool]) -> None:
        for attempt in range(RETRIES + 1):
            try:
                self._request_part(part, ranged, stopped)
                return
            except (httpx.TransportError, _Retryable) as e:
                if stopped():
                    return
                if attempt == RETRIES:
                    raise RegistryError(f"max retries exceeded: {e or type(e).__name__}"
                                        ) from None
                log.info("%s part %d attempt %d failed: %s; retrying", self.blob.digest[7:19],
                         part.n, attempt, e or type(e).__name__)
                _sleep(BACKOFF_S * 2**attempt, stopped)

    def _request_part(self, part: Part, ranged: bool, stopped: Callable[[], bool]) -> None:
        start, end = part.offset + part.completed, part.offset + part.size  # [start, end)
        headers = {"Range": f"bytes={start}-{end - 1}"} if ranged else {}
        try:
            with self.session.open("GET", self.url, headers=headers) as response:
                self._check_answer(response, start, ranged)
                fd = os.open(self.blob.data, os.O_WRONLY)
                try:
                    self._write(response, part, fd, stopped)
                finally:
                    os.close(fd)
                    self.blob.record(part)
        except RegistryError as e:
            if e.http_status is not None and e.http_status >= 500:
                raise _Retryable(str(e)) from None
            raise
        if not part.done and not stopped():
            raise _Retryable(f"the registry sent {part.completed} of {part.size} bytes of "
                             f"part {part.n}")

    def _check_answer(self, response: httpx.Response, start: int, ranged: bool) -> None:
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise RegistryError(f"registry sent blob {self.blob.digest} encoded as {encoding}")
        if response.status_code == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", "").strip())
            if match is None or int(match.group(1)) != start:
                raise RegistryError(f"registry answered a range of blob {self.blob.digest} "
                                    "with other bytes than asked for")
            if match.group(3) != "*" and int(match.group(3)) != self.blob.size:
                raise RegistryError(f"blob {self.blob.digest} has {match.group(3)} bytes but "
                                    f"the manifest declares {self.blob.size}")
        elif response.status_code == 200:
            if ranged and start > 0:
                raise _RangesIgnored
        else:
            raise RegistryError(f"unexpected status {response.status_code} for blob "
                                f"{self.blob.digest}")

    def _write(self, response: httpx.Response, part: Part, fd: int,
               stopped: Callable[[], bool]) -> None:
        recorded = part.completed
        for chunk in response.iter_raw():
            if stopped():
                return
            view = memoryview(chunk)[: part.size - part.completed]  # never past the part
            while view:
                written = os.pwrite(fd, view, part.offset + part.completed)
                part.completed += written
                view = view[written:]
            if part.completed - recorded >= RECORD_EVERY:
                self.blob.record(part)
                recorded = part.completed
            if part.done:
                return  # whatever else the registry would send is not read


def _sleep(seconds: float, stopped: Callable[[], bool]) -> None:
    deadline = time.monotonic() + seconds
    while not stopped() and time.monotonic() < deadline:
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
