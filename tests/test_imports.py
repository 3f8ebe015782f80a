"""The package's import graph: no cycles, and no module imports one from a higher layer."""
import ast
import os
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "bstar_jax"

# Lowest first. A module belongs to the longest prefix listed; imports within a layer are free.
LAYERS = [
    ("ground", ["errors", "mesh", "distributed", "models", "tokenizer"]),
    ("data", ["data", "batching"]),
    ("sampling", ["sampling", "continuous", "sample_grid"]),
    ("rewards", ["rewards"]),
    ("metrics", ["metrics", "balance"]),
    ("training", ["trainer", "sft", "variants", "rewards.prm_train", "hbm"]),
    ("outputs", ["checkpoint", "report", "stats", "comparisons", "export", "run_record", "config_check"]),
    ("algorithm", ["warmstart", "prm_phase", "rollout", "evaluation", "streams", "loop", "tpu_fit", "cli"]),
]

# Known upward edges in modules being rewritten elsewhere; each one is to be removed, not added to.
ALLOWED: set[tuple[str, str]] = set()  # known upward edges (none)


def modules() -> dict[str, pathlib.Path]:
    """Dotted names relative to the package ("loop", "rewards.prm", "rewards") -> file."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            out[".".join(parts)] = path
    return out


def imports(path: pathlib.Path, known) -> set[str]:
    """Package modules `path` imports (anywhere in the file, function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import sub` imports the submodule; `from pkg import name` the package
            names = [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if not name.startswith("bstar_jax."):
                continue
            name = name[len("bstar_jax."):]
            while name and name not in known:  # `from pkg import function` -> pkg
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def layer_of(module: str) -> int:
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    assert best is not None, f"bstar_jax.{module} has no layer: add it to LAYERS in {__file__}"
    return best


def graph():
    known = modules()
    return {m: {d for d in imports(p, known) if d != m} for m, p in known.items()}


def test_every_module_has_a_layer():
    for module in modules():
        layer_of(module)


def test_no_import_from_a_higher_layer():
    bad = []
    for module, deps in graph().items():
        for dep in deps:
            if layer_of(dep) > layer_of(module) and (module, dep) not in ALLOWED:
                bad.append(f"{module} ({LAYERS[layer_of(module)][0]}) imports {dep} ({LAYERS[layer_of(dep)][0]})")
    assert not bad, "\n".join(sorted(bad))


def test_allowed_exceptions_still_exist():
    """An allowed upward edge that is gone must leave the list."""
    g = graph()
    stale = [edge for edge in ALLOWED if edge[1] not in g.get(edge[0], set())]
    assert not stale, stale


def test_no_cycles():
    g = graph()
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(module, stack):
        state[module] = 1
        for dep in sorted(g.get(module, ())):
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(dep):] + [dep]))
            if dep not in state:
                visit(dep, stack + [dep])
        state[module] = 2

    for module in sorted(g):
        if module not in state:
            visit(module, [module])


def test_the_graph_is_read():
    g = graph()
    assert "rollout" in g["loop"] and "streams" in g["loop"] and "mesh" in g["metrics"]
    assert os.path.basename(str(PACKAGE)) == "bstar_jax"
