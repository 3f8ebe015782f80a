"""The sampler: cached decode == full forward, greedy == argmax, the sampling distribution, EOS,
bucketing, one compile per grid, sharded == unsharded, clear errors on bad input; the engine
equals the static reference sampler (tests/oracles/static_sampler.py) request by request, for any
number of slots."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import static_sampler
from bstar_jax import models, sampling
from bstar_jax.core import mesh as mesh_lib
from bstar_jax.generate import call_inputs, engine, grid, strategy

CFG = models.ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                         num_kv_heads=2, head_dim=8, max_position_embeddings=64)


@pytest.fixture(scope="module")
def params():
    return models.init(CFG, 0)


def _prompts(lengths, seed=0, vocab=CFG.vocab_size):
    rng = np.random.default_rng(seed)
    prompts = np.zeros((len(lengths), max(lengths)), np.int32)
    for b, n in enumerate(lengths):
        prompts[b, :n] = rng.integers(1, vocab, n)
    return prompts, np.asarray(lengths, np.int32)


def _forward_logprobs(cfg, params, prompt, continuation, width=32):
    """log_softmax(models.forward(prompt + continuation)) at each continuation token (padded to
    one width: the forward is causal, so the tail changes nothing and one compile serves all)."""
    seq = np.concatenate([prompt, continuation]).astype(np.int32)
    lp = jax.nn.log_softmax(models.forward(cfg, params, np.pad(seq, (0, width - len(seq)))[None]), axis=-1)[0]
    idx = np.arange(len(prompt) - 1, len(seq) - 1)
    return np.asarray(lp[idx, seq[len(prompt):]])


# Shapes shared by most tests (batch bucket 8, prompt bucket 8, N = 8), so they share one compile.
N = 8


@pytest.mark.parametrize("variant", ["llama", "qwen2_tied_bias_window"])
def test_cached_decode_logprobs_equal_full_forward(variant):
    cfg = CFG if variant == "llama" else CFG.replace(
        model_type="qwen2", tie_word_embeddings=True, attention_bias=True, sliding_window=5)
    params = models.init(cfg, 1)
    if cfg.attention_bias:  # non-zero biases, so that they matter
        params["layers"] = {**params["layers"], **{
            k: 0.1 * jax.random.normal(jax.random.key(i), params["layers"][k].shape)
            for i, k in enumerate(("q_bias", "k_bias", "v_bias"))}}
    prompts, lengths = _prompts([3, 8, 6, 1, 5])
    out = sampling.generate(cfg, params, prompts, lengths, jax.random.key(0), max_new_tokens=N,
                            temperature=np.array([1.0, 0.7, 1.3, 0.0, 2.0]),
                            top_p=np.array([1.0, 0.9, 1.0, 1.0, 0.5]), eos_id=-1)
    assert out.tokens.shape == (5, N) and out.tokens.dtype == jnp.int32
    assert out.logprobs.dtype == jnp.float32
    np.testing.assert_array_equal(out.lengths, N)
    for b in range(5):
        ref = _forward_logprobs(cfg, params, prompts[b, :lengths[b]], np.asarray(out.tokens[b]))
        np.testing.assert_allclose(out.logprobs[b], ref, atol=1e-4)


def _greedy_reference(params, prompt, n):
    """Step-by-step argmax of full forwards (one fixed width: causal, so the tail is ignored)."""
    seq = np.zeros((1, len(prompt) + n), np.int32)
    seq[0, :len(prompt)] = prompt
    for i in range(len(prompt), len(prompt) + n):
        seq[0, i] = int(jnp.argmax(models.forward(CFG, params, seq)[0, i - 1]))
    return seq[0, len(prompt):]


def test_temperature_zero_is_stepwise_argmax_and_rows_keep_their_temperature(params):
    prompts, lengths = _prompts([5, 5, 5, 5, 5], seed=3)
    temps = np.array([0.0, 1.0, 0.0, 1.0, 1.0], np.float32)
    a = sampling.generate(CFG, params, prompts, lengths, jax.random.key(1), max_new_tokens=N,
                          temperature=temps, eos_id=-1)
    b = sampling.generate(CFG, params, prompts, lengths, jax.random.key(2), max_new_tokens=N,
                          temperature=temps, eos_id=-1)
    for row in (0, 2):
        np.testing.assert_array_equal(a.tokens[row], _greedy_reference(params, prompts[row], N))
        np.testing.assert_array_equal(a.tokens[row], b.tokens[row])
    for row in (1, 3):  # sampled rows change with the key
        assert not np.array_equal(a.tokens[row], b.tokens[row])


def _first_token_counts(params, temperature, top_p, n=4096, top_k=0):
    prompts, lengths = _prompts([6], seed=5)
    out = sampling.generate(CFG, params, np.repeat(prompts, n, 0), np.repeat(lengths, n), jax.random.key(7),
                            max_new_tokens=1, temperature=temperature, top_p=top_p, top_k=top_k, eos_id=-1)
    logits = np.asarray(models.forward(CFG, params, prompts)[0, -1], np.float64)
    return np.bincount(np.asarray(out.tokens[:, 0]), minlength=CFG.vocab_size), logits


def _chi_square_p(counts, probs):
    expected = probs * counts.sum()
    big = expected >= 5  # pool the rare tokens into one bin
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    keep = exp > 0
    return stats.chisquare(obs[keep], exp[keep]).pvalue


@pytest.fixture(scope="module")
def peaked_params(params):
    return {**params, "lm_head": params["lm_head"] * 8.0}  # a distribution worth testing


def test_first_token_distribution_at_temperature(peaked_params):
    counts, logits = _first_token_counts(peaked_params, 0.7, 1.0)
    probs = np.exp(logits / 0.7 - np.logaddexp.reduce(logits / 0.7))
    assert probs.max() < 0.5 and (probs > 0.01).sum() >= 5, "test distribution too degenerate"
    assert _chi_square_p(counts, probs) > 1e-3


def test_first_token_distribution_top_p(peaked_params):
    counts, logits = _first_token_counts(peaked_params, 0.7, 0.9)
    probs = np.exp(logits / 0.7 - np.logaddexp.reduce(logits / 0.7))
    order = np.argsort(-probs)
    cum = np.cumsum(probs[order])
    nucleus = order[:np.searchsorted(cum, 0.9) + 1]  # the smallest top set with mass >= 0.9
    assert 2 < len(nucleus) < CFG.vocab_size - 5
    kept = np.zeros_like(probs)
    kept[nucleus] = probs[nucleus] / probs[nucleus].sum()
    assert counts[kept == 0].sum() == 0
    assert _chi_square_p(counts, kept) > 1e-3


def test_top_k_keeps_the_k_most_likely(peaked_params):
    counts, logits = _first_token_counts(peaked_params, 1.0, 1.0, n=512, top_k=3)
    assert set(np.flatnonzero(counts)) <= set(np.argsort(-logits)[:3])


def test_next_token_nucleus_matches_sort_based_reference():
    logits = 3.0 * jax.random.normal(jax.random.key(0), (6, 300))
    top_p = jnp.array([0.1, 0.5, 0.9, 0.99, 0.75, 0.3])
    probs = jax.nn.softmax(logits, -1)
    theta = strategy.nucleus_threshold(probs, top_p)
    for b in range(6):  # the smallest top set with mass >= top_p
        p = np.asarray(probs[b], np.float64)
        order = np.argsort(-p)
        n_keep = min(np.searchsorted(np.cumsum(p[order]), float(top_p[b]) - 1e-6) + 1, len(p))
        assert (np.asarray(probs[b]) >= theta[b]).sum() == n_keep


def test_eos_stops_rows_and_padding_follows(params):
    prompts, lengths = _prompts([4, 7, 2, 3, 5], seed=11)
    greedy = sampling.generate(CFG, params, prompts, lengths, jax.random.key(0), max_new_tokens=N,
                               temperature=0.0, eos_id=-1)
    row0 = np.asarray(greedy.tokens[0])
    stop = next(i for i in range(1, N) if row0[i] not in row0[:i])  # first fresh token, as EOS
    eos = int(row0[stop])
    out = sampling.generate(CFG, params, prompts, lengths, jax.random.key(0), max_new_tokens=N,
                            temperature=0.0, eos_id=eos)
    assert int(out.lengths[0]) == stop + 1  # EOS counted
    np.testing.assert_array_equal(out.tokens[0, :stop + 1], row0[:stop + 1])
    np.testing.assert_array_equal(out.tokens[0, stop + 1:], 0)  # pad id (cfg.pad_token_id None -> 0)
    np.testing.assert_array_equal(out.logprobs[0, stop + 1:], 0.0)
    for b in range(1, 5):
        row = list(np.asarray(greedy.tokens[b]))
        assert int(out.lengths[b]) == (row.index(eos) + 1 if eos in row else N)


def test_mixed_prompt_lengths_and_buckets_do_not_change_a_row(params):
    prompts, lengths = _prompts([3, 7, 5, 8, 2], seed=13)
    garbage = np.where(np.arange(8)[None, :] < lengths[:, None], prompts, -100)  # past the lengths: ignored
    together = sampling.generate(CFG, params, garbage, lengths, jax.random.key(0), max_new_tokens=N,
                                 temperature=0.0, eos_id=-1)
    for b in range(5):
        alone = sampling.generate(CFG, params, prompts[b:b + 1, :lengths[b]], lengths[b:b + 1],
                                  jax.random.key(0), max_new_tokens=N, temperature=0.0, eos_id=-1)
        np.testing.assert_array_equal(together.tokens[b], alone.tokens[0])
    # Sampled rows: the first three rows draw the same tokens in a batch of 3 (bucket 4) and of 5 (8).
    kw = dict(max_new_tokens=N, temperature=1.0, eos_id=-1)
    small = sampling.generate(CFG, params, prompts[:3], lengths[:3], jax.random.key(4), **kw)
    large = sampling.generate(CFG, params, prompts, lengths, jax.random.key(4), **kw)
    np.testing.assert_array_equal(small.tokens, large.tokens[:3])


def test_sharded_equals_single_device(params, n_devices):
    prompts, lengths = _prompts([3, 7, 5, 8, 2], seed=17)
    kw = dict(max_new_tokens=N, temperature=np.array([1.0, 0.5, 0.0, 1.2, 0.8]), top_p=0.95, eos_id=9)
    single = sampling.generate(CFG, params, prompts, lengths, jax.random.key(3), **kw)
    mesh = mesh_lib.make_mesh(data=2, fsdp=2, tensor=2)
    sharded = sampling.generate(CFG, params, prompts, lengths, jax.random.key(3), mesh=mesh, **kw)
    np.testing.assert_array_equal(single.tokens, sharded.tokens)
    np.testing.assert_array_equal(single.lengths, sharded.lengths)
    np.testing.assert_allclose(single.logprobs, sharded.logprobs, atol=1e-5)


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models as tok_models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(tok_models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<eos>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["# Question\n\nWhat is 2 + 3?\n\n# Solution\n\n2 + 3 = 5 é ü"] * 10, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


def test_grid_is_one_call_one_compile_and_regroups(n_devices):
    tokenizer = _tokenizer()
    cfg = CFG.replace(vocab_size=len(tokenizer), max_position_embeddings=128)
    params = models.init(cfg, 2)
    questions = ["What is 2 + 3?", "Is é a letter?"]
    grid1 = [0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1]
    before = engine.compiled_generate_requests.cache_info().misses
    a = grid.sample_grid(cfg, params, tokenizer, questions, temperatures=grid1, num_samples=3,
                         rng=jax.random.key(0), max_new_tokens=9)
    b = grid.sample_grid(cfg, params, tokenizer, questions, temperatures=np.linspace(0.3, 1.2, 8),
                         num_samples=3, rng=jax.random.key(1), max_new_tokens=9)
    assert engine.compiled_generate_requests.cache_info().misses - before == 1  # one compile, both grids
    assert a.texts.shape == a.lengths.shape == a.truncated.shape == (8, 2, 3)
    assert a.tokens.shape == a.logprobs.shape == (8, 2, 3, 9)
    assert b.texts.shape == (8, 2, 3)
    for q in range(2):  # the T = 0 block is greedy: K identical responses
        assert len(set(a.texts[0, q])) == 1
        np.testing.assert_array_equal(a.tokens[0, q, 0], a.tokens[0, q, 1])
    assert len({tuple(a.tokens[-1, q, k]) for q in range(2) for k in range(3)}) > 1
    for t, q, k in [(0, 0, 0), (5, 1, 2), (7, 1, 1)]:
        ids = a.response_ids(t, q, k)
        assert a.texts[t, q, k] == tokenizer.decode(ids, skip_special_tokens=True)
        assert a.truncated[t, q, k] == (tokenizer.eos_token_id not in ids)
    prompt = f"# Question\n\n{questions[0]}\n\n# Solution\n\n"
    assert a.prompt_ids[0] == tokenizer.encode(prompt, add_special_tokens=False)
    # Random byte-level tokens are often not valid UTF-8: decoded with U+FFFD, never raised.
    assert any("\ufffd" in text for text in b.texts[-1].ravel())


def test_rollout_texts_do_not_depend_on_requests_per_slot(capsys):
    """grid.sample: 5 questions x 2 temperatures x 2 samples, batch_rows 8 -> 3 chunks of 2
    queries (the last padded); 1 or 2 chunks per call through 8 slots give the same rows, and
    those equal one sample_grid call per chunk keyed with grid.common_keys(fold_in(rng, chunk)).
    With progress shown, the phase's bar counts the 20 rows under the run's place name; without,
    nothing is printed."""
    import ml_collections

    from bstar_jax.core import preemption, progress

    tokenizer = _tokenizer()
    cfg = CFG.replace(vocab_size=len(tokenizer), max_position_embeddings=128)
    params = models.init(cfg, 4)
    questions = ["What is 2 + 3?", "Is é a letter?", "2 + 2?", "What is 7?", "ü + é?"]
    temps, rng = [0.0, 1.0], jax.random.key(7)
    runs = []
    for per_call in (1, 2):
        sc = ml_collections.ConfigDict(dict(batch_rows=8, max_new_tokens=9, top_p=1.0, top_k=0,
                                            requests_per_slot=per_call))
        with progress.shown(per_call == 1):
            preemption.at(f"test per_call {per_call}: sampling")
            runs.append(grid.sample((cfg, params), tokenizer, questions, temperatures=temps, num_samples=2, rng=rng,
                                    sampling_config=sc))
        err = capsys.readouterr().err
        if per_call == 1:
            assert "test per_call 1: sampling" in err and "/20 [" in err and "rows/s" in err, err
        else:
            assert "sampling" not in err, err
    for c, start in enumerate((0, 2, 4)):
        chunk = (questions[start:start + 2] + questions[:1])[:2]
        ref = grid.sample_grid(cfg, params, tokenizer, chunk, temperatures=temps, num_samples=2,
                               rng=grid.common_keys(jax.random.fold_in(rng, c), 2, 2, 2), max_new_tokens=9)
        n = min(2, len(questions) - start)
        for run in runs:
            np.testing.assert_array_equal(run.tokens[:, start:start + n], ref.tokens[:, :n])
            assert (run.texts[:, start:start + n] == ref.texts[:, :n]).all()
    assert runs[0].texts.shape == (2, 5, 2)
    assert len({t for t in runs[0].texts[1].ravel()}) > 1


def test_rollout_temperatures_share_random_numbers():
    """Sample k of a query draws with the same key at every temperature of the grid (common random
    numbers): a grid that repeats a temperature gives the same rows twice, the K samples of a query
    still differ, and a one-temperature grid keeps the per-row keys fold_in(rng, r)."""
    import ml_collections

    tokenizer = _tokenizer()
    cfg = CFG.replace(vocab_size=len(tokenizer), max_position_embeddings=128)
    params = models.init(cfg, 5)
    sc = ml_collections.ConfigDict(dict(batch_rows=12, max_new_tokens=9, top_p=1.0, top_k=0, requests_per_slot=1))
    g = grid.sample((cfg, params), tokenizer, ["What is 2 + 3?", "2 + 2?"], temperatures=[0.9, 1.0, 0.9],
                    num_samples=3, rng=jax.random.key(3), sampling_config=sc)
    np.testing.assert_array_equal(g.tokens[0], g.tokens[2])
    assert (g.texts[0] == g.texts[2]).all()
    assert len(set(g.texts[2, 0])) > 1  # the K samples of a query are independent draws
    one = grid.common_keys(jax.random.key(3), 4, 1, 3)
    np.testing.assert_array_equal(jax.random.key_data(one),
                                  jax.random.key_data(strategy.request_keys(jax.random.key(3), 12)))


@pytest.mark.parametrize("bad", ["negative_temperature", "top_p_zero", "top_p_above_one", "too_long", "empty"])
def test_bad_input_raises_one_clear_value_error(params, bad):
    prompts, lengths = _prompts([4, 6])
    kw = dict(max_new_tokens=4, temperature=1.0, top_p=1.0, eos_id=-1)
    if bad == "negative_temperature":
        kw["temperature"], match = np.array([1.0, -0.1]), "temperature"
    elif bad == "top_p_zero":
        kw["top_p"], match = 0.0, "top_p"
    elif bad == "top_p_above_one":
        kw["top_p"], match = 1.5, "top_p"
    elif bad == "too_long":
        prompts, lengths = _prompts([62, 3])
        match = "max_position_embeddings"
    else:
        prompts, lengths, match = np.zeros((0, 4), np.int32), np.zeros((0,), np.int32), "non-empty"
    with pytest.raises(ValueError, match=match):
        sampling.generate(CFG, params, prompts, lengths, jax.random.key(0), **kw)


def test_draw_follows_softmax_across_blocks_and_never_draws_excluded_tokens():
    """The inverse-CDF draw over a vocabulary of several blocks (not a multiple of the block):
    frequencies follow softmax, -inf entries (top-k / top-p exclusions) are never drawn, also
    when the only allowed tokens sit at the two ends of the vocabulary."""
    V, n = 3 * strategy.DRAW_BLOCK + 17, 20_000
    logits = 2.0 * jax.random.normal(jax.random.key(5), (V,))
    logits = logits.at[::7].set(-jnp.inf)
    keys = jax.random.split(jax.random.key(6), n)
    drawn = np.asarray(strategy.draw(keys, jnp.broadcast_to(logits, (n, V))))
    counts = np.bincount(drawn, minlength=V)
    assert counts[::7].sum() == 0
    assert _chi_square_p(counts, np.asarray(jax.nn.softmax(logits))) > 1e-3
    ends = jnp.full((V,), -jnp.inf).at[0].set(0.0).at[V - 1].set(1.0)
    drawn = np.asarray(strategy.draw(keys[:2000], jnp.broadcast_to(ends, (2000, V))))
    assert set(np.unique(drawn)) == {0, V - 1}
    assert abs((drawn == V - 1).mean() - 1 / (1 + np.exp(-1.0))) < 0.04


def test_next_token_is_a_pure_strategy():
    logits = jax.random.normal(jax.random.key(1), (3, 50))
    tokens, logprobs = strategy.next_token(logits, jax.random.key(2), jnp.array([0.0, 1.0, 0.5]), 1.0)
    assert int(tokens[0]) == int(jnp.argmax(logits[0]))
    np.testing.assert_allclose(logprobs, jax.nn.log_softmax(logits)[jnp.arange(3), tokens], atol=1e-6)
    again, _ = strategy.next_token(logits, jax.random.key(2), jnp.array([0.0, 1.0, 0.5]), 1.0)
    np.testing.assert_array_equal(tokens, again)


# ----------------------------------------------------------------------------- engine vs the static oracle

def _requests(seed=21):
    """30 requests over 10 prompts (3 rows each), mixed temperatures / top-p; EOS 5 ends rows at
    many different lengths, so slots are refilled at many different steps."""
    prompts, lengths = _prompts([3, 8, 6, 1, 5, 7, 2, 4, 8, 3], seed=seed)
    kw = dict(max_new_tokens=16, temperature=np.tile([1.0, 0.7, 0.0, 1.3, 2.0], 6),
              top_p=np.tile([1.0, 0.9, 1.0], 10), eos_id=5)
    return np.repeat(prompts, 3, 0), np.repeat(lengths, 3), kw


def _assert_same(out, ref):
    np.testing.assert_array_equal(out.tokens, ref.tokens)
    np.testing.assert_array_equal(out.lengths, ref.lengths)
    np.testing.assert_allclose(out.logprobs, ref.logprobs, atol=1e-5)


# None: a slot per request (shared prompts prefilled once); "generate": sampling.generate, the same call
@pytest.mark.parametrize("slots", [1, 3, None, "generate"])
def test_engine_equals_static_for_any_number_of_slots(params, slots):
    prompts, lengths, kw = _requests()
    ref = static_sampler.generate(CFG, params, prompts, lengths, jax.random.key(3), **kw)
    assert len(set(np.asarray(ref.lengths).tolist())) > 3  # rows do end at different steps
    if slots == "generate":
        out = sampling.generate(CFG, params, prompts, lengths, jax.random.key(3), **kw)
    else:
        out = engine.generate_requests(CFG, params, prompts, lengths, jax.random.key(3), slots=slots, **kw)
    _assert_same(out, ref)


def test_engine_program_takes_more_slots_than_requests():
    """Slots past the last request stay idle: a program lowered with S > R compiles (the path
    without refills fills every slot's prompt columns, idle ones too, so it must not assume
    S = R)."""
    engine.lower_generate_requests(CFG, None, 4, 4, 8, 16, 8).compile()


def test_engine_sharded_equals_static(params, n_devices):
    prompts, lengths, kw = _requests(seed=22)
    ref = static_sampler.generate(CFG, params, prompts, lengths, jax.random.key(5), **kw)
    mesh = mesh_lib.make_mesh(data=2, fsdp=2, tensor=2)
    for slots in (8, 16, None):
        out = engine.generate_requests(CFG, params, prompts, lengths, jax.random.key(5), slots=slots,
                                       mesh=mesh, **kw)
        _assert_same(out, ref)


def test_engine_shared_prefill_sharded_equals_static(params, n_devices):
    """8 prompts x 8 samples on a mesh whose batch axes span 4 devices: the store's 8 rows are an
    eighth of the 64 slots, so each distinct prompt is prefilled once and gathered into its
    slots, split like the cache."""
    prompts, lengths = _prompts([3, 8, 6, 1, 5, 7, 2, 4], seed=24)
    prompts, lengths = np.repeat(prompts, 8, 0), np.repeat(lengths, 8)
    kw = dict(max_new_tokens=12, temperature=np.tile([1.0, 0.7, 0.0, 1.3], 16), top_p=np.tile([1.0, 0.9], 32),
              eos_id=5)
    mesh = mesh_lib.make_mesh(data=2, fsdp=2, tensor=2)
    assert engine.shares_prefill(8, 64, mesh) and not engine.shares_prefill(33, 64, mesh)
    ref = static_sampler.generate(CFG, params, prompts, lengths, jax.random.key(7), **kw)
    _assert_same(engine.generate_requests(CFG, params, prompts, lengths, jax.random.key(7), mesh=mesh, **kw),
                 ref)


def test_shared_prompts_equal_unshared_and_request_caps_cut(params):
    prompts, lengths, kw = _requests(seed=23)
    distinct, lens, index = call_inputs.dedupe_prompts(prompts, lengths)
    assert len(distinct) == 10 and len(set(index[::3].tolist())) == 10
    np.testing.assert_array_equal(index, np.repeat(index[::3], 3))
    np.testing.assert_array_equal(distinct[index][:, :8] * (np.arange(8) < lengths[:, None]),
                                  prompts * (np.arange(8) < lengths[:, None]))
    shared = engine.generate_requests(CFG, params, distinct, lens, jax.random.key(6), prompt_index=index,
                                      slots=4, **kw)
    unshared = static_sampler.generate(CFG, params, prompts, lengths, jax.random.key(6), **kw)
    _assert_same(shared, unshared)
    caps = np.arange(30) % 16 + 1  # a request's own max_new_tokens: its static row, cut there
    cut = engine.generate_requests(CFG, params, distinct, lens, jax.random.key(6), prompt_index=index,
                                   slots=4, request_max_new_tokens=caps, **kw)
    np.testing.assert_array_equal(cut.lengths, np.minimum(unshared.lengths, caps))
    for r in range(30):
        n = int(cut.lengths[r])
        np.testing.assert_array_equal(cut.tokens[r, :n], unshared.tokens[r, :n])
        np.testing.assert_array_equal(cut.tokens[r, n:], 0)


@pytest.mark.parametrize("bad", [dict(prompt_index=np.array([0, 2])), dict(request_max_new_tokens=np.array([0, 1])),
                                 dict(prompt_index=np.array([], np.int32))])
def test_engine_bad_input_raises(params, bad):
    prompts, lengths = _prompts([3, 5])
    with pytest.raises(ValueError, match="prompt_index|request_max_new_tokens"):
        engine.generate_requests(CFG, params, prompts, lengths, jax.random.key(0), max_new_tokens=N,
                                 eos_id=-1, **bad)
