"""Loaders on small local files (good and malformed), TFDS offline, GSM-Symbolic, synthetic."""
import json
import re

import pytest

from bstar_jax import data
from bstar_jax.text import format as fmt
from bstar_jax.data import DataError, synthetic

GSM8K = [
    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many "
                 "clips in May. How many clips did Natalia sell altogether in April and May?",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 "
               "clips altogether in April and May.\n#### 72"},
    {"question": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of "
                 "babysitting. How much did she earn?",
     "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned "
               "0.2 x 50 = $<<0.2*50=10>>10.\n#### 10"},
    {"question": "A farm has 1000 hens and buys 250 more. How many hens are there?",
     "answer": "1000+250=<<1000+250=1250>>1250\n#### 1,250"},
] + [{"question": f"Tom has {i} apples and buys 3 more. How many apples does he have?",
      "answer": f"He has {i}+3=<<{i}+3={i + 3}>>{i + 3} apples.\n#### {i + 3}"} for i in range(4)]


def write_jsonl(path, rows, raw_lines=()):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r) for r in rows] + list(raw_lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------ validation


def test_bad_json_names_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", GSM8K[:2], ['{"question": "x", "answer": '])
    with pytest.raises(DataError, match=re.escape(f"{path}:3: malformed JSON")):
        data.load_gsm8k_jsonl(path)


def test_missing_field_empty_and_missing_file(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", GSM8K[:1] + [{"answer": "#### 3"}])
    with pytest.raises(DataError, match=re.escape(f'{path}:2: missing field "question"')):
        data.load_gsm8k_jsonl(path)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    with pytest.raises(DataError, match="empty file"):
        data.load_gsm8k_jsonl(empty)
    with pytest.raises(DataError, match="file not found"):
        data.load_gsm8k_jsonl(tmp_path / "absent.jsonl")
    no_final = write_jsonl(tmp_path / "t.jsonl", [{"question": "q", "answer": "1+1=2"}])
    with pytest.raises(DataError, match=re.escape(f"{no_final}:1:") + ".*####"):
        data.load_gsm8k_jsonl(no_final)
    not_obj = write_jsonl(tmp_path / "l.jsonl", [GSM8K[0], [1, 2]])
    with pytest.raises(DataError, match=re.escape(f"{not_obj}:2: expected a JSON object")):
        data.load_gsm8k_jsonl(not_obj)


# ------------------------------------------------------------------ GSM8K


def test_gsm8k_jsonl_to_step_format(tmp_path):
    examples = data.load_split("gsm8k_jsonl", "train", data_dir=write_jsonl(tmp_path / "train.jsonl", GSM8K).parent)
    assert len(examples) == len(GSM8K)
    ex = examples[0]
    assert (ex.id, ex.answer, ex.task) == ("gsm8k-train-0", "72", "gsm8k")
    steps, answer = fmt.split_steps(ex.solution)
    assert answer == "72" and len(steps) == 2
    assert "<<48/2=24>>" in steps[0] and "<<48+24=72>>" in steps[1]  # calculator tags kept
    assert ex.solution.endswith(fmt.ANSWER_MARKER + "72")
    assert examples[2].answer == "1250"  # thousands separator dropped


def test_gsm8k_tfds_offline_array_record_round_trip(tmp_path):
    jsonl_dir = tmp_path / "jsonl"
    write_jsonl(jsonl_dir / "train.jsonl", GSM8K)
    write_jsonl(jsonl_dir / "test.jsonl", GSM8K[:3])
    data_dir = tmp_path / "tfds"
    for split in ("train", "test"):
        from_tfds = data.load_split("gsm8k_tfds", split, jsonl_dir=jsonl_dir, data_dir=data_dir)
        assert from_tfds == data.load_gsm8k_jsonl(jsonl_dir / f"{split}.jsonl")
    shards = list((data_dir / "gsm8k_local").glob("*/gsm8k_local-train.array_record*"))
    assert shards, "array_record shards were written"
    # read back with tfds.data_source alone, download=False, no tensorflow installed
    import tensorflow_datasets as tfds
    from bstar_jax.data.gsm8k_tfds import examples_from_source
    source = tfds.data_source("gsm8k_local", split="test", data_dir=str(data_dir), download=False,
                              builder_kwargs={"file_format": "array_record"})
    assert examples_from_source(source, "test") == data.load_gsm8k_jsonl(jsonl_dir / "test.jsonl")
    with pytest.raises(DataError, match="gsm8k_local.*dev"):
        data.load_split("gsm8k_tfds", "dev", jsonl_dir=jsonl_dir, data_dir=data_dir)


def test_gsm8k_tfds_unprepared_says_how_to_build_offline(tmp_path):
    with pytest.raises(DataError, match="tfds gsm8k.*jsonl_dir="):
        data.load_split("gsm8k_tfds", "test", data_dir=tmp_path, download=False)


def test_gsm8k_tfds_offline_build_reports_bad_lines(tmp_path):
    write_jsonl(tmp_path / "jsonl" / "train.jsonl", GSM8K[:2], ["not json"])
    with pytest.raises(DataError, match=r"train\.jsonl:3: malformed JSON"):
        data.load_split("gsm8k_tfds", "train", jsonl_dir=tmp_path / "jsonl", data_dir=tmp_path / "tfds")


# ------------------------------------------------------------------ MATH and ARC


def test_math_jsonl(tmp_path):
    rows = [
        {"problem": "What is $\\frac{1}{2}+\\frac{1}{3}$?", "level": "Level 2", "type": "Algebra",
         "solution": "We have $\\frac{1}{2}+\\frac{1}{3} = \\frac{3}{6}+\\frac{2}{6}$. Adding gives "
                     "$\\boxed{\\frac{5}{6}}$."},
        {"problem": "Find the set.", "solution": "Note $x=3.5$ is a root. So the set is\n\n"
                                                 "$\\boxed{\\{1, 2\\}}$."},
        {"query": "What is 1+1?", "output": "1+1=2.\n\n# Answer\n\n2"},
        {"problem": "p", "solution": "It is \\boxed 7."},
    ]
    ex = data.load_split("math_jsonl", "test", path=write_jsonl(tmp_path / "m.jsonl", rows))
    steps, answer = fmt.split_steps(ex[0].solution)
    assert answer == ex[0].answer == "\\frac{5}{6}" and len(steps) == 2  # split at ". A" not in $..$
    assert ("level", "Level 2") in ex[0].meta and ex[0].task == "math"
    assert ex[1].answer == "\\{1, 2\\}"  # balanced braces, "3.5" inside math not a sentence end
    assert fmt.split_steps(ex[1].solution)[0][0] == "Note $x=3.5$ is a root."
    assert (ex[2].question, ex[2].answer) == ("What is 1+1?", "2")
    assert ex[3].answer == "7"
    as_list = tmp_path / "math_format.json"  # the released B-STaR SFT data is a JSON list
    as_list.write_text(json.dumps(rows[2:3]))
    assert data.load_math_jsonl(as_list)[0].solution == rows[2]["output"]
    as_list.write_text('[{"query": "q",\n "output": }]')
    with pytest.raises(DataError, match=re.escape(f"{as_list}:2: malformed JSON")):
        data.load_math_jsonl(as_list)
    bad = write_jsonl(tmp_path / "bad.jsonl", rows[:1] + [{"problem": "p", "solution": "no box"}])
    with pytest.raises(DataError, match=re.escape(f"{bad}:2:") + ".*boxed"):
        data.load_math_jsonl(bad)


def test_arc_both_shapes(tmp_path):
    hf = {"id": "Mercury_1", "question": "Which is a gas?", "answerKey": "B",
          "choices": {"text": ["rock", "steam", "ice"], "label": ["A", "B", "C"]}}
    official = {"id": "Mercury_2", "answerKey": "1",
                "question": {"stem": "Pick one.", "choices": [{"text": "x", "label": "1"},
                                                              {"text": "y", "label": "2"}]}}
    ex = data.load_split("arc_jsonl", "test", path=write_jsonl(tmp_path / "arc.jsonl", [hf, official]))
    assert ex[0].question == "Which is a gas?\n(A) rock\n(B) steam\n(C) ice"
    assert (ex[0].id, ex[0].answer, ex[0].task) == ("Mercury_1", "B", "arc")
    assert fmt.split_steps(ex[0].solution)[1] == "B"
    assert ex[1].question == "Pick one.\n(1) x\n(2) y" and ex[1].answer == "1"
    bad = write_jsonl(tmp_path / "bad.jsonl", [dict(hf, answerKey="D")])
    with pytest.raises(DataError, match=re.escape(f"{bad}:1:") + '.*answerKey "D"'):
        data.load_arc_jsonl(bad)


# ------------------------------------------------------------------ GSM-Symbolic


def test_gsm_symbolic_offline():
    splits = data.make_symbolic_splits(seed=3, n_train=6, n_dev=2, n_test=4)
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [6, 2, 4]
    questions = [e.question for s in splits.values() for e in s]
    assert len(set(questions)) == len(questions)
    for ex in splits["train"] + splits["dev"] + splits["test"]:
        steps, answer = fmt.split_steps(ex.solution)
        assert answer == ex.answer and steps and "####" not in ex.solution
        assert not ex.question.endswith("Do not include units.")
    again = data.load_split("gsm_symbolic", "test", seed=3, n_test=4)
    assert again == splits["test"]  # test split independent of n_train / n_dev


# ------------------------------------------------------------------ synthetic


def _check_arithmetic(ex):
    """Recompute the answer from the question text, and every <<a op b=c>> tag."""
    m = re.fullmatch(r"(\w+) buys (.+)\. \1 (?:pays with (\d+)\..*|has a coupon for (\d+) off\..*)",
                     ex.question)
    total = sum(int(q) * int(p) for q, p in re.findall(r"(\d+) \w+ at (\d+) each", m.group(2)))
    expected = int(m.group(3)) - total if m.group(3) else total - int(m.group(4))
    assert expected > 0 and ex.answer == str(expected)
    assert fmt.split_steps(ex.solution)[1] == ex.answer
    for a, op, b, c in re.findall(r"<<(\d+)([*+-])(\d+)=(\d+)>>", ex.solution):
        assert {"*": int(a) * int(b), "+": int(a) + int(b), "-": int(a) - int(b)}[op] == int(c)
    return total


def test_synthetic_splits_deterministic_disjoint_correct():
    a = data.make_splits(seed=5, n_train=200, n_dev=30, n_test=30, difficulty=2)
    assert a == data.make_splits(seed=5, n_train=200, n_dev=30, n_test=30, difficulty=2)
    assert a["train"] != data.make_splits(seed=6, n_train=200, n_dev=30, n_test=30)["train"]
    assert data.load_split("synthetic", "test", seed=5, n_train=10, n_dev=30, n_test=30) == a["test"]
    seen = [set(e.question for e in a[s]) for s in ("train", "dev", "test")]
    assert [len(s) for s in seen] == [200, 30, 30]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    for ex in a["train"] + a["dev"] + a["test"]:
        _check_arithmetic(ex)
        steps, _ = fmt.split_steps(ex.solution)
        assert len(steps) == 4  # difficulty 2: three items + the final step
    for difficulty, n_steps in ((1, 3), (3, 5)):
        ex = data.make_splits(0, 3, 0, 0, difficulty)["train"][0]
        _check_arithmetic(ex)
        assert len(fmt.split_steps(ex.solution)[0]) == n_steps
    kinds = {"change" if "pays with" in e.question else "coupon" for e in a["train"]}
    assert kinds == {"change", "coupon"}


def test_synthetic_alternative_solutions():
    ex = data.make_splits(seed=1, n_train=5, n_dev=0, n_test=0, difficulty=2)["train"][0]
    alts = data.alternative_solutions(ex)
    assert alts[0] == ex.solution and len(alts) == len(set(alts)) > 6
    equations = lambda s: re.findall(r"<<([^<>]*)>>", s)
    for alt in alts:
        assert fmt.split_steps(alt)[1] == ex.answer
        _check_arithmetic(data.Example(ex.id, ex.question, alt, ex.answer, ex.task))
    orders = {tuple(equations(s)) for s in alts}
    assert len(orders) == len(alts)  # the equation sequences differ, not only the wording
    assert len({frozenset(equations(s)) for s in alts}) > 1  # distinct equations, not reorders only
    three = data.alternative_solutions(ex.question, n=3, seed=0)
    assert len(three) == 3 and three == data.alternative_solutions(ex.question, n=3, seed=0)
    mix = data.with_alternatives([ex], 3)
    assert [m.id for m in mix] == [f"{ex.id}/0", f"{ex.id}/1", f"{ex.id}/2"]
    assert len({m.solution for m in mix}) == 3
    with pytest.raises(ValueError):
        synthetic.parse_question("What is 2+2?")


def test_dispatcher():
    spec = {"name": "synthetic", "split": "dev", "seed": 0, "n_train": 4, "n_dev": 2, "n_test": 2}
    assert len(data.load(spec)) == 2
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load_split("imagenet", "train")
    with pytest.raises(ValueError, match="split must be one of"):
        data.load_split("synthetic", "validation")
    with pytest.raises(ValueError, match="exactly one of"):
        data.load_split("math_jsonl", "test")
