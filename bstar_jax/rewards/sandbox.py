"""Grading untrusted programs by unit tests (the APPS setting: reward 1 when every test passes).

    grade_program(program, tests, timeout_s=4.0) -> (passed, run)
    grade_programs(programs, tests_list, timeout_s=4.0, workers=None) -> [(passed, run), ...]
    with Sandbox(workers=2) as box: box.grade_many(...)      # keep the workers between calls

`tests` is APPS's `input_output` dict (unit_tests.py says how outputs are judged); `run` is the
number of tests in it, and a test the program never finished (a crash, a deadline, the batch
deadline) counts as run and failed. Nothing a program does raises here: it only fails tests
(logged at debug level). A malformed `tests` dict raises UnitTestError.

Each test runs in its own child process forked from a long-lived worker (sandbox_worker.py
documents the child's confinement); docs/sandbox.md says what holds where. This module, in the
grading process, keeps the expected outputs (the workers never see them), starts and feeds the
workers, enforces the per-program and per-batch deadlines by killing a worker that overruns, and
restarts any worker that dies or misbehaves. Results come back in input order and do not depend
on the number of workers.
"""
from __future__ import annotations

import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from bstar_jax.core.errors import UserError
from bstar_jax.rewards import sandbox_worker
from bstar_jax.rewards.unit_tests import UnitTests, parse_tests, return_matches, stdout_matches

log = logging.getLogger(__name__)

_WORKER = os.path.abspath(sandbox_worker.__file__)
_START_S = 30.0  # a worker's start-up (interpreter, namespaces) on a loaded machine
_SLACK_S = 5.0  # beyond a test's own deadline: fork, set-up, teardown of one test


@dataclass(frozen=True)
class SandboxConfig:
    """What one test's process may use, and which isolation layers to try. The address space
    bounds memory (Python's own few tens of MB included); `output_bytes` is raised to twice the
    longest expected output plus 4 KiB when that is larger, so a right answer is never cut."""
    memory_bytes: int = 4 << 30
    file_bytes: int = 16 << 20  # RLIMIT_FSIZE: the largest file it may write
    output_bytes: int = 1 << 20  # stdout (and stderr, and a call-based result) cap
    open_files: int = 64
    max_tasks: int = 256  # RLIMIT_NPROC for the sandbox uid when threads are allowed (filter on)
    tmpfs_bytes: int = 256 << 20  # size of each private /tmp, /var/tmp, /dev/shm
    uid: int = 65534  # nobody: the uid/gid children drop to when the worker is root
    gid: int = 65534
    # The layers, each on where the machine allows it; turning one off is for tests and diagnosis.
    namespaces: bool = True  # network + mount namespaces
    private_tmp: bool = True  # host read-only, tmpfs over /tmp, /var/tmp, /dev/shm (mount namespace)
    drop_uid: bool = True  # when root
    seccomp: bool = True
    # A command the worker runs under, for an outer isolation layer: ("bwrap", ..., "--"),
    # ("nsjail", ..., "--"), a container runtime's exec (docs/sandbox.md). It must pass stdin and
    # stdout through and exec its arguments.
    launcher: tuple[str, ...] = ()


@dataclass
class GradeResult:
    """One program's grade: tests passed of tests run, each test's outcome ("pass", "wrong",
    "exited", "timeout", "signal", "output_limit", "error", "lost", "skipped"), the CPU seconds
    its test processes used (from their rusage) and the wall-clock seconds its worker spent on it."""
    passed: int
    run: int
    outcomes: list[str] = field(default_factory=list)
    cpu_s: float = 0.0
    wall_s: float = 0.0

    @property
    def reward(self) -> int:
        """1 when every test passed (and there was one), else 0."""
        return int(self.run > 0 and self.passed == self.run)


class SandboxError(UserError):
    """The sandbox cannot give the isolation asked for on this machine (one line: what, what to do)."""


class _WorkerLost(Exception):
    def __init__(self, why, exited=False):
        super().__init__(why)
        self.exited = exited  # the worker died (a retry on a fresh one may help), not a deadline


class _Worker:
    """One zygote process and its protocol pipes."""

    def __init__(self, config: SandboxConfig):
        flags = ",".join(name for name, on in (("ns", config.namespaces), ("tmp", config.private_tmp),
                                               ("uid", config.drop_uid), ("seccomp", config.seccomp)) if on) or "none"
        env = {"PATH": sandbox_worker.SAFE_PATH, "PYTHONHASHSEED": "0", "PYTHONUTF8": "1"}  # same hashes in every worker
        self.proc = subprocess.Popen([*config.launcher, sys.executable, "-s", _WORKER, str(config.uid),
                                      str(config.gid), str(config.tmpfs_bytes), flags], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, cwd="/", start_new_session=True)
        self.fd_in, self.fd_out = self.proc.stdout.fileno(), self.proc.stdin.fileno()
        self.buf = bytearray()
        self.isolation = None
        self.base = None
        self.programs = 0

    def hello(self, deadline):
        if self.isolation is None:
            header, _ = self.recv(deadline)
            self.isolation, self.base = header["isolation"], header["base"]
        return self.isolation

    def send(self, header):
        try:
            sandbox_worker.send(self.fd_out, header)
        except OSError as exc:
            raise _WorkerLost(f"send: {exc}", exited=True) from None

    def _fill(self, n, deadline):
        while len(self.buf) < n:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([self.fd_in], [], [], wait)[0]:
                raise _WorkerLost("deadline")
            chunk = os.read(self.fd_in, 1 << 20)
            if not chunk:
                raise _WorkerLost(f"exited ({self.proc.poll()})", exited=True)
            self.buf += chunk

    def recv(self, deadline):
        size = sandbox_worker.FRAME.size
        self._fill(size, deadline)
        head_len, body_len = sandbox_worker.FRAME.unpack(self.buf[:size])
        self._fill(size + head_len + body_len, deadline)
        header = json.loads(bytes(self.buf[size:size + head_len]))
        body = bytes(self.buf[size + head_len:size + head_len + body_len])
        del self.buf[:size + head_len + body_len]
        return header, body

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its children die with it (PR_SET_PDEATHSIG)
        except OSError:
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        self.proc.wait()
        if self.base and self.isolation and not self.isolation["private_tmp"]:
            # the tests' folders in the host's temp folder (seen from here, without the worker's
            # mounts: a private tmpfs, had there been one, went with the worker)
            shutil.rmtree(self.base, ignore_errors=True)


class Sandbox:
    """A pool of sandbox workers. Use as a context manager, or call close(); `isolation` says
    which mechanisms hold here (see docs/sandbox.md)."""

    def __init__(self, workers: int | None = None, config: SandboxConfig = SandboxConfig(),
                 recycle_after: int = 1000):
        self.workers = max(1, workers or len(os.sched_getaffinity(0)))
        self.config = config
        self.recycle_after = recycle_after  # programs per worker before a fresh one
        self._pool: list[_Worker | None] = [None] * self.workers
        self._isolation = None

    @property
    def isolation(self) -> dict:
        """What the workers' start-up achieved: root, user_namespace, net_namespace, private_tmp,
        uid_drop, seccomp (booleans)."""
        if self._isolation is None:
            self._get(0)
        return dict(self._isolation)

    def worker_pids(self) -> list[int]:
        """The running workers' pids (a recycled worker gets a new one)."""
        return [w.proc.pid for w in self._pool if w is not None]

    def _get(self, slot) -> _Worker:
        w = self._pool[slot]
        if w is not None and (w.proc.poll() is not None or w.programs >= self.recycle_after):
            w.kill()
            w = None
        if w is None:
            w = _Worker(self.config)
            try:
                isolation = w.hello(time.monotonic() + _START_S)
            except _WorkerLost as exc:
                w.kill()
                raise RuntimeError(f"sandbox worker failed to start: {exc}") from None
            if isolation.get("problem"):
                w.kill()
                raise SandboxError(f"sandbox: {isolation['problem']}; make them readable, or pass "
                                   f"SandboxConfig(drop_uid=False) to run programs as root")
            if self._isolation is None:
                self._isolation = isolation
                log.info("sandbox isolation: %s", ", ".join(f"{k}={v}" for k, v in isolation.items()))
                if not (isolation["net_namespace"] or isolation["seccomp"]):
                    log.warning("sandbox: programs can use the network here (no network namespace, no "
                                "seccomp filter); see docs/sandbox.md")
                if isolation["root"] and not isolation["uid_drop"]:
                    log.warning("sandbox: programs run as root here (uid drop off); see docs/sandbox.md")
            self._pool[slot] = w
        return w

    def _drop(self, slot):
        if self._pool[slot] is not None:
            self._pool[slot].kill()
            self._pool[slot] = None

    def grade(self, program: str, tests, *, timeout_s: float = 4.0) -> tuple[int, int]:
        """(tests passed, tests run) for one program."""
        return self.grade_many([program], [tests], timeout_s=timeout_s)[0]

    def grade_many(self, programs, tests_list, *, timeout_s: float = 4.0,
                   batch_timeout_s: float | None = None) -> list[tuple[int, int]]:
        """(tests passed, tests run) per program, in input order."""
        return [(r.passed, r.run) for r in self.run(programs, tests_list, timeout_s=timeout_s,
                                                    batch_timeout_s=batch_timeout_s)]

    def run(self, programs, tests_list, *, timeout_s: float = 4.0,
            batch_timeout_s: float | None = None) -> list[GradeResult]:
        """GradeResult per program, in input order. Each test has `timeout_s` of wall-clock time;
        the whole batch has `batch_timeout_s` (None: no batch deadline), after which unfinished
        programs fail their remaining tests."""
        programs = list(programs)
        parsed = [parse_tests(t) for t in tests_list]
        if len(parsed) != len(programs):
            raise ValueError(f"{len(programs)} programs but {len(parsed)} test sets")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        batch_deadline = None if batch_timeout_s is None else time.monotonic() + batch_timeout_s
        results: list[GradeResult | None] = [None] * len(programs)
        queue = iter(range(len(programs)))
        lock = threading.Lock()

        errors = []

        def drain(slot):
            try:
                while not errors:
                    with lock:
                        i = next(queue, None)
                    if i is None:
                        return
                    results[i] = self._grade_one(slot, programs[i], parsed[i], timeout_s, batch_deadline)
            except BaseException as exc:  # a worker that cannot start: raised below, in the caller's thread
                errors.append(exc)

        threads = [threading.Thread(target=drain, args=(s,), daemon=True)
                   for s in range(min(self.workers, len(programs)))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return results

    def _grade_one(self, slot, program, tests: UnitTests, timeout_s, batch_deadline) -> GradeResult:
        result = GradeResult(0, len(tests))
        if not len(tests):
            return result
        if batch_deadline is not None and time.monotonic() >= batch_deadline:
            result.outcomes = ["skipped"] * len(tests)
            return result
        if not isinstance(program, str):
            result.outcomes = ["error"] * len(tests)
            return result
        cap = max(self.config.output_bytes,
                  2 * max(len(e.encode()) if isinstance(e, str) else 0 for e in tests.expected) + 4096)
        cfg = self.config
        request = dict(program=program, inputs=tests.inputs,
                       fn_name=tests.fn_name, timeout_s=timeout_s, output_cap=cap,
                       memory_bytes=cfg.memory_bytes, file_bytes=cfg.file_bytes, open_files=cfg.open_files,
                       max_tasks=cfg.max_tasks)
        if tests.fn_name is not None:
            request["output_cap"] = max(cap, 2 * len(json.dumps(tests.expected)) + 4096)
        start = time.monotonic()
        for attempt in range(2):
            try:
                self._send_and_judge(slot, request, tests, result, batch_deadline, timeout_s)
                break
            except _WorkerLost as exc:
                log.debug("sandbox worker lost (%s); restarting it", exc)
                self._drop(slot)
                if not (exc.exited and not result.outcomes and attempt == 0):
                    result.outcomes += ["lost"] * (len(tests) - len(result.outcomes))
                    break
                # the worker was gone before this program got a result (killed from outside, or
                # recycled under it): once more on a fresh one
        result.wall_s = time.monotonic() - start
        return result

    def _send_and_judge(self, slot, request, tests, result, batch_deadline, timeout_s):
        worker = self._get(slot)
        worker.programs += 1
        worker.send(request)
        for i, expected in enumerate(tests.expected):
            deadline = time.monotonic() + timeout_s + _SLACK_S
            if batch_deadline is not None:
                deadline = min(deadline, batch_deadline)
            header, body = worker.recv(deadline)
            outcome = _judge(header, body, expected, tests.fn_name)
            result.outcomes.append(outcome)
            result.cpu_s += header.get("cpu_s", 0.0)
            result.passed += outcome == "pass"
            if outcome != "pass":
                log.debug("test %d: %s %s", i, outcome,
                          {k: v for k, v in header.items() if k in ("code", "signal", "error", "stderr")})

    def close(self):
        """Stop the workers."""
        for slot in range(self.workers):
            self._drop(slot)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _judge(header, body, expected, fn_name) -> str:
    status = header.get("status")
    if status != "exited":
        return status or "error"
    if header.get("code") != 0:
        return "exited"
    out = body[:header["out_len"]]
    if fn_name is None:
        ok = stdout_matches(out.decode("utf-8", "replace"), expected)
    else:
        ok = return_matches(body[header["out_len"]:], expected)
    return "pass" if ok else "wrong"


def grade_program(program: str, tests, *, timeout_s: float = 4.0,
                  config: SandboxConfig = SandboxConfig()) -> tuple[int, int]:
    """(tests passed, tests run) of one program on APPS `input_output` tests, in a fresh
    one-worker sandbox. For many programs, grade_programs or a kept Sandbox is much faster."""
    with Sandbox(workers=1, config=config) as box:
        return box.grade(program, tests, timeout_s=timeout_s)


def grade_programs(programs, tests_list, *, timeout_s: float = 4.0, workers: int | None = None,
                   batch_timeout_s: float | None = None,
                   config: SandboxConfig = SandboxConfig()) -> list[tuple[int, int]]:
    """(tests passed, tests run) per program (program i on tests_list[i]), in input order, over
    `workers` sandbox workers (default: one per usable core)."""
    with Sandbox(workers=workers, config=config) as box:
        return box.grade_many(programs, tests_list, timeout_s=timeout_s, batch_timeout_s=batch_timeout_s)
