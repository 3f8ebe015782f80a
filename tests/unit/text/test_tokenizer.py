"""Tokenizer loading, local BPE training and encoding prompts and SFT examples."""
import pytest
from transformers import AutoTokenizer

from bstar_jax.text import format as fmt
from bstar_jax.text import tokenizer as tk

TEXTS = [
    fmt.format_prompt("Ann buys 3 pens at 4 each. How much?")
    + fmt.format_response(["Pens cost <<3*4=12>>12.", "So the total is 12."], "12"),
    "Déjà vu: 2 + 2 = 4,  twice .\tTabs\n\n\nand   spaces 😀",
] * 20


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("bpe")
    tk.train_bpe(TEXTS, 300, out)
    return out


def test_bpe_trains_saves_and_reloads_offline(bpe_dir):
    tok = AutoTokenizer.from_pretrained(str(bpe_dir))  # HF_HUB_OFFLINE=1 (conftest)
    assert len(tok) == 300
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    same = tk.load_tokenizer(bpe_dir)
    for text in TEXTS[:2] + ["\n\n", "# Answer\n\n", "x\n\n\n\ny", "  lead and trail  "]:
        ids = tok.encode(text, add_special_tokens=False)
        assert tok.decode(ids) == text
        assert same.encode(text, add_special_tokens=False) == ids
    # merges were learned: the training text compresses below one token per byte
    assert len(tok.encode(TEXTS[0], add_special_tokens=False)) < 0.7 * len(TEXTS[0].encode())


def test_bpe_spells_numbers_digit_by_digit(tmp_path):
    # "20" is frequent enough to be merged by plain BPE; the digit pre-tokenizer forbids it.
    tok = tk.train_bpe(["cost <<20*20=400>>400 total 2020"] * 50, 300, tmp_path)
    pieces = [tok.decode([i]) for i in tok.encode("<<21+20=41>>41", add_special_tokens=False)]
    assert pieces == ["<<", "2", "1", "+", "2", "0", "=", "4", "1", ">>", "4", "1"]


def test_bpe_rejects_a_vocab_smaller_than_the_bytes(tmp_path):
    with pytest.raises(ValueError, match="vocab_size"):
        tk.train_bpe(TEXTS, 200, tmp_path)


def test_encode_adds_bos_and_eos(bpe_dir):
    tok = tk.load_tokenizer(bpe_dir)
    prompt = fmt.format_prompt("What is 2+3?")
    response = fmt.format_response(["<<2+3=5>>5."], "5")
    (p_ids,) = tk.encode_prompts(tok, ["What is 2+3?"])
    assert p_ids[0] == tok.bos_token_id and tok.decode(p_ids[1:]) == prompt
    ex_prompt, target = tk.encode_example(tok, prompt, response)
    assert ex_prompt == p_ids
    assert target[-1] == tok.eos_token_id and tok.decode(target[:-1]) == response
    assert tok.eos_token_id not in target[:-1]


def test_load_tokenizer_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tk.load_tokenizer(tmp_path / "nope")
    with pytest.raises(OSError, match="hub is unreachable.*local folder"):
        tk.load_tokenizer("no-such-org/no-such-model")
    with pytest.raises(KeyError, match="smollm2-135m"):
        tk.embedded_gguf_path("gpt-17")


def test_embedded_smollm2_gguf_tokenizer_loads_offline():
    path = tk.embedded_gguf_path("smollm2-135m")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 10_000_000
    tok = tk.load_tokenizer("smollm2-135m")
    assert len(tok) == 49152 and tok.eos_token_id is not None
    text = fmt.format_prompt("Tom has 3 apples.") + fmt.format_response(["<<3+4=7>>7."], "7")
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text
    assert tok.encode("Hello", add_special_tokens=False) == [19556]  # SmolLM2's own vocabulary
