"""Encode concurrent requests together, with a bounded queue.

While one batch is being encoded, newly arrived jobs wait in the queue; the next batch
takes everything queued, up to ``max_batch_inputs`` inputs and ``max_batch_tokens``
tokens. There is no timer: an idle server starts encoding a lone request at once, so
batching costs no latency at low load. When the queue already holds
``max_queue_inputs`` inputs, ``submit`` refuses at once with ``QueueFull`` (the caller
answers 429 with ``Retry-After``) rather than letting the queue grow without end.

A large batch is encoded in a worker thread, so that the event loop keeps serving HTTP
meanwhile (on the other core). A small one (``max_inline_size`` or less) is encoded on
the event loop itself: for a few short texts, handing the batch to a thread and back,
and the two threads taking turns at the GIL, cost more CPU than the encoding (measured
in docs/performance.md); the loop is blocked only for the fraction of a millisecond the
batch takes.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, Protocol, TypeVar

Job = TypeVar("Job")
Result = TypeVar("Result")


class QueueFull(Exception):
    """The queue is at its bound; try again after ``retry_after`` seconds."""

    def __init__(self, queued_inputs: int, retry_after: int) -> None:
        super().__init__(f"{queued_inputs} inputs are already waiting")
        self.queued_inputs = queued_inputs
        self.retry_after = retry_after


class BatcherStopped(Exception):
    """The server is shutting down and takes no more work."""


class QueueObserver(Protocol):
    def queue_changed(self, delta: int) -> None: ...


class _Pending(Generic[Job, Result]):
    __slots__ = ("future", "inputs", "job", "tokens")  # one per request: kept small and quick to build

    def __init__(self, job: Job, inputs: int, tokens: int, future: asyncio.Future[Result]) -> None:
        self.job = job
        self.inputs = inputs
        self.tokens = tokens
        self.future = future


class Batcher(Generic[Job, Result]):
    """One worker per process takes queued jobs in batches and runs ``process`` on them in a thread.

    ``process`` gets the jobs of one batch and returns, for each in order, its result or
    the exception to raise for it alone. ``process_inline``, if given, does the same for
    the batches whose jobs' ``tokens`` add up to ``max_inline_size`` or less, on the
    event loop's thread.
    """

    def __init__(
        self,
        process: Callable[[Sequence[Job]], Sequence[Result | BaseException]],
        *,
        max_batch_inputs: int,
        max_batch_tokens: int,
        max_queue_inputs: int,
        process_inline: Callable[[Sequence[Job]], Sequence[Result | BaseException]] | None = None,
        max_inline_size: int = 0,
        observer: QueueObserver | None = None,
    ) -> None:
        self._process = process
        self._process_inline = process_inline
        self.max_batch_inputs = max_batch_inputs
        self.max_batch_tokens = max_batch_tokens
        self.max_queue_inputs = max_queue_inputs
        self.max_inline_size = max_inline_size
        self._observer = observer
        self._queue: deque[_Pending[Job, Result]] = deque()
        self._queued_inputs = 0
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._stopped = False
        self._inputs_per_second = 0.0  # smoothed throughput, for Retry-After

    @property
    def queued_inputs(self) -> int:
        return self._queued_inputs

    async def submit(self, job: Job, *, inputs: int, tokens: int) -> Result:
        """Queue a job and wait for its result; raise ``QueueFull`` at once if the queue is full."""
        if self._stopped:
            raise BatcherStopped("the server is shutting down")
        if self._queued_inputs and self._queued_inputs + inputs > self.max_queue_inputs:
            raise QueueFull(self._queued_inputs, self._retry_after())
        self._ensure_worker()
        assert self._wakeup is not None
        pending: _Pending[Job, Result] = _Pending(job, inputs, tokens, asyncio.get_running_loop().create_future())
        self._queue.append(pending)
        self._change_queued(inputs)
        if not self._wakeup.is_set():
            self._wakeup.set()
        return await pending.future

    async def stop(self) -> None:
        """Refuse new work, fail what still waits, and let the batch being encoded finish."""
        self._stopped = True
        while self._queue:
            pending = self._queue.popleft()
            self._change_queued(-pending.inputs)
            if not pending.future.done():
                pending.future.set_exception(BatcherStopped("the server is shutting down"))
        if self._worker is not None:
            assert self._wakeup is not None
            self._wakeup.set()
            await self._worker
            self._worker = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _ensure_worker(self) -> None:
        if self._worker is None:
            self._wakeup = asyncio.Event()
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="embedding-batcher")

    async def _run(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            while self._queue:
                batch = self._take_batch()
                if not batch:
                    continue
                started = time.perf_counter()
                jobs = [pending.job for pending in batch]
                inline = self._process_inline
                on_loop = inline is not None and sum(pending.tokens for pending in batch) <= self.max_inline_size
                try:
                    if inline is not None and on_loop:
                        results: Sequence[Result | BaseException] = inline(jobs)
                    else:
                        if self._executor is None:
                            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoder")
                        results = await loop.run_in_executor(self._executor, self._process, jobs)
                except Exception as exc:  # a bug in the batch function fails its batch, not the worker
                    results = [exc] * len(batch)
                self._record_throughput(sum(p.inputs for p in batch), time.perf_counter() - started)
                for pending, result in zip(batch, results, strict=True):
                    if pending.future.done():  # the caller went away
                        continue
                    if isinstance(result, BaseException):
                        pending.future.set_exception(result)
                    else:
                        pending.future.set_result(result)
                if on_loop:  # let the answered requests go out and new ones come in before the next batch
                    await asyncio.sleep(0)
            if self._stopped:
                return
            self._wakeup.clear()

    def _take_batch(self) -> list[_Pending[Job, Result]]:
        """Everything queued, oldest first, up to the batch limits (always at least one job)."""
        batch: list[_Pending[Job, Result]] = []
        inputs = tokens = taken = 0
        queue = self._queue
        while queue:
            pending = queue[0]
            if batch and (
                inputs + pending.inputs > self.max_batch_inputs or tokens + pending.tokens > self.max_batch_tokens
            ):
                break
            queue.popleft()
            taken += pending.inputs
            if pending.future.done():  # cancelled while waiting: nothing to encode
                continue
            batch.append(pending)
            inputs += pending.inputs
            tokens += pending.tokens
        self._change_queued(-taken)
        return batch

    def _change_queued(self, delta: int) -> None:
        self._queued_inputs += delta
        if self._observer is not None:
            self._observer.queue_changed(delta)

    def _record_throughput(self, inputs: int, seconds: float) -> None:
        rate = inputs / max(seconds, 1e-6)
        self._inputs_per_second = rate if not self._inputs_per_second else 0.8 * self._inputs_per_second + 0.2 * rate

    def _retry_after(self) -> int:
        """Seconds until the current queue should have drained, at least 1."""
        if self._inputs_per_second <= 0:
            return 1
        return max(1, min(60, math.ceil(self._queued_inputs / self._inputs_per_second)))
