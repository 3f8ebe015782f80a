"""A pool of worker processes that applies one function to a list of items, each within a deadline.

Why not `concurrent.futures.ProcessPoolExecutor`: it cannot stop a task that is stuck (a future
cannot be cancelled once running), and one crashed worker breaks the whole executor. Here each
worker is a `multiprocessing.Process` with its own pipe and at most one item in flight, so the
parent knows which item a worker holds and since when:

- an item that outlives `item_timeout_s` has its worker killed (SIGKILL) and replaced, and gets
  the `failed` value;
- a worker that dies mid-item (a crash, `os._exit`, the OOM killer) fails that item only;
- a worker is retired after `max_items_per_worker` items (memory held by caches in the worker is
  returned) and replaced on demand;
- when the batch outlives `batch_timeout_s`, the items not yet done get the `failed` value.

Each worker calls the function in its main thread, so functions that time themselves out with
`signal.alarm` (which only works in a main thread) do so. Results come back in input order and do
not depend on the number of workers, except for items that fail on a deadline. Workers start from
a fork server (`multiprocessing`'s "forkserver" start method): a clean single-threaded process,
safe beside the threads of JAX in the parent, with the modules in `preload` imported once.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from collections import deque
from multiprocessing.connection import wait
from typing import Any, Callable, Sequence

log = logging.getLogger(__name__)

_JOIN_S = 1.0  # how long a retired worker may take to exit before it is killed


def _worker_main(fn: Callable[[Any], Any], conn) -> None:
    """Worker loop: receive an item, send back fn(item); None ends the loop."""
    # Ctrl-C reaches the whole process group: the parent decides what happens to the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            item = conn.recv()
        except (EOFError, OSError):  # the parent went away
            return
        if item is None:
            return
        try:
            result = (True, fn(item))
        except Exception as e:  # an item that raises fails alone; the worker goes on
            result = (False, f"{type(e).__name__}: {e}"[:500])
        conn.send(result)


class _Worker:
    """One worker process, its end of the pipe, and the item it holds."""

    def __init__(self, ctx, fn):
        self.conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=_worker_main, args=(fn, child), daemon=True)
        self.process.start()
        child.close()
        self.done = 0  # items finished
        self.index: int | None = None  # the item in flight
        self.started = 0.0

    def kill(self) -> None:
        """Stop the process now (a stuck item never returns to the interpreter to see a signal)."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join(_JOIN_S)
        self.conn.close()

    def retire(self) -> None:
        """Ask the process to exit; kill it if it does not within _JOIN_S."""
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(_JOIN_S)
        self.kill()


class DeadlinePool:
    """`map(items)` = [fn(item) for item in items] in worker processes, with deadlines.

    fn: a module-level function (pickled by name into the workers). workers: processes.
    item_timeout_s: wall time one item may take in its worker. max_items_per_worker: items before a
    worker is replaced. failed: the result of an item that times out, crashes its worker or raises.
    preload: modules the fork server imports once, so a new worker starts without importing them.
    Use as a context manager or call `close()`; a pool is safe to share between threads.
    """

    def __init__(self, fn: Callable[[Any], Any], *, workers: int = 2, item_timeout_s: float = 5.0,
                 max_items_per_worker: int = 1000, failed: Any = None, preload: Sequence[str] = ()):
        if workers < 1 or item_timeout_s <= 0 or max_items_per_worker < 1:
            raise ValueError(f"DeadlinePool: workers={workers}, item_timeout_s={item_timeout_s}, "
                             f"max_items_per_worker={max_items_per_worker}: each must be positive")
        self.fn, self.workers, self.failed = fn, int(workers), failed
        self.item_timeout_s, self.max_items_per_worker = float(item_timeout_s), int(max_items_per_worker)
        self._ctx = mp.get_context("forkserver")
        if preload:
            self._ctx.set_forkserver_preload(list(preload))
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self.stats = {"items": 0, "timeouts": 0, "crashes": 0, "errors": 0, "batch_timeouts": 0,
                      "workers_started": 0}

    # ------------------------------------------------------------------ workers

    def _start(self) -> _Worker:
        self.stats["workers_started"] += 1
        return _Worker(self._ctx, self.fn)

    def _replace(self, worker: _Worker, *, kill: bool) -> None:
        worker.kill() if kill else worker.retire()

    def close(self) -> None:
        """Retire every idle worker (a pool closed mid-map is not supported)."""
        with self._lock:
            if os.getpid() != self._pid:  # a forked copy does not own these processes
                self._idle = []
                return
            for w in self._idle:
                w.retire()
            self._idle = []

    def __enter__(self) -> "DeadlinePool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ mapping

    def map(self, items: Sequence[Any], *, batch_timeout_s: float | None = None) -> list:
        """[fn(item) for item in items], in input order; a failed item gives `self.failed`.

        batch_timeout_s: wall time for the whole list (None: no limit beyond the per-item one).
        """
        with self._lock:
            if os.getpid() != self._pid:  # forked: the inherited workers belong to the parent
                self._idle, self._pid = [], os.getpid()
            return self._map(list(items), batch_timeout_s)

    def _map(self, items: list, batch_timeout_s: float | None) -> list:
        n = len(items)
        results = [self.failed] * n
        todo = deque(range(n))
        busy: dict[Any, _Worker] = {}  # connection -> worker with an item in flight
        t0 = time.monotonic()
        batch_end = None if batch_timeout_s is None else t0 + batch_timeout_s
        try:
            while todo or busy:
                while todo and len(busy) < self.workers:
                    fresh = not self._idle
                    w = self._start() if fresh else self._idle.pop()
                    i = todo.popleft()
                    try:
                        w.conn.send(items[i])
                    except OSError:
                        self._replace(w, kill=True)
                        if fresh:  # a worker that cannot even start: fail the item, do not loop
                            self.stats["crashes"] += 1
                            log.warning("a new worker died before item %d reached it (exit code %s); "
                                        "item graded wrong", i, w.process.exitcode)
                        else:  # it died while idle: the item is not to blame
                            todo.appendleft(i)
                        continue
                    w.index, w.started = i, time.monotonic()
                    busy[w.conn] = w
                now = time.monotonic()
                if batch_end is not None and now >= batch_end:
                    self.stats["batch_timeouts"] += 1
                    log.warning("grading batch passed its %.0f s deadline: %d of %d items left "
                                "undone and graded wrong", batch_timeout_s, len(todo) + len(busy), n)
                    break
                next_deadline = min(w.started for w in busy.values()) + self.item_timeout_s
                if batch_end is not None:
                    next_deadline = min(next_deadline, batch_end)
                for conn in wait(list(busy), timeout=max(0.0, next_deadline - now)):
                    self._collect(busy.pop(conn), items, results)
                now = time.monotonic()
                for conn, w in list(busy.items()):
                    if now - w.started >= self.item_timeout_s:
                        del busy[conn]
                        self.stats["timeouts"] += 1
                        log.warning("item %d passed its %.1f s deadline: worker %d killed, item "
                                    "graded wrong: %.200r", w.index, self.item_timeout_s,
                                    w.process.pid, items[w.index])
                        self._replace(w, kill=True)
        finally:
            for w in busy.values():  # batch deadline or an exception: these items stay failed
                self._replace(w, kill=True)
        self.stats["items"] += n
        return results

    def _collect(self, w: _Worker, items: list, results: list) -> None:
        """Read a finished worker's result (or notice its death) and park or retire it."""
        i = w.index
        try:
            ok, value = w.conn.recv()
        except (EOFError, OSError):
            self.stats["crashes"] += 1
            w.process.join(_JOIN_S)
            log.warning("worker %d died (exit code %s) on item %d, graded wrong: %.200r",
                        w.process.pid, w.process.exitcode, i, items[i])
            self._replace(w, kill=True)
            return
        w.done += 1
        w.index = None
        if ok:
            results[i] = value
        else:
            self.stats["errors"] += 1
            log.warning("item %d raised %s; graded wrong", i, value)
        if w.done >= self.max_items_per_worker:
            self._replace(w, kill=False)
        else:
            self._idle.append(w)
