"""Sessions: the receiver's state, a session round's terms and the transition with LRU eviction."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jmsra_env import make_config, model, solvers
from jmsra_env.session import (
    NEVER_ROUND,
    SessionState,
    initial_state,
    session_nl_tokens,
    session_terms,
    transition,
)

CFG = make_config()
CONSTS = model.model_constants(CFG)
BPT = CONSTS.kv_bits_per_token / 8.0  # 16 KiB per token (Llama-3.2-1B, 8-bit KV)


def state(seen, kv, last, pool_tokens=np.inf):
    n = len(seen)
    return SessionState(
        np.asarray(seen, dtype=np.float64).reshape(n),
        np.asarray(kv, dtype=np.float64).reshape(n),
        np.asarray(last, dtype=np.int64).reshape(n),
        pool_tokens * BPT,
        BPT,
    )


def exogenous(rng, shape):
    """One round's exogenous quantities for a batch ``shape + (N,)``."""
    n = CFG.n_agents
    full = (*shape, n)
    return dict(
        snr_db=rng.uniform(0.0, 40.0, full),
        compute_flops=np.full(full, 10e12),
        mem_bw_bytes_per_s=np.full(full, 68e9),
        load=rng.uniform(0.0, 0.8, full),
        receiver_load=rng.uniform(0.0, 0.8, shape),
    )


# -- state ------------------------------------------------------------------------------------


def test_initial_state_is_empty_and_never_sent_kv():
    s = initial_state(CFG, (3,))
    assert s.seen_tokens.shape == (3, 4) and not s.seen_tokens.any() and not s.kv_tokens.any()
    assert (s.last_kv_round == NEVER_ROUND).all()
    assert s.kv_pool_bytes == 4 * 160 * 2**20
    assert s.kv_bytes_per_token == 16 * 1024
    assert (s.pool_used_bytes == 0.0).all()


# -- the transition, by hand -------------------------------------------------------------------


def test_kv_sender_becomes_resident_and_nl_sender_keeps_its_partial_prefix():
    s = state([1000, 1000], [1000, 1000], [3, 3])
    new, evicted = transition(s, [1, 0], [1300, 1200], 4)
    assert new.seen_tokens.tolist() == [1300, 1200]
    assert new.kv_tokens.tolist() == [1300, 1000]  # NL keeps the older prefix of 1000 tokens
    assert new.last_kv_round.tolist() == [4, 3]
    assert not evicted.any()


def test_kv_after_a_resident_prefix_sends_only_the_delta():
    s = state([1000], [800], [2])
    L = np.array([1300.0])
    terms = session_terms(CONSTS, s, [20.0], [10e12], [68e9], [0.1], L, [300.0], [0.2], 0.1)
    assert terms.payload_bits[0, model.KV] == (1300 - 800) * CONSTS.kv_bits_per_token
    # NL summarises the 300 unseen tokens: K = ceil(0.2 * 300) = 60
    assert terms.payload_bits[0, model.NL] == 60 * CONSTS.nl_bits_per_token
    # the sender prefills its new tokens only
    assert terms.prefill_s[0] == pytest.approx(2 * CONSTS.params * 300 / (0.5 * 10e12 * 0.9))


def test_eviction_takes_the_oldest_kv_first():
    # pool of 3000 tokens; all three send nothing new but agent 1 sends KV of 1500: 3500 > 3000
    s = state([1000, 1000, 1000], [1000, 0, 1000], [5, NEVER_ROUND, 2], pool_tokens=3000)
    new, evicted = transition(s, [0, 1, 0], [1000, 1500, 1000], 6)
    assert evicted.tolist() == [False, False, True]  # agent 2 sent KV in round 2, agent 0 in 5
    assert new.kv_tokens.tolist() == [1000, 1500, 0]
    assert new.seen_tokens.tolist() == [1000, 1500, 0]


def test_eviction_ties_go_to_the_lowest_index():
    s = state([1000, 1000, 1000], [1000, 1000, 0], [4, 4, NEVER_ROUND], pool_tokens=2500)
    new, evicted = transition(s, [0, 0, 1], [1000, 1000, 1000], 5)
    assert evicted.tolist() == [True, False, False]
    assert new.kv_tokens.tolist() == [0, 1000, 1000]


def test_eviction_goes_on_until_the_pool_fits():
    s = state([1000, 1000, 1000], [1000, 1000, 0], [1, 2, NEVER_ROUND], pool_tokens=2000)
    new, evicted = transition(s, [0, 0, 1], [1000, 1000, 2000], 3)
    assert evicted.tolist() == [True, True, False]
    assert new.pool_used_bytes == 2000 * BPT


def test_an_evicted_agents_next_summary_covers_its_whole_context():
    s = state([1000, 1000], [1000, 0], [1, NEVER_ROUND], pool_tokens=1500)
    new, evicted = transition(s, [0, 1], [1200, 1200], 2)
    assert evicted.tolist() == [True, False]
    L = np.array([1400.0, 1400.0])
    rho = np.array([0.1, 0.1])
    assert session_nl_tokens(L, new.seen_tokens, rho).tolist() == [140.0, 20.0]
    terms = session_terms(CONSTS, new, [20, 20], [1e13] * 2, [68e9] * 2, [0, 0], L, [200, 200], rho, 0.0)
    assert terms.payload_bits[0].tolist() == [140 * CONSTS.nl_bits_per_token, 1400 * CONSTS.kv_bits_per_token]


def test_transition_is_batched_row_by_row():
    rng = np.random.default_rng(0)
    s = initial_state(CFG, (5,), kv_pool_bytes=3000 * BPT)
    L = rng.integers(256, 2048, (5, 4)).astype(float)
    media = rng.integers(0, 2, (5, 4))
    batch, ev = transition(s, media, L, 0)
    for i in range(5):
        row, ev_i = transition(s[i], media[i], L[i], 0)
        np.testing.assert_array_equal(batch.kv_tokens[i], row.kv_tokens)
        np.testing.assert_array_equal(ev[i], ev_i)


# -- properties ---------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**31 - 1),
    pool_tokens=st.integers(1, 20000),
    rounds=st.integers(1, 12),
)
def test_pool_never_exceeds_its_size_after_a_round(seed, pool_tokens, rounds):
    rng = np.random.default_rng(seed)
    s = initial_state(CFG, (8,), kv_pool_bytes=pool_tokens * BPT)
    L = np.zeros((8, 4))
    for t in range(rounds):
        L = L + rng.integers(0, 3000, (8, 4))
        s, _ = transition(s, rng.integers(0, 2, (8, 4)), L, t)
        assert (s.pool_used_bytes <= s.kv_pool_bytes).all()
        assert (s.kv_tokens <= s.seen_tokens).all()


@settings(max_examples=30, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**31 - 1))
def test_an_unbounded_pool_never_evicts(seed):
    rng = np.random.default_rng(seed)
    s = initial_state(CFG, (16,), kv_pool_bytes=np.inf)
    L = np.zeros((16, 4))
    for t in range(20):
        L = L + rng.integers(0, 100000, (16, 4))
        s, evicted = transition(s, rng.integers(0, 2, (16, 4)), L, t)
        assert not evicted.any()


def test_session_reduces_to_single_round_costs_without_new_tokens():
    """Round 0 of a session is a single round; with no new tokens afterwards and an unbounded pool,
    what was sent stays known: NL costs only the answer, KV only the part not yet resident."""
    rng = np.random.default_rng(1)
    ex = exogenous(rng, (6,))
    L = rng.integers(256, 2049, (6, 4)).astype(float)
    rho = rng.uniform(0.05, 0.25, (6, 4))
    single = model.round_terms(
        CONSTS, ex["snr_db"], ex["compute_flops"], ex["mem_bw_bytes_per_s"], ex["load"], L,
        model.nl_tokens(L, rho), ex["receiver_load"],
    )
    s = initial_state(CFG, (6,), kv_pool_bytes=np.inf)
    first = session_terms(CONSTS, s, **ex, context_tokens=L, new_tokens=L, nl_ratio=rho)
    for f in model.TERM_ARRAY_FIELDS:  # per-token costs times tokens: equal up to one rounding
        np.testing.assert_allclose(getattr(first, f), getattr(single, f), rtol=1e-15, atol=0)
    d = solvers.jmsra(first)
    s, _ = transition(s, d.media, L, 0)
    for t in (1, 2, 3):
        terms = session_terms(CONSTS, s, **ex, context_tokens=L, new_tokens=np.zeros_like(L), nl_ratio=rho)
        all_nl = model.latency(terms, np.zeros((6, 4)), np.full((6, 4), 5e6))
        np.testing.assert_array_equal(all_nl.latency_s, single.answer_s)
        kv_left = np.where(d.media == 1, 0.0, L)  # a KV sender's whole cache is resident
        np.testing.assert_array_equal(terms.payload_bits[..., 1], kv_left * CONSTS.kv_bits_per_token)
        s, _ = transition(s, np.zeros((6, 4)), L, t)


# -- config ------------------------------------------------------------------------------------


def test_session_config_defaults_and_pool_follows_n():
    cfg = make_config()
    assert cfg.session.enabled is False
    assert (cfg.session.new_tokens_min, cfg.session.new_tokens_max) == (64, 512)
    assert cfg.kv_pool_bytes == 4 * 160 * 2**20
    assert make_config(n_agents=8).kv_pool_bytes == 8 * 160 * 2**20
    assert make_config({"session.kv_pool_bytes": 1e9}).kv_pool_bytes == 1e9
    assert make_config({"session": {"enabled": True}}).session.enabled is True


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"kv_pool_bytes": 0}, "session.kv_pool_bytes"),
        ({"kv_pool_bytes": -5.0}, "session.kv_pool_bytes"),
        ({"new_tokens_min": -1}, "session.new_tokens_min"),
        ({"new_tokens_max": -1, "new_tokens_min": 0}, "session.new_tokens_max"),
        ({"new_tokens_min": 100, "new_tokens_max": 50}, "session.new_tokens_max"),
        ({"session.enabled": "yes"}, "session.enabled"),
    ],
)
def test_bad_session_config_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        make_config(overrides)
