"""The package's import graph: folders are layers, imports run one way, no cycles, no private
names imported across modules."""
import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "bstar_jax"
README = PACKAGE.parent / "README.md"

# Ground floor first. A module may import its own folder and any folder below it.
LAYERS = ["core", "models", "text", "data", "generate", "train", "rewards", "config", "analysis", "bstar", "cli"]
ENTRY = "(entry)"  # bstar_jax/__init__.py and the `python -m bstar_jax.<command>` modules: above every folder


def modules() -> dict[str, pathlib.Path]:
    """Dotted names relative to the package ("bstar.experiment", "rewards.prm", "rewards") -> file."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imported(path: pathlib.Path, known) -> list[tuple[str, str | None]]:
    """(package module, imported name or None) for every package import in `path`, function-level
    imports included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            pairs = [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            pairs = [(f"{node.module}.{a.name}", a.name) for a in node.names]
        else:
            continue
        for name, leaf in pairs:
            if name != "bstar_jax" and not name.startswith("bstar_jax."):
                continue
            name = name[len("bstar_jax."):] if name.startswith("bstar_jax.") else ""
            if name in known:  # a module: `from pkg import module`
                found.append((name, None))
                continue
            while name and name not in known:  # `from pkg.module import function` -> pkg.module
                name = name.rpartition(".")[0]
            found.append((name, leaf))
    return found


def folder_of(module: str) -> str:
    head = module.split(".")[0]
    return head if head in LAYERS and "." in module or head in LAYERS and (PACKAGE / head).is_dir() else ENTRY


def rank(module: str) -> int:
    folder = folder_of(module)
    return len(LAYERS) if folder == ENTRY else LAYERS.index(folder)


def graph():
    known = modules()
    return {m: {d for d, _ in imported(p, known) if d != m} for m, p in known.items()}


def test_every_folder_is_a_layer_and_every_module_is_in_one():
    folders = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert folders == sorted(LAYERS)
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert top == ["__init__", "report", "tpu_fit"], "a module at the package root: move it into its layer's folder"


def test_no_import_from_a_higher_layer():
    bad = [f"bstar_jax.{m} ({folder_of(m)}) imports bstar_jax.{d} ({folder_of(d)})"
           for m, deps in graph().items() for d in deps if rank(d) > rank(m)]
    assert not bad, "\n".join(sorted(bad))


def test_no_private_name_crosses_modules():
    known = modules()
    bad = [f"bstar_jax.{m} imports {leaf} from bstar_jax.{d}"
           for m, p in known.items() for d, leaf in imported(p, known)
           if leaf and leaf.startswith("_") and d != m]
    assert not bad, "\n".join(sorted(bad))


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
    assert "bstar.rollout" in g["bstar.iteration"] and "core.mesh" in g["bstar.metrics"]
    assert folder_of("core.mesh") == "core" and folder_of("tpu_fit") == ENTRY


def test_readme_layout_lists_the_folders_in_order():
    """README's layout block names every folder of the package, ground floor first."""
    text = README.read_text()
    block = text.split("<!-- layout -->", 1)[1].split("```", 2)[1]
    named = [line.split()[0].rstrip("/") for line in block.splitlines() if line.strip().split()[:1]
             and line.split()[0].rstrip("/") in LAYERS]
    assert named == LAYERS, f"README's layout lists {named}; the folders, ground floor first, are {LAYERS}"
