"""Math-Shepherd labelling: planted correct / wrong prefixes, and O(1) sampler calls."""
import numpy as np
import optax
import pytest

import jax
import jax.numpy as jnp

from bstar_jax import models
from bstar_jax.generate import sampling
from bstar_jax.text import tokenizer as tok_lib
from bstar_jax.text import format as fmt
from bstar_jax.rewards import labelling

QUESTION = "Find the number."
OPENERS = ["Step one.", "We begin.", "Look closely."]


def _solution(opener, x, answer=None):
    return f"{opener}\n\nIt is {x}.\n\n# Answer\n\n{x if answer is None else answer}"


@pytest.fixture(scope="module")
def copier(tmp_path_factory):
    """A tiny LM trained to finish "It is X.\\n\\n" with "# Answer\\n\\nX" and EOS: completions
    from a prefix that states X reach the answer X, so a prefix's label depends on what it says."""
    prompt = fmt.format_prompt(QUESTION)
    texts = [prompt + _solution(o, x) for o in OPENERS for x in range(10)]
    tok = tok_lib.train_bpe(texts, 300, tmp_path_factory.mktemp("tok"))
    rows = [tok_lib.encode_example(tok, prompt, _solution(o, x)) for o in OPENERS for x in range(10)]
    seqs = [p + t for p, t in rows]
    L = max(len(s) for s in seqs)
    tokens = np.zeros((len(seqs), L), np.int32)
    mask = np.zeros((len(seqs), L), np.float32)
    for b, s in enumerate(seqs):
        tokens[b, :len(s)], mask[b, :len(s)] = s, 1.0
    cfg = models.ModelConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_layers=2,
                             num_heads=4, num_kv_heads=2, head_dim=16, max_position_embeddings=256,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    params = models.init(cfg, 0)
    opt = optax.adam(3e-3)

    @jax.jit
    def step(params, opt_state):
        def loss_fn(p):
            logits = models.forward(cfg, p, tokens[:, :-1])
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])
            return jnp.sum(ce * mask[:, 1:]) / jnp.sum(mask[:, 1:])
        loss, g = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = opt.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = opt.init(params)
    for _ in range(400):
        params, opt_state, loss = step(params, opt_state)
    return cfg, params, tok, float(loss)


def _count_calls(monkeypatch):
    calls = []
    real = sampling.generate

    def counting(*args, **kw):
        calls.append(np.asarray(args[2]).shape[0])  # rows in this call
        return real(*args, **kw)

    monkeypatch.setattr(labelling.sampling, "generate", counting)
    return calls


def test_planted_prefixes_get_labels_1_and_0(copier, monkeypatch):
    cfg, params, tok, _ = copier
    calls = _count_calls(monkeypatch)
    responses = [_solution("Step one.", 7),  # correct all along
                 _solution("We begin.", 3),  # states a wrong number, answers it
                 "We begin.\n\nno answer here"]  # dropped: no answer
    out = labelling.label_steps(cfg, params, tok, [QUESTION] * 3, responses, ["7"] * 3, task="gsm8k",
                                rng=jax.random.key(0), n_completions=4, max_new_tokens=12)
    assert out.kept == [0, 1] and out.dropped == [2]
    good, bad = out.records
    assert good.steps == ("Step one.", "It is 7.", "# Answer\n\n7")
    assert good.labels[1:] == (1.0, 1.0)  # the prefix stating 7 completes to 7; the answer is right
    assert bad.labels[1:] == (0.0, 0.0)  # the prefix stating 3 never reaches 7
    assert out.generate_calls == 1 and calls == [2 * 2 * 4]  # 4 prefixes x 4 completions, one call
    soft = labelling.label_steps(cfg, params, tok, [QUESTION] * 2, responses[:2], ["7"] * 2, task="gsm8k",
                                 rng=jax.random.key(1), n_completions=4, max_new_tokens=12, soft=True)
    assert soft.records[0].labels[1] == 1.0 and soft.records[1].labels[1] == 0.0


def test_generate_calls_do_not_grow_with_prefixes(copier, monkeypatch):
    cfg, params, tok, _ = copier
    calls = _count_calls(monkeypatch)
    many = [_solution(o, x) for o in OPENERS for x in range(4)]  # 12 solutions, 25 prefixes
    many[0] = "Step one.\n\nA second step.\n\nIt is 0.\n\n# Answer\n\n0"  # a 3-step one
    kw = dict(task="gsm8k", rng=jax.random.key(2), n_completions=1, max_new_tokens=12)
    out = labelling.label_steps(cfg, params, tok, [QUESTION] * len(many), many, ["2"] * len(many), **kw)
    assert out.generate_calls == 1 and calls == [25]
    assert [len(r.labels) for r in out.records] == [4] + [3] * 11
    calls.clear()
    chunked = labelling.label_steps(cfg, params, tok, [QUESTION] * len(many), many, ["2"] * len(many),
                                    max_batch=16, **kw)
    assert chunked.generate_calls == 2 and calls == [16, 9]  # only the batch cap splits calls
    assert [len(r.labels) for r in chunked.records] == [len(r.labels) for r in out.records]


def test_labelling_bad_input(copier):
    cfg, params, tok, _ = copier
    with pytest.raises(ValueError, match="questions"):
        labelling.label_steps(cfg, params, tok, [QUESTION], ["a", "b"], ["1", "2"], task="gsm8k",
                              rng=jax.random.key(0))
    with pytest.raises(ValueError, match="unknown task"):
        labelling.label_steps(cfg, params, tok, [QUESTION], ["a"], ["1"], task="chess", rng=jax.random.key(0))
    # garbled bytes, empty and answer-less responses are dropped, no sampler call at all
    out = labelling.label_steps(cfg, params, tok, [QUESTION] * 3, [b"\xff\xfe", "", None], ["1"] * 3,
                                task="gsm8k", rng=jax.random.key(0))
    assert out.records == [] and out.dropped == [0, 1, 2] and out.generate_calls == 0
    # an answer with no reasoning steps: only the answer step, labelled by its correctness
    out = labelling.label_steps(cfg, params, tok, [QUESTION], ["# Answer\n\n7"], ["7"], task="gsm8k",
                                rng=jax.random.key(0))
    assert out.records[0].steps == ("# Answer\n\n7",) and out.records[0].labels == (1.0,)
