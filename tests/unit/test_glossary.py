"""docs/glossary.md is true: every shape-suffixed name in the package (`logits_BxLxV`, `s_xY`,
`hidden_Ax1xE`) uses only the letters its table defines."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
GLOSSARY = ROOT / "docs" / "glossary.md"
PACKAGE = ROOT / "bstar_jax"

ROW = re.compile(r"^\|\s*([A-Z])\s*\|\s*([^|]*?)\s*\|\s*$")
# A word whose tail is `_` + axes joined by `x` (an optional leading `x`: any leading axes); an
# axis is one capital letter or `1` (an axis of size one).
SHAPED = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*?_(x?(?:[A-Z]|1)(?:x(?:[A-Z]|1))*)\b")


def glossary_letters(text: str) -> dict[str, str]:
    """letter -> meaning, from the markdown table's `| X | meaning |` rows; a letter twice is an error."""
    letters: dict[str, str] = {}
    for line in text.splitlines():
        m = ROW.match(line)
        if m:
            assert m.group(1) not in letters, f"docs/glossary.md defines {m.group(1)} twice"
            letters[m.group(1)] = m.group(2)
    return letters


def shape_names(source: str):
    """(line number, name, axis letters) of each shape-suffixed name in `source`; ALL_CAPS
    constants (`ITEM_TIMEOUT_S`) and names without a capital axis (`pass_at_1`) are not shapes."""
    for number, line in enumerate(source.splitlines(), 1):
        for m in SHAPED.finditer(line):
            name, shape = m.group(0), m.group(1)
            if not re.search(r"[a-z]", name) or not re.search(r"[A-Z]", shape):
                continue
            yield number, name, [axis for axis in shape.split("x") if axis not in ("", "1")]


def unknown_letters(source: str, letters) -> list[str]:
    """`line: name (letter)` for every axis letter of `source`'s shape names missing from `letters`."""
    return [f"{number}: {name} ({axis})" for number, name, axes in shape_names(source)
            for axis in axes if axis not in letters]


def test_the_glossary_table_is_read():
    letters = glossary_letters(GLOSSARY.read_text())
    assert {"B", "L", "Q", "K", "T", "U", "A", "J"} <= set(letters)
    assert "slot" in letters["A"] and "threshold" in letters["U"]


def test_the_check_finds_names_and_flags_unknown_letters():
    source = ("logits_BxLxV = f(x)\nMAX_NEW_S = 3\npass_at_1 = 0\ns_xY = g(hidden_Ax1xE)\n"
              "text_id_QxK = 1\nbad_BxO = 2\n")
    found = [(n, name, axes) for n, name, axes in shape_names(source)]
    assert found == [(1, "logits_BxLxV", ["B", "L", "V"]), (4, "s_xY", ["Y"]), (4, "hidden_Ax1xE", ["A", "E"]),
                     (5, "text_id_QxK", ["Q", "K"]), (6, "bad_BxO", ["B", "O"])]
    assert unknown_letters(source, glossary_letters(GLOSSARY.read_text())) == ["6: bad_BxO (O)"]


def test_every_shape_name_uses_a_glossary_letter():
    letters = glossary_letters(GLOSSARY.read_text())
    bad = [f"{path.relative_to(ROOT)}:{where}" for path in sorted(PACKAGE.rglob("*.py"))
           for where in unknown_letters(path.read_text(), letters)]
    assert not bad, "shape letters missing from docs/glossary.md:\n" + "\n".join(bad)
