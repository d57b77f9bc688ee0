"""The functional core on its two backends: the torch backend against the NumPy reference."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import jmsra_env
from jmsra_env import actions, encoding, model
from jmsra_env import bandwidth as bw
from jmsra_env.backend import NUMPY, namespace, to_numpy
from jmsra_env.config import make_config
from jmsra_env.core import Core
from jmsra_env.registration import ENV_IDS, SESSION_ENV_IDS
from jmsra_env.solvers import solve


def _vec(id_, m=64, **kw):
    kw.setdefault("device", "cpu")
    return gym.make_vec(id_, num_envs=m, vectorization_mode="vector_entry_point", backend="torch", **kw)


def _numpy_terms(cfg, m=256, seed=0):
    core = Core(cfg, m)
    core.reset(np.random.default_rng(seed))
    return core.terms


def _torch_terms(t: model.RoundTerms, dtype=torch.float64) -> model.RoundTerms:
    arrays = [torch.as_tensor(getattr(t, f), dtype=dtype) for f in model.TERM_ARRAY_FIELDS]
    return model.RoundTerms(*arrays, t.bandwidth_hz, t.latency_cap_s)


def test_namespace_of_numpy_is_numpy_itself():
    assert namespace(np.zeros(2)) is NUMPY and NUMPY.where is np.where
    assert namespace(torch.zeros(2)).is_torch


@pytest.mark.parametrize("variant", ["JMSRA", "JMSRA-Session-TightPool"])
def test_charge_agrees_with_numpy_to_1e12_in_float64(variant):
    base = {**jmsra_env.VARIANTS, **jmsra_env.registration.SESSION_VARIANTS}[variant]
    cfg = make_config(None, **base)
    terms = _numpy_terms(cfg)
    rng = np.random.default_rng(1)
    media = rng.integers(0, 2, terms.prefill_s.shape).astype(np.int8)
    shares = rng.random(terms.prefill_s.shape) ** 4  # skewed splits, some tiny
    b = actions.shares_to_bandwidth_hz(shares, cfg.channel.bandwidth_hz)
    ref = model.latency(terms, media, b)
    got = model.latency(_torch_terms(terms), torch.as_tensor(media), torch.as_tensor(b))
    for field in ("uncapped_latency_s", "finish_s", "rate_bps", "transmission_s"):
        r, g = getattr(ref, field), to_numpy(getattr(got, field))
        np.testing.assert_allclose(g, r, rtol=1e-12, err_msg=field)
    # the expert's decision too (JMSRA), and float32 stays close
    jm = solve("jmsra", terms)
    ref = model.latency(terms, jm.media, jm.bandwidth_hz).latency_s
    got32 = model.latency(_torch_terms(terms, torch.float32), torch.as_tensor(jm.media),
                          torch.as_tensor(jm.bandwidth_hz, dtype=torch.float32)).latency_s
    np.testing.assert_allclose(to_numpy(got32), ref, rtol=1e-5)


def test_rate_is_safe_on_torch_at_the_extremes():
    a = torch.tensor([1e6, 1e6, 1e6, 1e300, 0.0], dtype=torch.float64)
    b = torch.tensor([0.0, 5e-324, 1e300, 1.0, 1.0], dtype=torch.float64)
    r = model.rate_bps(b, a)
    ref = model.rate_bps(b.numpy(), a.numpy())
    np.testing.assert_allclose(r.numpy(), ref, rtol=1e-12)
    assert torch.isfinite(r).all()


def test_deadline_decision_charges_as_the_numpy_encoding():
    envs = gym.make_vec("jmsra_env/JMSRA-Box-v1", num_envs=128, vectorization_mode="vector_entry_point")
    obs, _ = envs.reset(seed=3)
    consts = envs.unwrapped.consts
    code = np.random.default_rng(0).uniform(-1, 1, (128, 8))
    env_action = encoding.decode_deadline(code, obs, consts)
    media, b = actions.decode_box(env_action, envs.unwrapped.current_terms())
    ref = model.latency(envs.unwrapped.current_terms(), media, b).latency_s
    tobs = {k: torch.as_tensor(v) for k, v in obs.items()}
    tterms = _torch_terms(envs.unwrapped.current_terms())
    tm, tb = encoding.deadline_decision(torch.as_tensor(code), tobs, consts)
    tm, tb = actions.box_decision(actions.encode_box(tm, tb, tterms), tterms)
    got = model.latency(tterms, tm, tb).latency_s
    np.testing.assert_allclose(to_numpy(got), ref, rtol=1e-9)


@pytest.mark.parametrize("gpu_like", [False, True])
@pytest.mark.parametrize("id_", ["jmsra_env/JMSRA-Box-v1", "jmsra_env/JMSRA-Session-TightPool-Box-v1"])
def test_solved_encoding_on_torch_charges_the_optimal_split(id_, gpu_like, monkeypatch):
    """``action_encoding="solved"`` on the torch backend: the (P2) split for the action's media;
    zero split codes are charged what the optimal split is charged. On the CPU the NumPy solver
    decodes; ``gpu_like`` runs the env as on a GPU (no host branch anywhere: the (P2) split by the
    torch solver on the device)."""
    if gpu_like:
        from jmsra_env.backend import TorchNamespace

        monkeypatch.setattr(TorchNamespace, "host", property(lambda self: False))
        monkeypatch.setattr(encoding, "decode_solved", None)  # the host decoder is never reached
    envs = _vec(id_, m=16, dtype=torch.float64, action_encoding="solved")
    envs.reset(seed=4)
    u = envs.unwrapped
    rng = np.random.default_rng(0)
    for _ in range(3):
        media = rng.integers(0, 2, (16, u.config.n_agents))
        obs = to_numpy(u.raw_observation)
        terms = model.terms_from_observation(u.consts, obs)
        best = bw.optimal_bandwidth(terms, media)[1]
        act = np.concatenate([2.0 * media - 1.0, np.zeros_like(media, dtype=float)], axis=-1)
        decided_media, decided_hz = u.decode_action(torch.as_tensor(act))  # what step charges
        _, reward, _, _, info = envs.step(torch.as_tensor(act))
        assert torch.equal(info["media"], decided_media) and torch.equal(info["bandwidth_hz"], decided_hz)
        assert torch.equal(info["media"].to(torch.int64), torch.as_tensor(media))
        np.testing.assert_allclose(-to_numpy(reward), best, rtol=1e-9)


@pytest.mark.parametrize("id_", ENV_IDS + SESSION_ENV_IDS)
def test_every_id_runs_on_torch_with_every_option(id_):
    box = "-Box-" in id_
    for features in (None, "physics"):
        enc = "deadline" if box else None
        envs = _vec(id_, m=8, features=features, action_encoding=enc, dtype=torch.float32)
        obs, _ = envs.reset(seed=0)
        if features:
            assert obs.shape == (8, envs.single_observation_space.shape[0]) and obs.dtype == torch.float32
            assert torch.isfinite(obs).all()
        else:
            assert set(obs) == set(envs.single_observation_space.spaces)
        n = envs.unwrapped.config.n_agents
        act = torch.zeros(8, 2 * n) if box else {"media": torch.ones(8, n), "bandwidth": torch.ones(8, n)}
        obs, reward, term, trunc, info = envs.step(act)
        assert reward.shape == (8,) and bool((reward < 0).all()) and not bool(term.any())
        assert ("evictions" in info) == ("Session" in id_)


def test_same_seed_same_episode_different_seed_different():
    def run(seed):
        envs = _vec("jmsra_env/JMSRA-Session-Box-v1", m=16, features="physics", action_encoding="deadline")
        out = [envs.reset(seed=seed)[0]]
        a = torch.linspace(-1, 1, 16 * 8).reshape(16, 8)
        for _ in range(5):
            out.append(envs.step(a)[0])
        return torch.stack(out)

    assert torch.equal(run(5), run(5))
    assert not torch.equal(run(5), run(6))


def test_world_statistics_match_numpy_within_sampling_error():
    """Same distributions on both backends: means of the observed quantities after a few rounds
    (all-NL, equal split: the session's context growth and pool use included) over 4,096 envs."""
    m, rounds = 4096, 6
    for id_ in ("jmsra_env/JMSRA-v0", "jmsra_env/JMSRA-Session-TightPool-v0"):
        np_envs = gym.make_vec(id_, num_envs=m, vectorization_mode="vector_entry_point")
        t_envs = _vec(id_, m=m, dtype=torch.float64)
        n = np_envs.unwrapped.config.n_agents
        kv = np.zeros((m, n), np.int8)
        kv[:, 0] = 1  # agent 0 sends KV: the pool fills up
        a_np = {"media": kv, "bandwidth": np.ones((m, n))}
        a_t = {k: torch.as_tensor(v) for k, v in a_np.items()}
        o_np, _ = np_envs.reset(seed=0)
        o_t, _ = t_envs.reset(seed=0)
        for _ in range(rounds):
            o_np, r_np, *_ = np_envs.step(a_np)
            o_t, r_t, *_ = t_envs.step(a_t)
        series = {k: (o_np[k], to_numpy(o_t[k])) for k in o_np}
        series["reward"] = (r_np, to_numpy(r_t))
        for key, (x, y) in series.items():
            x, y = x.reshape(m, -1).mean(axis=1), y.reshape(m, -1).mean(axis=1)
            se = np.sqrt(x.var() / m + y.var() / m)
            assert abs(x.mean() - y.mean()) <= 5 * se + 1e-12 * abs(x.mean()), (id_, key, x.mean(), y.mean(), se)


def test_bad_actions_are_refused_naming_the_field():
    envs = _vec("jmsra_env/JMSRA-Box-v1", m=4)
    envs.reset(seed=0)
    for bad in (torch.full((4, 8), float("nan")), torch.full((4, 8), float("inf")), torch.zeros(4, 7),
                torch.zeros(4, 8, dtype=torch.complex64), np.array([["a"] * 8] * 4), torch.full((4, 8), 2.0)):
        with pytest.raises(ValueError, match="'action'"):
            envs.step(bad)
    denv = _vec("jmsra_env/JMSRA-v0", m=4)
    denv.reset(seed=0)
    with pytest.raises(ValueError, match="'bandwidth' must be non-negative"):
        denv.step({"media": torch.zeros(4, 4), "bandwidth": -torch.ones(4, 4)})
    nan, inf = torch.full((4, 4), float("nan")), torch.full((4, 4), float("inf"))
    for media, shares, why in [(nan, torch.ones(4, 4), "'media' must be finite"),
                               (torch.zeros(4, 4), inf, "'bandwidth' must be finite"),
                               (torch.full((4, 4), 0.5), torch.ones(4, 4), "'media' must hold 0 \\(NL\\) or 1"),
                               (torch.zeros(4, 4), -inf, "'bandwidth' must be finite")]:
        with pytest.raises(ValueError, match=why):
            denv.step({"media": media, "bandwidth": shares})
    with pytest.raises(ValueError, match="'action' must be finite"):
        envs.step(torch.full((4, 8), float("nan")))
    with pytest.raises(ValueError, match="action_encoding must be one of"):
        _vec("jmsra_env/JMSRA-Box-v1", m=4, action_encoding="optimal")
    with pytest.raises(ValueError, match="backend"):
        gym.make_vec("jmsra_env/JMSRA-v0", num_envs=2, vectorization_mode="vector_entry_point", backend="jax")


def test_same_step_autoreset_keeps_the_final_observation():
    envs = _vec("jmsra_env/JMSRA-Box-v1", m=4, features="log", episode_rounds=3)
    obs, _ = envs.reset(seed=0)
    a = torch.zeros(4, 8)
    for t in range(3):
        last = obs
        obs, reward, term, trunc, info = envs.step(a)
    assert bool(trunc.all()) and bool(info["_final_obs"].all())
    assert not torch.equal(info["final_obs"], obs)  # obs is the next episode's first
    assert bool((envs.unwrapped.core.round == 0).all())
    assert not torch.equal(last, info["final_obs"])


def test_cuda_is_refused_without_cuda():
    if torch.cuda.is_available():  # on a GPU machine the env runs there
        envs = _vec("jmsra_env/JMSRA-Box-v1", m=4, device="cuda")
        obs, _ = envs.reset(seed=0)
        assert obs["snr_db"].is_cuda
        return
    with pytest.raises(ValueError, match="CUDA"):
        _vec("jmsra_env/JMSRA-Box-v1", m=4, device="cuda")


@pytest.mark.parametrize("id_", ["jmsra_env/JMSRA-Box-v1", "jmsra_env/JMSRA-Session-Box-v1"])
def test_torchrl_env_passes_check_env_specs_and_is_seeded(id_):
    from torchrl.envs.utils import check_env_specs

    from jmsra_env.core.torchrl_env import JMSRATorchRLEnv

    check_env_specs(JMSRATorchRLEnv(id_, num_envs=4, seed=0, episode_rounds=3))

    def rollout(seed):
        env = JMSRATorchRLEnv(id_, num_envs=4, seed=seed, episode_rounds=3)
        torch.manual_seed(0)  # the random actions of rollout()
        return env.rollout(7, break_when_any_done=False)

    a, b, c = rollout(1), rollout(1), rollout(2)
    assert torch.equal(a["next", "observation"], b["next", "observation"])
    assert not torch.equal(a["next", "observation"], c["next", "observation"])
    assert int(a["next", "done"].sum()) == 2 * 4  # rounds 3 and 6 end every episode
    assert bool((a["next", "reward"] < 0).all())
    with pytest.raises(ValueError, match="Box ID"):
        JMSRATorchRLEnv("jmsra_env/JMSRA-v0")


@pytest.mark.parametrize("id_", ["jmsra_env/JMSRA-v0", "jmsra_env/JMSRA-Session-v0"])
def test_batched_team_env_charges_the_central_decision(id_):
    from jmsra_env.core.multiagent import TorchTeamEnv

    team = TorchTeamEnv(id_, num_envs=6, device="cpu", dtype=torch.float64)
    agent_obs, state = team.reset(seed=4)
    n = team.n_agents
    assert agent_obs.shape == (6, n, team.n_agent_features) and state.shape == (6, team.n_state_features)
    # each agent's block is its own slice of the central features; the broadcast part is shared
    k = 18
    assert torch.equal(agent_obs[:, 1, :k], state[:, k : 2 * k])
    assert torch.equal(agent_obs[:, 0, -1], agent_obs[:, n - 1, -1])
    acts = torch.rand(6, n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    terms = team.venv.core.terms
    media = (acts[..., 0] > 0.5).to(torch.int8)
    b = jmsra_env.actions.shares_to_bandwidth_hz(acts[..., 1], team.config.channel.bandwidth_hz)
    want = model.latency(terms, media, b).latency_s
    _, _, reward, done, info = team.step(acts)
    assert torch.allclose(-reward[:, 0], want, rtol=1e-12) and torch.equal(reward[:, 0], reward[:, -1])
    with pytest.raises(ValueError, match="shape"):
        team.step(torch.zeros(6, n, 3))
    with pytest.raises(ValueError, match="finite"):
        team.step(torch.full((6, n, 2), float("nan")))


def test_branch_free_forms_equal_the_host_forms(monkeypatch):
    """Under torch.compile (and on a GPU) the physics takes branch-free forms; they give the
    host forms' values, at the extremes included (here run eagerly, as if compiling)."""
    x64 = dict(dtype=torch.float64)
    shares = torch.tensor([[1e-310, 3e-310, 0.0, 0.0], [1e300, 1e308, 1e308, 2.0], [0.0] * 4, [0.1, 0.2, 0.3, 0.4],
                           [1e-320, 0.0, 0.0, 5e-324]], **x64)
    b = torch.tensor([0.0, 5e-324, 1e-300, 1.0, 1e6, 1e12, 1e300, float("inf")], **x64)
    a = torch.tensor([1e6, 1e6, 1e-3, 1e6, 3e6, 1e5, 1e300, 2e6], **x64)
    r = torch.tensor([0.0, 1.0, 1e3, 1e6, 4e6, 1.4e6 / np.log(2) * 0.999999, 1e6 / np.log(2) * 1.5, 1e-9], **x64)
    g = torch.full_like(r, 1.4e6)

    def pieces():
        return (actions.shares_to_bandwidth_hz(shares, 20e6), model.rate_bps(b, a), model.inverse_rate_hz(r, g),
                model.spectral_efficiency_nats(torch.logspace(-12, 2, 57, **x64)))

    host = pieces()
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert not namespace(shares).host
    free = pieces()
    for h, f in zip(host, free):
        torch.testing.assert_close(f, h, rtol=1e-15, atol=0.0)


def test_compiled_round_equals_the_eager_round():
    """``compile=True``: the same episode as the eager env (one graph each, no graph break:
    ``fullgraph=True`` would raise), on a session ID with the features and the deadline encoding."""
    kw = dict(m=6, dtype=torch.float64, features="physics", action_encoding="deadline")
    eager = _vec("jmsra_env/JMSRA-Session-Box-v1", **kw)
    compiled = _vec("jmsra_env/JMSRA-Session-Box-v1", compile=True, **kw)
    assert compiled.unwrapped.compile and not eager.unwrapped.compile
    o1, _ = eager.reset(seed=3)
    o2, _ = compiled.reset(seed=3)
    torch.testing.assert_close(o2, o1, rtol=1e-6, atol=1e-6)
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        act = torch.rand((6, 8), generator=gen, dtype=torch.float64) * 2 - 1
        o1, r1, _, _, i1 = eager.step(act)
        o2, r2, _, _, i2 = compiled.step(act)
        torch.testing.assert_close(r2, r1, rtol=1e-9, atol=0.0)
        torch.testing.assert_close(i2["bandwidth_hz"], i1["bandwidth_hz"], rtol=1e-9, atol=1e-3)
        assert torch.equal(i2["media"], i1["media"]) and torch.equal(i2["evictions"], i1["evictions"])
        torch.testing.assert_close(o2, o1, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="compile must be True or False"):
        _vec("jmsra_env/JMSRA-v0", m=2, compile="yes")


@pytest.mark.parametrize("kw", [dict(compile=True), dict(device="cpu"), dict(dtype=torch.float32)])
def test_torch_only_arguments_are_refused_on_numpy_naming_them(kw):
    (name,) = kw
    with pytest.raises(ValueError, match=f"{name}= applies to the torch backend only"):
        gym.make("jmsra_env/JMSRA-Session-v0", **kw)
    with pytest.raises(ValueError, match=f"{name}= applies to the torch backend only"):
        gym.make_vec("jmsra_env/JMSRA-Box-v1", num_envs=2, vectorization_mode="vector_entry_point", **kw)


@pytest.mark.parametrize("mode", ["SameStep", "NextStep", "Disabled"])
def test_every_env_truncates_at_its_own_episode_end_after_partial_resets(mode):
    """Envs reset at different rounds (a mask mid-episode) each truncate after exactly
    ``episode_rounds`` steps of their own, in every autoreset mode."""
    e = _vec("jmsra_env/JMSRA-Box-v1", m=3, autoreset_mode=mode, episode_rounds=5)
    e.reset(seed=0)
    act = torch.zeros((3, 8))
    ends = {0: [], 1: [], 2: []}
    for t in range(17):
        if t == 2:
            e.reset(options={"reset_mask": torch.tensor([False, True, False])})
        _, _, _, trunc, info = e.step(act)
        for i in range(3):
            if trunc[i]:
                ends[i].append(t)
        if mode == "Disabled" and trunc.any():
            e.reset(options={"reset_mask": trunc.clone()})
    period = 5 if mode != "NextStep" else 6  # NextStep spends one step on the reset
    assert ends[0] == list(range(4, 17, period)) and ends[2] == ends[0]
    assert ends[1] == list(range(6, 17, period))


def test_branch_free_session_transition_equals_the_host_one(monkeypatch):
    """The receiver's LRU eviction without host syncs (a GPU): every pass run, the same state."""
    from jmsra_env import session

    cfg = make_config()
    bpt = model.model_constants(cfg).kv_bits_per_token / 8.0
    rng = np.random.default_rng(1)

    def rollout():
        s = session.initial_state(cfg, (16,), kv_pool_bytes=3000 * bpt)
        s = session.SessionState(*(torch.as_tensor(getattr(s, f)) for f in ("seen_tokens", "kv_tokens", "last_kv_round")),
                                 s.kv_pool_bytes, s.kv_bytes_per_token)
        L, out = torch.zeros(16, 4, dtype=torch.float64), []
        for t in range(6):
            L = L + torch.as_tensor(rng.integers(0, 1500, (16, 4)), dtype=torch.float64)
            s, ev = session.transition(s, torch.as_tensor(rng.integers(0, 2, (16, 4))), L, t)
            out += [s.kv_tokens, s.seen_tokens, s.last_kv_round, ev, s.pool_used_bytes]
        return out

    host = rollout()
    assert any(bool(x.any()) for x in host[3::5])  # evictions happened
    rng = np.random.default_rng(1)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    for h, f in zip(host, rollout()):
        assert torch.equal(h, f)


def test_many_compiled_envs_in_one_process():
    """Each env compiles its own copy of the round (static shapes): more envs than torch's
    recompile limit (8) live side by side (with fullgraph=True an exhausted cache would raise)."""
    envs = [_vec("jmsra_env/JMSRA-v0", m=m, dtype=torch.float64, compile=True) for m in range(2, 11)]
    codes = {id(e.unwrapped._decide_charge._torchdynamo_orig_callable.__code__) for e in envs}  # own copies
    assert len(codes) == len(envs)
    for e in envs:
        e.reset(seed=0)
    for e in envs:
        m, n = e.num_envs, e.unwrapped.config.n_agents
        _, reward, *_ = e.step({"media": torch.ones(m, n), "bandwidth": torch.ones(m, n)})
        assert reward.shape == (m,) and bool((reward < 0).all())
