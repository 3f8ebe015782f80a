"""The named random streams: new names keep the old streams' keys, plain-int seeds come from a
stream, and no module but core/streams.py turns a number into randomness (an AST check of the
package), the run's seed entering only through `Streams`."""
import ast
import pathlib
import random

import jax
import numpy as np
import pytest

from bstar_jax.core import streams

PACKAGE = pathlib.Path(__file__).resolve().parents[3] / "bstar_jax"
HOME = PACKAGE / "core" / "streams.py"
# Calls that make randomness from a number (or draw from a global generator): a root key, a Python,
# NumPy or torch generator, NNX's Rngs. Prefixes end with ".": every call under them.
SEEDING = ("jax.random.key", "jax.random.PRNGKey", "flax.nnx.Rngs", "random.", "numpy.random.", "torch.manual_seed",
           "torch.Generator")
# Abstract evaluation: a key made inside draws nothing (a dtype or shape probe).
ABSTRACT = ("jax.eval_shape", "flax.nnx.eval_shape")


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> dotted module path, from every import of a module (function-level ones too)."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                out[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                out[a.asname or a.name] = f"{node.module}.{a.name}"
    return out


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([aliases.get(node.id, node.id)] + parts[::-1])


def seeding_calls(source: str) -> list[tuple[int, str]]:
    """(line, dotted name) of every call in `source` that makes randomness from a number, outside
    abstract evaluation; a call given only what core/streams.py made (`nnx.Rngs(streams.as_key(rng))`)
    makes none."""
    tree = ast.parse(source)
    aliases = _aliases(tree)
    abstract = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _dotted(node.func, aliases) in ABSTRACT:
            abstract.update(id(n) for arg in node.args for n in ast.walk(arg))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or id(node) in abstract:
            continue
        name = _dotted(node.func, aliases)
        from_streams = node.args and all(isinstance(arg, ast.Call) and (_dotted(arg.func, aliases) or "").startswith(
            "bstar_jax.core.streams.") for arg in node.args)
        if name and not from_streams and any(name.startswith(s) if s.endswith(".") else name == s for s in SEEDING):
            found.append((node.lineno, name))
    return found


def seed_reads(source: str) -> list[int]:
    """Lines reading a `.seed` attribute anywhere but as the argument of `Streams(...)` (a method
    call `streams.seed(name)` is a draw from a stream, not a read)."""
    tree = ast.parse(source)
    allowed = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            allowed.add(id(node.func))
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name == "Streams":
                allowed.update(id(n) for arg in node.args for n in ast.walk(arg))
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr == "seed" and id(node) not in allowed]


def test_the_checks_see_what_they_look_for():
    source = "\n".join([
        "import random", "import numpy as np", "import jax", "from jax import random as jr", "from flax import nnx",
        "a = random.Random(seed)", "b = np.random.default_rng(3)", "c = jax.random.key(config.seed)",
        "d = jr.PRNGKey(0)", "e = nnx.Rngs(seed)", "random.shuffle(xs)",
        "f = jax.eval_shape(lambda: jax.random.key(0)).dtype", "g = rng.sample(xs, 2)",
        "h = jax.random.split(key)", "s = streams.Streams(int(config.seed))", "t = streams.seed('data')",
        "from bstar_jax.core import streams", "u = nnx.Rngs(streams.as_key(rng))", "v = nnx.Rngs(other.as_key(rng))",
    ])
    assert [line for line, _ in seeding_calls(source)] == [6, 7, 8, 9, 10, 11, 19]
    assert seed_reads(source) == [8]


def test_only_core_streams_turns_a_number_into_randomness():
    bad = [f"{path.relative_to(PACKAGE.parent)}:{line}: {name}" for path in sorted(PACKAGE.rglob("*.py"))
           if path != HOME for line, name in seeding_calls(path.read_text())]
    assert not bad, "randomness made outside core/streams.py (draw from a named stream):\n" + "\n".join(bad)


def test_the_seed_enters_only_through_streams():
    bad = [f"{path.relative_to(PACKAGE.parent)}:{line}" for path in sorted(PACKAGE.rglob("*.py"))
           for line in seed_reads(path.read_text())]
    assert not bad, "the seed read outside Streams(...) (draw from a named stream):\n" + "\n".join(bad)


def test_new_names_keep_the_keys_of_the_names_before_them():
    """The first eight streams are those a split of the root key into eight gave (runs made
    before `data`, `init` and `warm_start_data` were added draw the same there)."""
    old = jax.random.split(jax.random.key(5), 8)
    s = streams.Streams(5)
    for i, name in enumerate(streams.NAMES[:8]):
        assert np.array_equal(jax.random.key_data(s.key(name)), jax.random.key_data(old[i])), name
    assert len(set(streams.NAMES)) == len(streams.NAMES)


def test_a_plain_seed_is_a_pure_function_of_seed_and_name():
    a, b = streams.Streams(0), streams.Streams(1)
    seeds = {name: a.seed(name) for name in streams.NAMES}
    assert all(isinstance(v, int) and 0 <= v < 2**32 for v in seeds.values())
    assert len(set(seeds.values())) == len(seeds)  # a name of its own, a seed of its own
    assert streams.Streams(0).seed("data") == seeds["data"] != b.seed("data")
    assert a.seed("sample", run=3, iteration=2) == streams.Streams(0).seed("sample", run=3, iteration=2)
    assert a.seed("sample", run=3, iteration=2) != a.seed("sample", run=3, iteration=1)
    with pytest.raises(ValueError, match="unknown random stream"):
        a.seed("nope")


def test_as_key_and_python_random():
    key = jax.random.key(3)
    for rng in (3, np.int64(3), key, jax.random.key_data(key), np.asarray(jax.random.key_data(key))):
        assert np.array_equal(jax.random.key_data(streams.as_key(rng)), jax.random.key_data(key))
    draws = [streams.python_random("bstar-synthetic", 7, "test").random() for _ in range(2)]
    assert draws[0] == draws[1] == random.Random("bstar-synthetic:7:test").random()
    assert streams.python_random("bstar-synthetic", 7, "dev").random() != draws[0]
