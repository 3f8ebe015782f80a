"""GSM-Symbolic problems generated offline by the `reasoning-gym` package.

`reasoning_gym.create_dataset("gsm_symbolic", size=n, seed=s)` instantiates GSM8K templates.
Each item has `question`, `answer` (the canonical number) and `metadata["answer_cot"]`, a worked
solution in GSM8K format (one line per step, last line `#### N`) but WITHOUT `<<a*b=c>>`
calculator tags, so the tag-based diversity count finds no equations in these references.
Item i depends only on (seed, i), so splits are consecutive index ranges of one seed, with
repeated questions skipped (templates do repeat now and then).
"""
from __future__ import annotations

from bstar_jax.text import format as fmt
from bstar_jax.data.records import DataError, Example

_INSTRUCTION = " Give the result as your final answer. Do not include units."
SPLIT_ORDER = ("test", "dev", "train")  # test first: it stays fixed when n_train changes


def _same_number(a: str, b: str) -> bool:
    try:
        return float(a.replace(",", "")) == float(b.replace(",", ""))
    except ValueError:
        return a.strip() == b.strip()


def symbolic_example(item: dict, index: int, seed: int, *, keep_instruction: bool = False) -> Example:
    """Convert one reasoning-gym GSM-Symbolic item; its own answer is kept, never recomputed."""
    where = f"reasoning_gym gsm_symbolic(seed={seed})[{index}]"
    cot = item.get("metadata", {}).get("answer_cot")
    answer = str(item.get("answer", "")).strip()
    if not isinstance(cot, str) or "####" not in cot or not answer:
        raise DataError(f"{where}: item has no worked solution ending '#### N' or no answer")
    work, _, final = cot.rpartition("####")
    if not _same_number(final.strip(), answer):  # "8.0" vs "8" is fine; anything else is not
        raise DataError(f"{where}: solution ends with {final.strip()!r} but answer is {answer!r}")
    question = item["question"]
    if not keep_instruction and question.endswith(_INSTRUCTION):
        question = question[: -len(_INSTRUCTION)]
    steps = [line.strip() for line in work.splitlines() if line.strip()]
    return Example(id=f"gsm_symbolic-{seed}-{index}", question=question.strip(),
                   solution=fmt.format_response(steps, answer), answer=answer,
                   task="gsm8k", meta=(("source_index", str(index)),))


def make_symbolic_splits(seed: int = 0, n_train: int = 0, n_dev: int = 0, n_test: int = 100, *,
                         keep_instruction: bool = False) -> dict[str, list[Example]]:
    """Disjoint GSM-Symbolic splits {"train", "dev", "test"} from one reasoning-gym seed.

    Items are taken in index order, test first, then dev, then train; an item whose question
    already appeared is skipped, so no question is in two splits.
    """
    import reasoning_gym  # ~1 s import; only when asked for

    sizes = {"train": n_train, "dev": n_dev, "test": n_test}
    if min(sizes.values()) < 0:
        raise ValueError(f"split sizes must be >= 0, got {sizes}")
    total = sum(sizes.values())
    # Task choices are a prefix-stable random.choices stream: a bigger size keeps items 0..n-1.
    ds = reasoning_gym.create_dataset("gsm_symbolic", size=max(1, 2 * total + 64), seed=seed)
    seen, out, index = set(), {}, 0
    for split in SPLIT_ORDER:
        out[split] = []
        while len(out[split]) < sizes[split]:
            if index >= len(ds):
                raise DataError(f"gsm_symbolic(seed={seed}): too many repeated questions for {sizes}")
            ex = symbolic_example(ds[index], index, seed, keep_instruction=keep_instruction)
            index += 1
            if ex.question not in seen:
                seen.add(ex.question)
                out[split].append(ex)
    return out
