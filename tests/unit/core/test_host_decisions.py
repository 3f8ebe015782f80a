"""Every process takes every decision the same way (docs/multihost.md#decisions).

Several processes run one program; each collective must be reached by all of them in the same
order. A branch on something a process reads for itself (a file's presence, a folder listing, a
marker's contents, a checkpoint listing, device memory) or on the iteration order of a set of
strings (PYTHONHASHSEED differs per process) can go one way in one process and the other way in
another, and the two then meet different collectives. This test reads the package's source and
fails on such a read anywhere but:

  - in a function decorated `@distributed.decided_on_writer` (the writer reads, every process
    gets its answer) or `@distributed.gathered` (every process gets every process's answer);
  - in the body of `if distributed.is_writer():` (or `if is_writer:` / `if writing:`): code only
    the writer runs, which must reach no collective;
  - in the test of an `if` whose only statement raises (`raise ...` or `_fail(...)`): a process
    that raises stops, and the watchdog stops the others with one line (a stop, not a divergence);
  - in a function whose every call in the package is in one of these places;
  - in `ALLOWED` below, each with its reason.

Not scanned: analysis/ (the offline report, paired comparisons, and the run log, which only the
writer keeps) and the fit tool (cli/fit.py and the `python -m` entry modules bstar_jax/report.py,
bstar_jax/tpu_fit.py): they run in one process; nor the program sandbox's worker (rewards/sandbox_worker.py, sandbox_namespaces.py), which
reads only its own private folders and the local kernel's state. The clock is not scanned: it is read only for the `seconds` column and progress bars.
"""
from __future__ import annotations

import ast
import pathlib
import textwrap

PACKAGE = pathlib.Path(__file__).resolve().parents[3] / "bstar_jax"
EXCLUDED = ("analysis/", "cli/fit.py", "report.py", "tpu_fit.py",
            # the sandbox: each worker reads its own private folders and namespaces, never shared storage
            "rewards/sandbox_namespaces.py", "rewards/sandbox_worker.py")

# Calls that read storage or host state (method or module-function names).
READS = {"exists", "isfile", "isdir", "is_file", "is_dir", "glob", "rglob", "iterdir", "listdir", "scandir",
         "read_text", "read_bytes", "stat", "getsize", "getmtime", "disk_usage", "memory_stats", "all_steps",
         "latest_step"}
DECIDING = {"decided_on_writer", "gathered"}
WRITER_TESTS = {"is_writer", "writing"}
# Consumers whose result depends on the iteration order of their argument.
ORDERED = {"list", "tuple", "iter", "enumerate", "zip", "next", "sum", "join", "dict", "map", "filter"}
# Consumers whose result does not: a generator over a set passed straight to them is fine.
UNORDERED = {"sorted", "len", "min", "max", "any", "all", "set", "frozenset"}

ALLOWED = {
    ("core/files.py", "copy_tree"): "copies every file of a finished folder (the writer's exports, or a "
                                    "local copy of P_0 in each process); it decides nothing",
    ("bstar/phases.py", "load"): "reads a phase file the writer listed (`finished`, decided): written whole, "
                                 "renamed into place and never rewritten, so every process reads the same bytes",
    ("data/gsm8k_tfds.py", "_split_generators"): "a tfds builder callback listing the JSONL files it converts; the "
                                                 "loader then opens the split the config names, and a split "
                                                 "missing on one host is an error there",
}


def _name(node) -> str | None:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return None


def _decorated(fn) -> bool:
    return any(_name(d.func if isinstance(d, ast.Call) else d) in DECIDING for d in fn.decorator_list)


def _writer_test(test) -> bool:
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        return any(_writer_test(v) for v in test.values)
    node = test.func if isinstance(test, ast.Call) else test
    return _name(node) in WRITER_TESTS


def _raise_only(stmt: ast.If) -> bool:
    if stmt.orelse or len(stmt.body) != 1:
        return False
    only = stmt.body[0]
    if isinstance(only, ast.Raise):
        return True
    return isinstance(only, ast.Expr) and isinstance(only.value, ast.Call) and \
        (_name(only.value.func) or "").lstrip("_").startswith("fail")


def _is_set(node, set_names: set[str]) -> bool:
    if isinstance(node, (ast.Set, ast.SetComp)):
        return True
    if isinstance(node, ast.Call) and _name(node.func) in ("set", "frozenset") and isinstance(node.func, ast.Name):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.BitOr, ast.BitAnd, ast.Sub, ast.BitXor)):
        return _is_set(node.left, set_names) or _is_set(node.right, set_names)
    return isinstance(node, ast.Name) and node.id in set_names


class _Scan(ast.NodeVisitor):
    """Finds uncovered reads and set iterations in one module; records every call site's cover."""

    def __init__(self, module: str, decided: set[str]):
        self.module, self.decided = module, decided
        self.stack: list[str] = []  # enclosing function names
        self.covered = 0  # > 0 inside a covering context
        self.writer_only = 0  # > 0 inside `if is_writer:`
        self.set_names: list[set[str]] = [set()]
        self.reads: list[tuple[tuple[str, ...], int, str]] = []  # (enclosing functions, line, what)
        self.calls: list[tuple[str, bool, tuple[str, ...]]] = []  # (callee, covered, enclosing functions)
        self.writer_calls: list[tuple[int, str]] = []  # decided functions called in writer-only code
        self.order_free: set[int] = set()  # ids of comprehensions whose order cannot show

    def _function(self, node):
        deciding = _decorated(node)
        self.stack.append(node.name)
        self.covered += deciding
        self.set_names.append(set())
        self.generic_visit(node)
        self.set_names.pop()
        self.covered -= deciding
        self.stack.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = _function

    def visit_If(self, node):
        if _writer_test(node.test):
            self.visit(node.test)
            self.covered += 1
            self.writer_only += 1
            for stmt in node.body:
                self.visit(stmt)
            self.covered -= 1
            self.writer_only -= 1
            for stmt in node.orelse:
                self.visit(stmt)
            return
        if _raise_only(node):
            self.covered += 1
            self.visit(node.test)
            self.covered -= 1
            for stmt in node.body:
                self.visit(stmt)
            return
        self.generic_visit(node)

    def visit_Assign(self, node):
        if _is_set(node.value, self.set_names[-1]):
            self.set_names[-1].update(t.id for t in node.targets if isinstance(t, ast.Name))
        self.generic_visit(node)

    def visit_AnnAssign(self, node):
        if node.value is not None and _is_set(node.value, self.set_names[-1]) and isinstance(node.target, ast.Name):
            self.set_names[-1].add(node.target.id)
        self.generic_visit(node)

    def _set_iteration(self, node, what: str):
        if _is_set(node, self.set_names[-1]) and not self.covered:
            self.reads.append((tuple(self.stack), node.lineno, f"iterates a set ({what})"))

    def visit_For(self, node):
        self._set_iteration(node.iter, "for loop")
        self.generic_visit(node)

    def _comprehension(self, node):
        if id(node) not in self.order_free and not isinstance(node, ast.SetComp):
            for gen in node.generators:
                self._set_iteration(gen.iter, "comprehension")
        self.generic_visit(node)

    visit_ListComp = visit_GeneratorExp = visit_DictComp = visit_SetComp = _comprehension

    def visit_Call(self, node):
        name = _name(node.func)
        if name in UNORDERED and isinstance(node.func, ast.Name):
            self.order_free.update(id(a) for a in node.args if isinstance(a, (ast.GeneratorExp, ast.ListComp)))
        if name is not None:
            self.calls.append((name, bool(self.covered), tuple(self.stack)))
            if self.writer_only and name in self.decided:
                self.writer_calls.append((node.lineno, name))
            read = (isinstance(node.func, ast.Attribute) and name in READS) or \
                   (name.startswith("latest_") and name not in self.decided)
            if read and not self.covered:
                self.reads.append((tuple(self.stack), node.lineno, f"{name}()"))
            if name in ORDERED and node.args and not self.covered:
                self._set_iteration(node.args[0], f"{name}()")
        self.generic_visit(node)


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if not rel.startswith(EXCLUDED) and rel not in EXCLUDED:
            out[rel] = ast.parse(path.read_text(), filename=str(path))
    return out


def _decided_names(trees) -> set[str]:
    return {n.name for t in trees for n in ast.walk(t)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and _decorated(n)}


def check(modules: dict[str, ast.Module]) -> list[str]:
    """One line per uncovered read (module:line function: what) and per decided call in writer-only code."""
    decided = _decided_names(modules.values())
    scans = {m: _Scan(m, decided) for m in modules}
    for m, scan in scans.items():
        scan.visit(modules[m])
    calls = [(name, ok, m, chain) for m, s in scans.items() for name, ok, chain in s.calls]
    # A function is covered when every call of it in the package is covered (to a fixed point).
    covered_fns: set[tuple[str, str]] = set(ALLOWED)
    defined = {(m, n.name) for m, t in modules.items() for n in ast.walk(t)
               if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}

    def inside(m, chain, callee=None) -> bool:
        return any((m, f) in covered_fns and f != callee for f in chain)

    by_name: dict[str, list] = {}
    for name, ok, cm, chain in calls:
        by_name.setdefault(name, []).append((ok, cm, chain))
    changed = True
    while changed:
        changed = False
        for m, fn in sorted(defined - covered_fns):
            sites = by_name.get(fn, [])
            if sites and all(ok or inside(cm, chain, fn) for ok, cm, chain in sites):
                covered_fns.add((m, fn))
                changed = True
    problems = []
    for m, scan in scans.items():
        for chain, line, what in scan.reads:
            if not inside(m, chain):
                problems.append(f"bstar_jax/{m}:{line} {'.'.join(chain) or '<module>'}: {what} outside a "
                                f"decided function")
        for line, name in scan.writer_calls:
            problems.append(f"bstar_jax/{m}:{line}: {name}() (decided: every process must call it) inside "
                            f"writer-only code")
    return problems


def test_every_storage_or_host_read_is_decided_once():
    problems = check(_modules())
    assert not problems, "\n".join(problems)


def test_the_allowed_exceptions_still_exist():
    modules = _modules()
    for (m, fn), _ in ALLOWED.items():
        assert any(isinstance(n, ast.FunctionDef) and n.name == fn for n in ast.walk(modules[m])), (m, fn)


# ----------------------------------------------------------------------------- the checker itself

def _check_source(source: str) -> list[str]:
    return check({"snippet.py": ast.parse(textwrap.dedent(source))})


def test_the_checker_flags_a_marker_read_every_process_takes():
    """The export race: each process read the marker itself, one skipped the barrier."""
    problems = _check_source("""
        def export_policy(folder, iteration):
            if exported_iteration(folder) == iteration:
                return False
            distributed.barrier("export")

        def exported_iteration(folder):
            return int((folder / MARKER).read_text())
    """)
    assert len(problems) == 1 and "read_text()" in problems[0] and "exported_iteration" in problems[0]


def test_the_checker_accepts_the_decided_and_the_writer_only_forms():
    assert _check_source("""
        @distributed.decided_on_writer
        def exported_iteration(folder):
            return int((folder / MARKER).read_text())

        def export(folder):
            if exported_iteration(folder) == 1:
                return
            if distributed.is_writer():
                if folder.exists():
                    folder.rmtree()
            if not folder.is_dir():
                raise OSError("gone")
            distributed.barrier("x")
    """) == []


def test_the_checker_flags_set_order_memory_stats_and_latest():
    problems = _check_source("""
        def plan(names, device, ckpt):
            seen = set(names)
            for n in seen:
                print(n)
            order = list({n.upper() for n in names})
            fine = sorted(set(names))
            rows = device.memory_stats()["bytes_limit"]
            return ckpt.latest_iteration()
    """)
    found = [p.split(": ", 1)[1].removesuffix(" outside a decided function") for p in problems]
    assert found == ["iterates a set (for loop)", "iterates a set (list())", "memory_stats()",
                     "latest_iteration()"], problems


def test_the_checker_flags_a_decided_call_in_writer_only_code():
    problems = _check_source("""
        @distributed.decided_on_writer
        def cached(folder):
            return folder.exists()

        def save(folder):
            if distributed.is_writer():
                cached(folder)
    """)
    assert len(problems) == 1 and "writer-only" in problems[0]


def test_a_helper_called_only_from_decided_code_is_covered_and_one_called_elsewhere_is_not():
    source = """
        def _listing(folder):
            return sorted(folder.iterdir())

        @distributed.decided_on_writer
        def count(folder):
            return len(_listing(folder))
    """
    assert _check_source(source) == []
    problems = _check_source(source + """
        def other(folder):
            return _listing(folder)
    """)
    assert len(problems) == 1 and "iterdir()" in problems[0]
