"""The sandbox worker: a long-lived "zygote" that forks one child per unit test of a program.

Run as a plain script by sandbox.py (`python -s sandbox_worker.py UID GID TMPFS_BYTES FLAGS`),
stdlib only, so that the interpreter a child is forked from holds nothing but this file and its
two siblings: no JAX, no threads, and never the expected outputs, which stay in the grading
process. Forking an already-started interpreter costs a few ms; starting one costs 60-90 ms.

At start-up (sandbox_namespaces.py) the worker moves into a new network namespace (a loopback
that is down, nothing else) and mount namespace (fresh size-capped tmpfs over /tmp, /var/tmp and
/dev/shm; the interpreter's folders made readable to the sandbox uid), where the kernel allows;
non-root, through an unprivileged user namespace. It reports what held in its first frame.

Each test's child, before running the program: new session (so its group can be killed), stdin
from a memfd holding the test input, stdout/stderr (and the call-based result, fd 3) to pipes,
every other fd closed, a fresh private working folder, rlimits (CPU seconds, address space, file
size, open files, core 0, processes), the uid/gid dropped when root (else every capability
dropped), death with the worker (PR_SET_PDEATHSIG), not dumpable, the seccomp filter (sandbox_seccomp.py), an environment of
PATH only. Then `exec(compile(program))` in a fresh `__main__` namespace; a call-based test then
calls `fn_name` and writes the return value as JSON to fd 3. The worker enforces the wall-clock
deadline and the output cap, kills the process group, collects the child's rusage and removes
its folder.

Protocol, on the worker's stdin/stdout (moved to other fds at start, so no child inherits them):
frames of `>II` (header length, body length), a JSON header, a body of bytes. The grading
process sends one request per program; the worker answers with one frame per test.
"""
import builtins
import gc
import importlib.util
import io
import json
import math
import os
import resource
import selectors
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback

sandbox_seccomp = sandbox_namespaces = None  # siblings loaded by path in main(): this file runs as a script
_filter = None  # the seccomp Filter, built once
_child_stdio = None  # text streams over fds 0-2 for the children, built once (see _stdio)
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
SETUP_FAILED = 121  # the child's exit code when the sandbox could not be set up
FRAME = struct.Struct(">II")  # header length, body length
_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE = 1, 4
_STDERR_KEEP = 2000  # chars of the child's stderr kept for the debug log


def send(fd, header, body=b""):
    """Write one frame."""
    head = json.dumps(header).encode()
    data = FRAME.pack(len(head), len(body)) + head + body
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd, n):
    chunks = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def recv(fd):
    """Read one frame: (header dict, body bytes); EOFError when the other side has gone."""
    head_len, body_len = FRAME.unpack(_read_exact(fd, FRAME.size))
    return json.loads(_read_exact(fd, head_len)), _read_exact(fd, body_len)


# ---------------------------------------------------------------- the child

def _limits(req, held):
    cpu = int(math.ceil(req["timeout_s"])) + 1
    pairs = [(resource.RLIMIT_CPU, cpu, cpu + 1), (resource.RLIMIT_AS, req["memory_bytes"], req["memory_bytes"]),
             (resource.RLIMIT_FSIZE, req["file_bytes"], req["file_bytes"]), (resource.RLIMIT_CORE, 0, 0),
             (resource.RLIMIT_NOFILE, req["open_files"], req["open_files"])]
    if not held["seccomp"]:
        pairs.append((resource.RLIMIT_NPROC, 1, 1))  # no forks (nor threads) without the filter
    elif held["uid_drop"]:
        pairs.append((resource.RLIMIT_NPROC, req["max_tasks"], req["max_tasks"]))  # bounds threads
    for which, soft, hard in pairs:
        resource.setrlimit(which, (soft, hard))


def _stdio():
    """Text streams over fds 0-2 for the children. The worker's own sys.std* objects may hold
    buffered bytes; these never do: built in the worker, never used there, and pointing at fd
    numbers, they reach each child's own stdin/stdout/stderr after its dup2s."""
    return (io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding="utf-8",
                             errors="replace"),
            io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False), 1 << 16), encoding="utf-8",
                             errors="backslashreplace"),
            io.TextIOWrapper(io.BufferedWriter(io.FileIO(2, "w", closefd=False)), encoding="utf-8",
                             errors="backslashreplace", line_buffering=True))


def _exit_code(exc):
    code = exc.code
    if code is None or isinstance(code, int):
        return (code or 0) & 0xFF
    print(code, file=sys.stderr)
    return 1


def _target(namespace, fn_name):
    """The function a call-based test calls: top level, or a method of `Solution` (LeetCode)."""
    fn = namespace.get(fn_name)
    if callable(fn):
        return fn
    return getattr(namespace["Solution"](), fn_name)


def child(req, test_input, fds, workdir, held, uid, gid, worker_pid):
    """Runs in the forked child; never returns."""
    try:
        os.setsid()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        os.closerange(len(fds), 1 << 20)
        os.chdir(workdir)
        _limits(req, held)
        if held["uid_drop"]:
            sandbox_namespaces.drop_uid(uid, gid)  # which also clears every capability
        else:
            sandbox_namespaces.drop_capabilities()
        sandbox_namespaces.libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # after setuid, which clears it
        sandbox_namespaces.libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
        if os.getppid() != worker_pid:
            os._exit(SETUP_FAILED)
        if held["seccomp"]:
            _filter.install(sandbox_namespaces.libc)
        os.environ.clear()
        os.environ["PATH"] = SAFE_PATH
        sys.argv = ["solution.py"]
        sys.stdin, sys.stdout, sys.stderr = sys.__stdin__, sys.__stdout__, sys.__stderr__ = _child_stdio
    except BaseException:
        os._exit(SETUP_FAILED)
    code = 0
    payload = None
    try:
        namespace = {"__name__": "__main__", "__builtins__": builtins}
        exec(compile(req["program"], "solution.py", "exec"), namespace)
        if req["fn_name"] is not None:
            args = test_input if isinstance(test_input, list) else [test_input]
            payload = json.dumps(_target(namespace, req["fn_name"])(*args)).encode()
        _join_threads()
    except SystemExit as exc:
        code = _exit_code(exc)
    except BaseException:
        code = 1
        try:
            traceback.print_exc()
        except BaseException:
            pass
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        code = code or 1
    if payload is not None and code == 0:
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(3, view):]
        except BaseException:
            code = 1
    os._exit(code)


def _join_threads():
    """What interpreter shutdown would do: wait for the program's non-daemon threads (the
    `threading.Thread(target=main).start()` idiom for deep recursion)."""
    threading = sys.modules.get("threading")
    if threading is not None:
        for t in threading.enumerate():
            if t is not threading.main_thread() and not t.daemon:
                t.join()


# ---------------------------------------------------------------- one test, worker side

def _stdin_fd(text):
    data = text.encode("utf-8", "surrogateescape")
    fd = os.memfd_create("stdin", 0) if hasattr(os, "memfd_create") else tempfile.TemporaryFile().detach()
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _kill_group(pid):
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except OSError:
            pass


def run_test(req, test_input, base, held, uid, gid):
    """Run the program on one input in a fresh child; returns (header, stdout bytes, result bytes)."""
    call = req["fn_name"] is not None
    workdir = tempfile.mkdtemp(dir=base)
    fds, pid, usage = [], None, None  # every fd opened here is closed, the child reaped, whatever happens
    try:
        if held["uid_drop"]:
            os.chown(workdir, uid, gid)
        pipes = [os.pipe() for _ in range(3 if call else 2)]  # stdout, stderr, result
        fds += [fd for pair in pipes for fd in pair]
        stdin = os.open(os.devnull, os.O_RDONLY) if call else _stdin_fd(test_input)
        fds.append(stdin)
        me = os.getpid()
        start = time.monotonic()
        pid = os.fork()
        if pid == 0:
            child(req, test_input, [stdin] + [w for _, w in pipes], workdir, held, uid, gid, me)
        for fd in [w for _, w in pipes] + [stdin]:  # the child's ends: its exit then closes the pipes
            os.close(fd)
            fds.remove(fd)
        status, data = _collect(pid, [r for r, _ in pipes], start + req["timeout_s"], req["output_cap"])
        _kill_group(pid)
        _, wait_status, usage = os.wait4(pid, 0)
        wall = time.monotonic() - start
    finally:
        if pid is not None and usage is None:
            _kill_group(pid)
            os.waitpid(pid, 0)
        for fd in fds:
            os.close(fd)
        shutil.rmtree(workdir, ignore_errors=True)
        if held["private_tmp"]:
            _wipe_tmp(base)
    header = dict(status=status, wall_s=wall, cpu_s=usage.ru_utime + usage.ru_stime,
                  stderr=data[1][-_STDERR_KEEP:].decode("utf-8", "replace"))
    if status == "exited":
        if os.WIFSIGNALED(wait_status):
            header.update(status="signal", signal=os.WTERMSIG(wait_status))
        else:
            header["code"] = os.WEXITSTATUS(wait_status)
    return header, bytes(data[0]), bytes(data[2]) if call else b""


def _wipe_tmp(base):
    """Empty our private tmpfs mounts (but our own base directory), so nothing a program leaves
    there reaches the next test or fills the space the next program needs."""
    for d in ("/tmp", "/var/tmp", "/dev/shm"):
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for name in names:
            path = os.path.join(d, name)
            if path == base:
                continue
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.unlink(path)
                except OSError:
                    pass


def _collect(pid, fds, deadline, cap):
    """Read the child's pipes until it exits and they close, the deadline passes or it writes
    more than `cap` bytes to any of them. Returns (status, [bytearray per fd])."""
    data = [bytearray() for _ in fds]
    sel = selectors.DefaultSelector()
    for i, fd in enumerate(fds):
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ, i)
    pidfd = None
    try:
        pidfd = os.pidfd_open(pid)
        sel.register(pidfd, selectors.EVENT_READ, -1)
    except (AttributeError, OSError):
        pass  # older kernels: poll waitpid below
    open_fds, exited = len(fds), False
    try:
        while open_fds or not exited:
            now = time.monotonic()
            if now >= deadline:
                return "timeout", data
            timeout = deadline - now if pidfd is not None else min(deadline - now, 0.01)
            if exited:
                timeout = min(timeout, 0.1)  # an exited child's pipes close at once
            events = sel.select(timeout)
            if exited and not events:
                return "exited", data  # something else holds a pipe open: stop reading
            for key, _ in events:
                i = key.data
                if i == -1:
                    exited = True
                    sel.unregister(pidfd)
                    continue
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    sel.unregister(key.fd)
                    open_fds -= 1
                    continue
                data[i] += chunk
                if len(data[i]) > cap:
                    return "output_limit", data
            if pidfd is None and not exited:
                exited = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        return "exited", data
    finally:
        sel.close()
        if pidfd is not None:
            os.close(pidfd)


# ---------------------------------------------------------------- main loop

def _load_siblings():
    """sandbox_seccomp.py and sandbox_namespaces.py, by path: this file runs as a script, and the
    programs must not find the package's folder on sys.path."""
    global sandbox_seccomp, sandbox_namespaces
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0] or ".") == here:
        del sys.path[0]
    loaded = []
    for name in ("sandbox_seccomp", "sandbox_namespaces"):
        spec = importlib.util.spec_from_file_location(name, os.path.join(here, name + ".py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        loaded.append(module)
    sandbox_seccomp, sandbox_namespaces = loaded


def main():
    _load_siblings()
    uid, gid, tmpfs_bytes, flags = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(",")
    proto_in, proto_out = os.dup(0), os.dup(1)  # the protocol moves off fds 0/1 ...
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)  # ... so that nothing a child inherits there can reach it
    os.dup2(devnull, 1)
    os.close(devnull)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the grading process stops us, not a terminal
    global _child_stdio, _filter
    if "seccomp" in flags and sandbox_seccomp.supported():
        _filter = sandbox_seccomp.Filter()
    held, base = sandbox_namespaces.isolate(flags, tmpfs_bytes, uid, gid, _filter, list(sys.path))
    _child_stdio = _stdio()
    send(proto_out, dict(hello=True, pid=os.getpid(), base=base, isolation=held))
    while True:  # until the grading process closes our stdin or kills us; it removes `base`
        try:
            req, _ = recv(proto_in)
        except EOFError:
            return
        gc.freeze()  # the collector in a child then leaves the worker's objects (and their pages) alone
        for test_input in req["inputs"]:
            try:
                header, out, result = run_test(req, test_input, base, held, uid, gid)
            except OSError as exc:  # e.g. fork refused under memory pressure: this test fails
                header, out, result = dict(status="error", error=repr(exc), cpu_s=0.0, wall_s=0.0), b"", b""
            header["out_len"] = len(out)
            send(proto_out, header, out + result)


if __name__ == "__main__":
    main()
