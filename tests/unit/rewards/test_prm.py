"""PRM: head init, step boundaries on two tokenizers, Eq. 2, training that learns, bad input."""
import numpy as np
import pytest

import jax
import jax.numpy as jnp

from bstar_jax.core import mesh as mesh_lib
from bstar_jax import models
from bstar_jax.text import tokenizer as tok_lib
from bstar_jax.text import format as fmt
from bstar_jax import rewards
from bstar_jax.rewards import prm as prm_lib
from bstar_jax.rewards import prm_train


def _tiny_cfg(vocab, tied=False, **kw):
    return models.ModelConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_layers=2,
                              num_heads=4, num_kv_heads=2, head_dim=16, max_position_embeddings=512,
                              tie_word_embeddings=tied, pad_token_id=0, eos_token_id=2, **kw)


# ----------------------------------------------------------------------------- tokenizers

def _char_bpe(texts, vocab_size):
    """A BPE with no pre-tokenizer: merges cross whitespace, e.g. ".\\n\\n" or "\\n\\nT" tokens."""
    from tokenizers import Tokenizer, decoders, models as tk_models, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(tk_models.BPE(unk_token="<unk>"))
    tok.decoder = decoders.Fuse()
    alphabet = [chr(i) for i in range(32, 127)] + ["\n"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
                                  initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>", clean_up_tokenization_spaces=False)


STEPS = ["We add 3 and 4.", "So the sum is 7 ", "Check: 7 - 4 = 3, fine.", "Thus x = 7."]
ANSWER = "7"
QUESTION = "What is 3 + 4?"


def _response(steps=STEPS, answer=ANSWER):
    return "\n\n".join(steps) + "\n\n# Answer\n\n" + answer


def _score_chars(steps, answer):
    """Independently: the character (in the response) that ends each step, then the answer."""
    chars, start = [], 0
    for s in steps:
        chars.append(start + len(s.rstrip()) - 1)
        start += len(s) + 2
    resp = _response(steps, answer)
    chars.append(len(resp.rstrip()) - 1)
    return chars


@pytest.fixture(scope="module")
def char_bpe():
    rng = np.random.default_rng(0)
    words = "we add so the sum is check fine thus then step one two end and x".split()
    corpus = [fmt.format_prompt(QUESTION)]
    for _ in range(300):
        steps = [" ".join(rng.choice(words, rng.integers(2, 6))) + rng.choice([".", ":", ""]) + " "
                 + str(rng.integers(0, 20)) + rng.choice([".", "!", ""]) for _ in range(rng.integers(1, 5))]
        corpus.append("\n\n".join(steps) + "\n\n# Answer\n\n" + str(rng.integers(0, 100)))
    return _char_bpe(corpus, 200)


@pytest.fixture(scope="module")
def smollm_tok():
    return tok_lib.load_tokenizer("smollm2-135m")


def _check_positions(tok, steps, answer, *, expect_merge=False):
    prompt = fmt.format_prompt(QUESTION)
    resp = _response(steps, answer)
    ids, positions, has_answer = prm_lib.encode_for_scoring(tok, prompt, resp)
    assert has_answer
    assert positions == rewards.step_positions(tok, prompt, resp)
    n_prompt = len(prm_lib.bos_ids(tok)) + len(tok.encode(prompt, add_special_tokens=False))
    assert ids[:n_prompt] == prm_lib.bos_ids(tok) + tok.encode(prompt, add_special_tokens=False)
    resp_ids = ids[n_prompt:]
    chars = _score_chars(steps, answer)
    assert len(positions) == len(steps) + 1
    merged = False
    for pos, c in zip(positions, chars):
        t = pos - n_prompt
        through = tok.decode(resp_ids[:t + 1])
        before = tok.decode(resp_ids[:t])
        # token t is the one that completes character c: the decoded prefix reaches c only with it
        assert through.startswith(resp[:c + 1]), (t, through[-20:], resp[:c + 1][-20:])
        assert not before.startswith(resp[:c + 1])
        merged |= "\n" in tok.decode(resp_ids[t:t + 1])
    assert positions[-1] == len(ids) - 1  # the answer's last token ends the sequence
    if expect_merge:
        assert merged, "the test tokenizer should merge a step end with its separator"
    skip = rewards.step_positions(tok, prompt, resp, skip_last_step=True)
    assert skip == positions[:-2] + positions[-1:]


def test_step_positions_char_bpe_merging_newlines(char_bpe):
    _check_positions(char_bpe, STEPS, ANSWER, expect_merge=True)


def test_step_positions_smollm2_gguf(smollm_tok):
    _check_positions(smollm_tok, STEPS, ANSWER)
    # multi-byte characters split over byte tokens: the score goes to the token completing them
    _check_positions(smollm_tok, ["Roughly 22/7 ≈", "Then π", "Done  "], "π ≈ 3.14")


def test_step_char_spans_match_split_steps():
    resp = "\n\n  a b \n\n\n\nc\n\n# Answer\n\nx\n\n# Answer\n\n  42  "
    spans, answer_char = prm_lib.step_char_spans(resp)
    steps, answer = fmt.split_steps(resp)
    assert [resp[s:e] for s, e in spans] == steps
    assert resp[answer_char] == "2" and answer == "42"
    assert prm_lib.step_char_spans("# Answer\n\n5") == ([], 10)
    assert prm_lib.step_char_spans("no answer") == ([(0, 9)], None)


# ----------------------------------------------------------------------------- head and rewards

_token_logits = jax.jit(rewards.token_logits, static_argnums=0)


@pytest.mark.parametrize("tied", [False, True])
def test_lm_head_mean_init_is_mean_of_vocab_logits(tied):
    cfg = _tiny_cfg(50, tied=tied)
    params = models.init(cfg, 0)
    prm = rewards.init_prm(cfg, params, init="lm_head_mean")
    tokens = np.random.default_rng(0).integers(0, 50, (2, 9)).astype(np.int32)
    ours = _token_logits(cfg, prm, tokens)
    official = models.forward(cfg, params, tokens).mean(-1)  # the official reward: mean over the vocab
    np.testing.assert_allclose(ours, official, rtol=1e-5, atol=1e-6)
    zero = rewards.init_prm(cfg, params, init="zero")
    assert float(jnp.abs(_token_logits(cfg, zero, tokens)).max()) == 0.0
    with pytest.raises(ValueError, match="head init"):
        rewards.init_prm(cfg, params, init="ones")


def test_step_scores_gather_and_sharded_equals_unsharded():
    cfg = _tiny_cfg(50)
    prm = rewards.init_prm(cfg, models.init(cfg, 1))
    tokens = np.random.default_rng(1).integers(0, 50, (8, 16)).astype(np.int32)
    pos = np.array([[3, 7, 15, -1]] * 8, np.int32)
    scores, mask = rewards.step_scores(cfg, prm, tokens, pos)
    full = _token_logits(cfg, prm, tokens)
    np.testing.assert_allclose(scores[:, :3], full[:, [3, 7, 15]], rtol=1e-5, atol=1e-6)
    assert mask.tolist() == [[True, True, True, False]] * 8 and float(scores[0, 3]) == 0.0
    mesh = mesh_lib.make_mesh(data=4, fsdp=2)
    sharded = rewards.shard_prm(cfg, prm, mesh)
    s2, _ = rewards.step_scores(cfg, sharded, jax.device_put(tokens, mesh_lib.batch_sharding(mesh)),
                                jax.device_put(pos, mesh_lib.batch_sharding(mesh)))
    np.testing.assert_allclose(s2, scores, rtol=1e-5, atol=1e-6)


def test_eq2_arithmetic():
    scores = np.array([[0.5, -1.0, 2.0], [3.0, 4.0, 0.0], [1.0, 1.0, 1.0]], np.float32)
    mask = np.array([[1, 1, 1], [1, 1, 0], [1, 1, 1]], bool)
    prm = rewards.prm_reward(scores, truncated=[False, False, True], mask=mask)
    np.testing.assert_allclose(prm, [-1.0, 3.0, -5.0])
    r = rewards.combined_reward([True, False, True], prm)
    np.testing.assert_allclose(r, [1 - 0.2, 0.6, 1 - 1.0])  # truncated: -5 -> -1 after /5
    np.testing.assert_allclose(rewards.combined_reward([True, False, True]), [1, 0, 1])  # answer-only
    # ragged lists; a row without any score counts as truncated
    np.testing.assert_allclose(rewards.prm_reward([[2.0, -0.5], [], [7.0]], [False, False, False]),
                               [-0.5, -5.0, 7.0])
    assert rewards.TRUNCATED_SCORE / rewards.PRM_SCALE == -1.0


def test_score_responses_defined_on_bad_text(char_bpe):
    cfg = _tiny_cfg(len(char_bpe))
    prm = rewards.init_prm(cfg, models.init(cfg, 2))
    prompt = fmt.format_prompt(QUESTION)
    good = _response()
    responses = [good, "", b"\xff\xfe\x80 bad bytes\n\n# Answer\n\n\xc3", "Step.\n\nno answer",
                 "Step.\n\n# Answer\n\n   ", None, good, "# Answer\n\n7"]
    finished = [True, True, True, True, True, True, False, True]
    out = rewards.score_responses(cfg, prm, char_bpe, [prompt] * len(responses), responses,
                                  finished=finished, batch_size=8)
    assert out.truncated.tolist() == [False, True, False, True, True, True, True, False]
    assert np.all(np.isfinite(out.prm_min))
    assert np.all(out.prm_min[out.truncated] == -5.0)
    assert out.step_scores[0].size == len(STEPS) + 1
    assert out.prm_min[0] == pytest.approx(out.step_scores[0].min())
    assert out.step_scores[7].size == 1  # no reasoning steps: the answer token only
    # same scores one by one and batched, with and without a mesh
    single = rewards.score_responses(cfg, prm, char_bpe, [prompt], [good])
    meshed = rewards.score_responses(cfg, prm, char_bpe, [prompt] * 3, [good, "x", good],
                                     mesh=mesh_lib.make_mesh(data=8))
    np.testing.assert_allclose(single.step_scores[0], out.step_scores[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(meshed.step_scores[2], out.step_scores[0], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- training

def test_record_errors(char_bpe):
    with pytest.raises(ValueError, match=r"PRM record 1 .*3 labels for 2 steps"):
        prm_train.train_prm(_tiny_cfg(len(char_bpe)), None, char_bpe,
                            [("q", ["a.", "b."], [1, 0]), ("q2", ["a.", "b."], [1, 0, 1])], prm_config(1), num_steps=1,
                            rng=jax.random.key(0))
    with pytest.raises(ValueError, match="blank line"):
        rewards.as_record(("q", ["a.\n\nb.", "c"], [1, 1]))
    with pytest.raises(ValueError, match="empty"):
        rewards.as_record(("q", ["a.", "  "], [1, 1]))
    with pytest.raises(ValueError, match=r"labels must be numbers in \[0, 1\]"):
        rewards.as_record({"input": "q", "output": ["a."], "label": [2]})
    with pytest.raises(ValueError, match="missing field"):
        rewards.as_record({"input": "q", "output": ["a."]})
    rec = rewards.as_record({"input": "q", "output": ["a.", "# Answer\n\n3"], "label": [1, 0]})
    assert rec.steps[-1] == "# Answer\n\n3"


def test_every_token_targets(char_bpe):
    rec = rewards.PRMRecord("What?", ("Step one.", "Step two.", "# Answer\n\n12"), (1.0, 0.0, 1.0))
    ids, targets, weights = prm_train.encode_record(char_bpe, rec, max_len=512)
    n_prompt = 1 + len(char_bpe.encode(fmt.format_prompt("What?"), add_special_tokens=False))
    assert weights[:n_prompt].sum() == 0 and np.all(weights[n_prompt:] == 1)
    resp = "\n\n".join(rec.steps)
    _, offsets = prm_lib.encode_with_offsets(char_bpe, resp)
    seg2 = len("Step one.\n\n")
    for (s, e), tg in zip(offsets, targets[n_prompt:]):  # the token's last char picks the step
        want = 1.0 if e - 1 < seg2 else 0.0 if e - 1 < seg2 + len("Step two.\n\n") else 1.0
        assert tg == want


def prm_config(steps, **fields):
    """The run's PRM trainer config (plan.train_config) for `steps` steps, with prm / sft fields set."""
    from bstar_jax.config import plan, schema

    c = schema.defaults()
    c.prm.steps = steps
    for k, v in fields.items():
        (c.prm if k in c.prm else c.sft)[k] = v
    return plan.train_config(c, "prm")


def _toy_records(rng, n):
    """Steps 'Word a + b = c.'; a step holding the planted wrong equation 2 + 2 = 5 is labelled 0."""
    words = ["Now", "Then", "Next", "So", "Also"]
    out = []
    for _ in range(n):
        steps, labels = [], []
        for _ in range(rng.integers(2, 5)):
            w = words[rng.integers(len(words))]
            if rng.random() < 0.35:
                steps.append(f"{w} 2 + 2 = 5."), labels.append(0)
            else:
                a, b = rng.integers(0, 10, 2)
                if (a, b) == (2, 2):
                    a = 3
                steps.append(f"{w} {a} + {b} = {a + b}."), labels.append(1)
        out.append(rewards.PRMRecord("Add them up.", tuple(steps), tuple(labels)))
    return out


def _auc(scores, labels):
    scores, labels = np.asarray(scores), np.asarray(labels, bool)
    pos, neg = scores[labels], scores[~labels]
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


def test_prm_training_learns_planted_error(tmp_path):
    rng = np.random.default_rng(0)
    train, held = _toy_records(rng, 256), _toy_records(rng, 48)
    texts = ["\n\n".join(r.steps) for r in train] + [fmt.format_prompt("Add them up.")]
    tok = tok_lib.train_bpe(texts, 300, tmp_path)
    cfg = _tiny_cfg(len(tok))
    prm = rewards.init_prm(cfg, models.init(cfg, 0), init="zero")
    mesh = mesh_lib.make_mesh(data=4, fsdp=2)
    new, losses = prm_train.train_prm(cfg, prm, tok, train, prm_config(120, batch_size=16, micro_batch_size=16,
                                                                       lr=3e-3, min_lr=3e-4, max_len=128),
                                      num_steps=120, rng=jax.random.key(0), mesh=mesh)
    windows = np.asarray(losses).reshape(4, 30).mean(axis=1)
    assert np.all(np.diff(windows) < 0), windows  # smoothed loss falls monotonically
    # embeddings and norms are frozen; blocks and head moved
    np.testing.assert_array_equal(new["backbone"]["embed"], prm["backbone"]["embed"])
    np.testing.assert_array_equal(new["backbone"]["layers"]["attn_norm"], prm["backbone"]["layers"]["attn_norm"])
    assert not np.allclose(new["backbone"]["layers"]["q"], prm["backbone"]["layers"]["q"])
    assert float(jnp.abs(new["head"]["w"]).max()) > 0

    prompt = fmt.format_prompt("Add them up.")
    out = rewards.score_responses(cfg, new, tok, [prompt] * len(held),
                                  ["\n\n".join(r.steps) + "\n\n# Answer\n\n4" for r in held], mesh=mesh)
    scores = np.concatenate([s[:-1] for s in out.step_scores])  # drop the answer token
    labels = np.concatenate([r.labels for r in held])
    assert scores.size == labels.size
    auc = _auc(scores, labels)
    print(f"held-out step AUC {auc:.3f}; windowed losses {np.round(windows, 3)}")
    assert auc >= 0.95


def test_sft_and_prm_share_the_one_step(monkeypatch, char_bpe):
    import pathlib
    from tiny_sft import CFG, tiny_config
    from bstar_jax.train import sft, trainer
    # Differentiation lives in trainer.py only.
    root = pathlib.Path(sft.__file__).parent
    users = sorted(str(p.relative_to(root)) for p in root.rglob("*.py")
                   if "value_and_grad" in p.read_text() or "jax.grad(" in p.read_text())
    assert users == ["trainer.py"], users
    calls = []
    real = trainer.make_step
    monkeypatch.setattr(trainer, "make_step", lambda loss_fn, *a, **k: calls.append(loss_fn) or real(loss_fn, *a, **k))
    sft.clear_step_cache()
    sft.make_train_step(CFG, tiny_config(), mesh_lib.make_mesh(1, 1, 1, devices=jax.devices()[:1]))
    cfg = _tiny_cfg(len(char_bpe))
    prm = rewards.init_prm(cfg, models.init(cfg, 0), init="zero")
    record = [("q", ["1 + 1 = 2.", "# Answer\n\n2"], [1, 1]), ("q", ["1 + 1 = 3.", "# Answer\n\n3"], [0, 0])]
    small = dict(batch_size=8, micro_batch_size=8, max_len=64)
    _, losses = prm_train.train_prm(cfg, prm, char_bpe, record, prm_config(2, **small), num_steps=2,
                                    rng=jax.random.key(0))
    assert len(losses) == 2 and np.all(np.isfinite(losses))
    # Accumulating over micro-batches (with recomputed layers) takes the same steps.
    _, micro = prm_train.train_prm(cfg, prm, char_bpe, record,
                                   prm_config(2, **dict(small, micro_batch_size=4, remat="full")), num_steps=2,
                                   rng=jax.random.key(0))
    np.testing.assert_allclose(micro, losses, rtol=1e-4)
    assert [c.func.__name__ for c in calls] == ["sft_loss", "prm_loss", "prm_loss"]
    sft.clear_step_cache()
