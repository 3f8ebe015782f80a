"""The program sandbox: right programs pass, and hostile ones pass no test they should not, stop
within their deadlines and leave the host as it was. Adversarial programs print what they
observed; where a test expects the "safe" observation, a pass shows the protection held."""
import glob
import json
import os
import shutil
import signal
import tempfile
import textwrap

import pytest

from bstar_jax.rewards import (GradeResult, Sandbox, SandboxConfig, UnitTestError, grade_program, grade_programs,
                               parse_tests)
from bstar_jax.rewards.unit_tests import return_matches, stdout_matches

CONFIG = SandboxConfig(memory_bytes=512 << 20)  # the memory bomb below aims at 4 GB
ADD = {"inputs": ["1 2\n", "3 4\n", "10 -3\n"], "outputs": ["3\n", "7\n", "7\n"]}
ADD_PROGRAM = "a, b = map(int, input().split())\nprint(a + b)"
BLOCKED = {"inputs": [""], "outputs": ["blocked"]}


def src(text):
    return textwrap.dedent(text).strip() + "\n"


@pytest.fixture(scope="module")
def box():
    with Sandbox(workers=2, config=CONFIG) as b:
        yield b


def one(box, program, tests, timeout_s=4.0) -> GradeResult:
    return box.run([program], [tests], timeout_s=timeout_s)[0]


# ------------------------------------------------------------------ judging, no processes

def test_stdout_normalisation():
    assert stdout_matches("3  \r\n4\n\n\n", "3\n4")
    assert stdout_matches("1 2\n3", "1 2 3\n")  # APPS's token rule ignores line structure
    assert stdout_matches("0.3333333", "0.33333333")
    assert stdout_matches("2.0", "2")
    assert not stdout_matches("1000001", "1000000")  # integers are exact
    assert not stdout_matches("0.34", "0.33")
    assert not stdout_matches("3\n", "3\n4\n")
    assert not stdout_matches("inf", "1e308")


def test_call_based_comparison():
    assert return_matches(b"[1, 2]", [[1, 2]])  # APPS wraps outputs in a one-element list
    assert return_matches(b"5", [5]) and return_matches(b"[5]", [5])
    assert not return_matches(b"3", [3, 4])  # only a one-element list is unwrapped
    assert not return_matches(b"not json", "not json")
    assert return_matches(b'{"1": 2}', {"1": 2})


def test_parse_tests_rejects_malformed_input():
    with pytest.raises(UnitTestError, match="3 inputs but 2 outputs"):
        parse_tests({"inputs": ["a", "b", "c"], "outputs": ["a", "b"]})
    with pytest.raises(UnitTestError, match="input_output.outputs"):
        parse_tests({"inputs": []})
    with pytest.raises(UnitTestError, match=r"inputs\[0\]"):
        parse_tests({"inputs": [3], "outputs": ["3"]})
    with pytest.raises(UnitTestError, match="fn_name"):
        parse_tests({"inputs": [], "outputs": [], "fn_name": "not a name"})
    assert parse_tests(json.dumps(ADD)).inputs == ADD["inputs"]
    from bstar_jax.data import CodeTests
    tests = parse_tests(CodeTests.make([[1, 2]], [[3]], "add"))
    assert (tests.inputs, tests.expected, tests.fn_name) == ([[1, 2]], [[3]], "add")
    assert parse_tests({"inputs": [["1", "2"]], "outputs": [["3"]]}).inputs == ["1\n2"]


# ------------------------------------------------------------------ correctness

def test_right_programs_pass(box):
    assert box.grade(ADD_PROGRAM, ADD) == (3, 3)
    reads_all = "import sys\nnums = list(map(int, sys.stdin.read().split()))\nprint(sum(nums))"
    assert box.grade(reads_all, ADD) == (3, 3)
    call = {"fn_name": "add", "inputs": [[1, 2], [3, 4], [[1], [2]]], "outputs": [[3], 7, [[1, 2]]]}
    assert box.grade("def add(a, b):\n    return a + b", call) == (3, 3)
    leetcode = "class Solution:\n    def add(self, a, b):\n        return a + b"
    assert box.grade(leetcode, call) == (3, 3)
    assert box.grade("def pair(a):\n    return (a, a)", {"fn_name": "pair", "inputs": [[1]], "outputs": [[[1, 1]]]}) == (1, 1)


def test_partially_right_program_counts_its_passes(box):
    assert box.grade("a, b = map(int, input().split())\nprint(7 if a > 2 else 0)", ADD) == (2, 3)
    r = one(box, "a, b = map(int, input().split())\nprint(a // (b - 2 * a))", ADD)
    assert (r.passed, r.outcomes) == (0, ["exited", "wrong", "wrong"])  # 1 // 0, then wrong answers
    assert box.grade("print(", ADD) == (0, 3)  # a syntax error fails every test
    assert box.grade(ADD_PROGRAM, {"inputs": [], "outputs": []}) == (0, 0)


def test_threads_and_sys_exit_work(box):
    """The competitive-programming idiom for deep recursion runs, and exit() after the answer is fine."""
    program = src("""
        import sys, threading
        sys.setrecursionlimit(10000)
        threading.stack_size(1 << 26)
        def depth(n):
            return 0 if n == 0 else 1 + depth(n - 1)
        def main():
            a, b = map(int, input().split())
            print(depth(3000) - 3000 + a + b)
        threading.Thread(target=main).start()
    """)
    assert box.grade(program, ADD) == (3, 3)
    assert box.grade(ADD_PROGRAM + "\nimport sys\nsys.exit(0)", ADD) == (3, 3)
    assert box.grade(ADD_PROGRAM + "\nimport sys\nsys.exit(1)", ADD) == (0, 3)


def test_batch_equals_single_and_does_not_depend_on_workers(box):
    programs = [ADD_PROGRAM, "print(7)", "print(", "import os\nos._exit(0)",
                "a, b = map(int, input().split())\nprint(a - b if a > 5 else a + b)",
                "print(list({'x', 'y', 'zz', 'w', 'v'}))"]  # the order is the string hashes'
    tests = [ADD] * (len(programs) - 1) + [{"inputs": [""], "outputs": ["['v', 'w', 'x', 'y', 'zz']"]}]
    single = [box.grade(p, t) for p, t in zip(programs, tests)]
    assert single[:5] == [(3, 3), (2, 3), (0, 3), (0, 3), (2, 3)]
    assert box.grade_many(programs, tests) == single
    assert grade_programs(programs, tests, workers=1, config=CONFIG) == single
    assert grade_programs(programs, tests, workers=3, config=CONFIG) == single
    assert grade_program(ADD_PROGRAM, ADD, config=CONFIG) == (3, 3)


# ------------------------------------------------------------------ runaway programs

def test_infinite_loops_time_out(box):
    busy, sleepy = "while True:\n    pass", "import time\ntime.sleep(1000)"
    for program in (busy, sleepy, "import os\nos.close(1)\nwhile True:\n    pass"):
        r = one(box, program, {"inputs": ["1"], "outputs": ["1"]}, timeout_s=1.0)
        assert (r.passed, r.outcomes) == (0, ["timeout"])


def test_memory_bomb_stops_at_the_limit(box):
    program = src("""
        chunks = []
        for _ in range(40):  # 40 x 100 MB = 4 GB at most
            chunks.append(bytearray(100 * 1024 * 1024))
        print("survived")
    """)
    r = one(box, program, {"inputs": [""], "outputs": ["survived"]}, timeout_s=30.0)  # room on a loaded machine
    assert (r.passed, r.outcomes) == (0, ["exited"])  # MemoryError at the 512 MiB address-space cap


def test_limits_cannot_be_raised_even_as_root():
    """Without the uid drop a program keeps uid 0 but no capability: its hard limits hold."""
    program = src("""
        import resource
        try:
            resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            print("RAISED")
        except (ValueError, OSError):
            print("blocked")
    """)
    with Sandbox(workers=1, config=SandboxConfig(drop_uid=False, memory_bytes=512 << 20)) as b:
        assert b.grade(program, BLOCKED) == (1, 1)
        assert b.grade("import os\nprint(os.getuid())", {"inputs": [""], "outputs": [str(os.geteuid())]}) == (1, 1)


def test_bounded_fork_loop_makes_no_process(box):
    program = src("""
        import os, time
        made = 0
        for _ in range(50):
            try:
                pid = os.fork()
            except OSError:
                continue
            if pid == 0:
                time.sleep(30)
                os._exit(0)
            made += 1
        print(made)
    """)
    r = one(box, program, {"inputs": [""], "outputs": ["0"]})
    assert r.outcomes == ["pass"]  # every fork failed
    subprocess_program = "import subprocess\ntry:\n    subprocess.run(['true'])\nexcept OSError:\n    print('blocked')"
    assert box.grade(subprocess_program, BLOCKED) == (1, 1)
    assert _children_of(box.worker_pids()) == []


def _children_of(pids):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid in pids:
                out.append(int(entry))
    return out


def test_output_flood_is_cut(box):
    program = "import sys\nblock = 'x' * (1 << 20)\nfor _ in range(100):\n    sys.stdout.write(block)\nprint()"
    r = one(box, program, {"inputs": [""], "outputs": ["x"]})
    assert (r.passed, r.outcomes) == (0, ["output_limit"])
    stderr_flood = "import sys\nfor _ in range(100):\n    sys.stderr.write('e' * (1 << 20))\nprint('x')"
    assert one(box, stderr_flood, {"inputs": [""], "outputs": ["x"]}).outcomes == ["output_limit"]


# ------------------------------------------------------------------ the host stays untouched

def make_decoys(parent):
    """A world-readable decoy folder, laid out like a run's workdir with a checkpoint."""
    root = tempfile.mkdtemp(prefix="bstar-decoy-", dir=parent)
    os.makedirs(os.path.join(root, "workdir", "checkpoints", "3"))
    files = {os.path.join(root, "notes.txt"): b"keep me\n",
             os.path.join(root, "workdir", "checkpoints", "3", "state.npz"): b"\x93NUMPY fake checkpoint"}
    for path, data in files.items():
        with open(path, "wb") as f:
            f.write(data)
    for d, _, names in os.walk(root):
        os.chmod(d, 0o755)
        for n in names:
            os.chmod(os.path.join(d, n), 0o644)
    return root


def _snapshot(root):
    out = {}
    for d, dirs, names in os.walk(root):
        for n in dirs + names:
            p = os.path.join(d, n)
            st = os.lstat(p)
            out[p] = (st.st_mode, st.st_mtime_ns, open(p, "rb").read() if os.path.isfile(p) else None)
    return out


def decoy_program(root):
    return src(f"""
        import os, shutil
        root = {root!r}
        attempts = [
            lambda: open(os.path.join(root, "notes.txt"), "w").write("pwned"),
            lambda: os.remove(os.path.join(root, "notes.txt")),
            lambda: os.rename(os.path.join(root, "workdir", "checkpoints", "3", "state.npz"), os.path.join(root, "x")),
            lambda: open(os.path.join(root, "workdir", "checkpoints", "3", "state.npz"), "ab").write(b"!"),
            lambda: open(os.path.join(root, "workdir", "new_file"), "w").write("x"),
            lambda: shutil.rmtree(os.path.join(root, "workdir")),
            lambda: os.chmod(os.path.join(root, "notes.txt"), 0o777),
            lambda: os.symlink("/", os.path.join(root, "link")),
        ]
        for attempt in attempts:
            try:
                attempt()
                print("DONE")
            except OSError:
                print("blocked")
        with open("scratch.txt", "w") as f:  # the private working folder is writable
            f.write("mine")
        print(open("scratch.txt").read())
    """)


@pytest.mark.parametrize("layer", ["all", "uid-only", "read-only-mounts"])
def test_files_outside_the_workdir_are_untouched(box, layer):
    """Each layer alone keeps a program from the host's files: all of them (the decoys in /tmp
    are not even visible), the uid drop alone (host /tmp, no private mounts), the read-only
    mounts alone (programs run as root, the decoys outside the temporary folders)."""
    parent = "/run" if layer == "read-only-mounts" else "/tmp"
    if layer != "all" and os.geteuid() != 0:
        pytest.skip("needs root")
    if not os.access(parent, os.W_OK):
        pytest.skip(f"cannot write decoys into {parent}")
    decoys = make_decoys(parent)
    try:
        tests = {"inputs": [""], "outputs": ["blocked\n" * 8 + "mine\n"]}
        before, mounts, folders = _snapshot(decoys), _mounts(), set(glob.glob("/tmp/bstar-sandbox-*"))
        if layer == "all":
            assert box.grade(decoy_program(decoys), tests) == (1, 1)
        else:
            config = (SandboxConfig(private_tmp=False) if layer == "uid-only" else SandboxConfig(drop_uid=False))
            with Sandbox(workers=1, config=config) as b:
                assert b.isolation["uid_drop"] == (layer == "uid-only")
                assert b.isolation["read_only_host"] == (layer == "read-only-mounts")
                assert b.grade(decoy_program(decoys), tests) == (1, 1)
        assert _snapshot(decoys) == before
        assert _mounts() == mounts  # the workers' namespaces changed nothing here
        assert set(glob.glob("/tmp/bstar-sandbox-*")) <= folders  # a closed worker's folder is gone
    finally:
        shutil.rmtree(decoys)


def _mounts():
    with open("/proc/self/mountinfo") as f:
        return sorted(f.read().splitlines())


def test_environment_holds_only_path(monkeypatch):
    monkeypatch.setenv("BSTAR_SANDBOX_SECRET", "hunter2")
    program = src("""
        import os
        seen = sorted(os.environ)
        for path in ("/proc/self/environ", "/proc/%d/environ" % os.getppid(), "/proc/1/environ"):
            try:
                if b"hunter2" in open(path, "rb").read():
                    seen.append("LEAK")
            except OSError:
                pass
        print(*seen)
    """)
    with Sandbox(workers=1, config=CONFIG) as fresh:  # workers started after the secret was set
        assert fresh.grade(program, {"inputs": [""], "outputs": ["PATH"]}) == (1, 1)


SOCKETS = src("""
    import socket
    results = []
    for family, address in ((socket.AF_INET, ("1.1.1.1", 53)), (socket.AF_INET, ("127.0.0.1", 22)),
                            (socket.AF_UNIX, "\\0any-abstract-socket")):
        try:
            s = socket.socket(family, socket.SOCK_STREAM)
            s.settimeout(1.0)
            s.connect(address)
            results.append("CONNECTED")
        except OSError:
            results.append("blocked")
    print("blocked" if set(results) == {"blocked"} else results)
""")


@pytest.mark.parametrize("layer", ["all", "seccomp-only", "netns-only"])
def test_sockets_fail(box, layer):
    if layer == "all":
        assert box.isolation["net_namespace"] and box.isolation["seccomp"]
        assert box.grade(SOCKETS, BLOCKED) == (1, 1)
        return
    # without namespaces this machine's interpreter (under /root, mode 0700) cannot be exposed
    # to the sandbox uid, so the seccomp-only worker runs programs as root: the filter alone
    config = SandboxConfig(namespaces=layer == "netns-only", seccomp=layer == "seccomp-only",
                           drop_uid=layer == "netns-only")
    with Sandbox(workers=1, config=config) as partial:
        assert partial.isolation["net_namespace"] == (layer == "netns-only")
        assert partial.grade(SOCKETS, BLOCKED) == (1, 1)


KILL_PARENT = src("""
    import os, signal
    results = []
    for attempt in (lambda: os.kill(os.getppid(), signal.SIGKILL),
                    lambda: os.killpg(os.getpgid(os.getppid()), signal.SIGKILL)):
        try:
            attempt()
            results.append("SENT")
        except OSError:
            results.append("blocked")
    print("blocked" if set(results) == {"blocked"} else results)
""")


@pytest.mark.parametrize("layers", ["uid+seccomp", "seccomp-only", "uid-only"])
def test_signalling_the_parent_fails(box, layers):
    config = SandboxConfig(drop_uid="uid" in layers, seccomp="seccomp" in layers)
    with Sandbox(workers=1, config=config) as b:
        assert b.isolation["uid_drop"] == ("uid" in layers)
        pids = b.worker_pids()
        assert b.grade(KILL_PARENT, BLOCKED) == (1, 1)
        assert b.worker_pids() == pids  # the worker lived on ...
        assert b.grade(ADD_PROGRAM, ADD) == (3, 3)  # ... and still grades
    # kill(-1) would reach every process of the sandbox uid (other programs' children): the
    # filter stops it; signal 0 only asks whether anything could be reached
    kill_all = "import os\ntry:\n    os.kill(-1, 0)\n    print('SENT')\nexcept OSError:\n    print('blocked')"
    assert box.grade(kill_all, BLOCKED) == (1, 1)


def test_uid_is_dropped(box):
    if os.geteuid() != 0:
        pytest.skip("the uid drop needs root")
    assert box.grade("import os\nprint(os.getuid(), os.getgid())", {"inputs": [""], "outputs": ["65534 65534"]}) == (1, 1)


# ------------------------------------------------------------------ faking a pass

def test_exiting_before_the_tests_gets_no_pass(box):
    assert box.grade("import os\nos._exit(0)", ADD) == (0, 3)
    call = {"fn_name": "add", "inputs": [[1, 2]], "outputs": [3]}
    assert box.grade("import os\nos._exit(0)\ndef add(a, b):\n    return a + b", call) == (0, 1)
    assert box.grade("import os\ndef add(a, b):\n    os._exit(0)", call) == (0, 1)
    assert box.grade("def add(a, b):\n    raise SystemExit(0)", call) == (0, 1)


def test_overriding_comparison_or_builtins_gets_no_pass(box):
    call = {"fn_name": "solve", "inputs": [[1], [2]], "outputs": [[3, 4], "five"]}
    always_equal = src("""
        class Yes:
            def __eq__(self, other):
                return True
            __hash__ = object.__hash__
        def solve(x):
            return Yes()
    """)
    str_subclass = src("""
        class S(str):
            def __eq__(self, other):
                return True
        def solve(x):
            return S("wrong")
    """)
    patched = src("""
        import builtins, json, operator, sys
        builtins.isinstance = lambda *a: True
        builtins.len = lambda *a: 0
        operator.eq = lambda *a: True
        json.dumps = lambda *a, **k: '"anything"'
        json.loads = lambda *a, **k: [3, 4]
        main = sys.modules["__main__"]
        for name in list(vars(main)):
            if callable(getattr(main, name)) and not name.startswith("__"):
                setattr(main, name, lambda *a, **k: None)
        def solve(x):
            return None
    """)
    for program in (always_equal, str_subclass, patched):
        assert box.grade(program, call) == (0, 2), program
    stdin_patch = "import builtins, sys\nbuiltins.print = lambda *a, **k: None\nsys.stdout.write('3')\n"
    assert box.grade(stdin_patch, ADD) == (1, 3)  # only what it really wrote counts: right once


def test_printing_another_tests_output_fails_that_test(box):
    r = one(box, "print(3)", {"inputs": ["1 2\n", "5 5\n"], "outputs": ["3\n", "10\n"]})
    assert (r.passed, r.outcomes) == (1, ["pass", "wrong"])


def test_expected_outputs_are_not_in_the_programs_memory(box):
    """The program scans its whole address space (and Python's objects) for the markers; it finds
    both tests' inputs, which the worker holds, but no expected output, which it never gets."""
    program = src(r"""
        import ctypes, gc, re
        found = set()
        pattern = re.compile(rb"(?:needle|zebra)-\d{4}")
        with open("/proc/self/maps") as maps:
            regions = [line.split() for line in maps]
        for r in regions:
            lo, hi = (int(x, 16) for x in r[0].split("-"))
            if r[1][0] != "r" or (len(r) > 5 and r[5] in ("[vvar]", "[vsyscall]", "[vvar_vclock]")):
                continue
            try:
                found.update(m.decode() for m in pattern.findall(ctypes.string_at(lo, hi - lo)))
            except Exception:
                pass
        for obj in gc.get_objects():
            for text in (obj if isinstance(obj, (list, tuple)) else [obj]):
                if isinstance(text, str):
                    found.update(re.findall(r"(?:needle|zebra)-\d{4}", text))
        print(*sorted(found))
    """)
    tests = {"inputs": ["needle-4242", "needle-5555"], "outputs": ["needle-4242 needle-5555", "zebra-7731"]}
    r = one(box, program, tests, timeout_s=20.0)  # a scan of some 50 MB: room on a loaded machine
    assert r.outcomes == ["pass", "wrong"]  # the scan works (it found the inputs) and finds no marker


# ------------------------------------------------------------------ recovery

def test_dead_worker_is_replaced_and_batch_deadline_holds():
    with Sandbox(workers=1, config=CONFIG) as b:
        assert b.grade(ADD_PROGRAM, ADD) == (3, 3)
        [pid] = b.worker_pids()
        os.kill(pid, signal.SIGKILL)
        assert b.grade(ADD_PROGRAM, ADD) == (3, 3)
        assert b.worker_pids() != [pid]
        stuck = ["while True:\n    pass"] * 3
        results = b.run(stuck, [{"inputs": ["1", "2"], "outputs": ["1", "2"]}] * 3, timeout_s=30.0,
                        batch_timeout_s=1.0)
        assert [r.passed for r in results] == [0, 0, 0]
        assert results[0].outcomes == ["lost", "lost"] and results[2].outcomes == ["skipped", "skipped"]
        assert b.grade(ADD_PROGRAM, ADD) == (3, 3)


def test_workers_run_under_a_launcher():
    """An outer layer (bwrap, nsjail, a container's exec) wraps the worker command; `env` stands
    in for one here: it passes stdin/stdout through and execs its arguments."""
    with Sandbox(workers=1, config=SandboxConfig(launcher=("env",), memory_bytes=512 << 20)) as b:
        assert b.grade(ADD_PROGRAM, ADD) == (3, 3)


# ------------------------------------------------------------------ the non-root path

NON_ROOT_CHECK = src('''
    import importlib.util, json, os, sys, types
    repo = sys.argv[1]
    sys.path.insert(0, repo)
    package = types.ModuleType("bstar_jax.rewards")  # the modules alone: no JAX import
    package.__path__ = [os.path.join(repo, "bstar_jax", "rewards")]
    sys.modules["bstar_jax.rewards"] = package
    from bstar_jax.rewards.sandbox import Sandbox, SandboxConfig
    cases = json.loads(sys.argv[2])
    out = {}
    for namespaces in (True, False):
        with Sandbox(workers=1, config=SandboxConfig(namespaces=namespaces, memory_bytes=512 << 20)) as box:
            out[str(namespaces)] = dict(isolation=box.isolation, uid=os.getuid(),
                                        grades=box.grade_many([p for p, _ in cases], [t for _, t in cases]))
    print(json.dumps(out))
''')


def test_non_root_worker_uses_user_namespace_or_seccomp(tmp_path):
    """Run the grading process as uid 65534 (as on a machine without root): with an unprivileged
    user namespace the worker still gets its network and mount namespaces; without namespaces,
    the seccomp filter alone still stops sockets, forks and signals to the parent."""
    import subprocess
    import sys
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("setpriv"):
        pytest.skip("needs root, unshare and setpriv to become another user")
    from bstar_jax.rewards import sandbox_namespaces
    stash = tmp_path / "stash"
    stash.mkdir()
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    cases = [(ADD_PROGRAM, ADD), (SOCKETS, BLOCKED), (KILL_PARENT, BLOCKED),
             ("import os\ntry:\n    os.fork()\n    print('FORKED')\nexcept OSError:\n    print('blocked')", BLOCKED)]
    # this machine's interpreter may sit in a folder other users cannot enter (/root): expose it,
    # in a private mount namespace, the way the worker does for its children
    expose = (f"import sys; sys.path.insert(0, {os.path.dirname(sandbox_namespaces.__file__)!r}); "
              f"import sandbox_namespaces as n; assert not n.expose({sys.path!r}, 65534, 65534, {str(stash)!r})")
    inner = (f"{sys.executable} -c {_quote(expose)} && cd / && setpriv --reuid=65534 --regid=65534 --clear-groups "
             f"{sys.executable} -c {_quote(NON_ROOT_CHECK)} {repo} {_quote(json.dumps(cases))}")
    run = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", inner],
                         capture_output=True, text=True, timeout=300, env={"PATH": os.environ["PATH"]})
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    with_ns, without = out["True"], out["False"]
    assert with_ns["uid"] == 65534 and not with_ns["isolation"]["root"]
    assert with_ns["isolation"]["user_namespace"] and with_ns["isolation"]["net_namespace"]
    assert not without["isolation"]["net_namespace"] and without["isolation"]["seccomp"]
    for result in (with_ns, without):
        assert result["grades"] == [[3, 3], [1, 1], [1, 1], [1, 1]]


def _quote(text):
    import shlex
    return shlex.quote(text)
