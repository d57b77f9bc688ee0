"""The Gymnasium environment: API checks, seeding, sufficient statistic, bad input, rendering."""

import multiprocessing
import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import jmsra_env
from jmsra_env import ENV_IDS, BoxActionWrapper, JMSRAEnv, encode_box, encode_dict
from jmsra_env import model as m
from jmsra_env.solvers import EXPERT_NAMES, optimal_bandwidth, solve
from jmsra_env.world import WorldProcess

# SB3 does not support Dict action spaces and says so; the Box twins exist for that reason.
WARNING_WHITELIST = ("The action space is not based off a numpy array",)


def _unexpected(records):
    return [str(w.message) for w in records if not str(w.message).startswith(WARNING_WHITELIST)]


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gymnasium_and_sb3_checkers_pass(env_id):
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        check_env(gym.make(env_id).unwrapped)
        sb3_check_env(gym.make(env_id).unwrapped)
    assert _unexpected(records) == []


@pytest.mark.parametrize("render_mode", ["ansi", "rgb_array"])
def test_checker_passes_with_rendering(render_mode):
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        check_env(gym.make("jmsra_env/JMSRA-v0", render_mode=render_mode).unwrapped)
    assert _unexpected(records) == []


def test_registration_is_idempotent():
    jmsra_env.register_envs()
    jmsra_env.register_envs()
    for env_id in ENV_IDS:
        assert env_id in gym.registry


def test_variants_configure_the_scenario():
    assert gym.make("jmsra_env/JMSRA-N8-v0").unwrapped.config.n_agents == 8
    assert gym.make("jmsra_env/JMSRA-N16-Box-v1").action_space.shape == (32,)
    stale = gym.make("jmsra_env/JMSRA-StaleCSI-v0").unwrapped.config
    assert stale.csi_delay == 1 and stale.fading_correlation == 0.9


def test_overrides_pass_through_make_and_keep_the_variant():
    env = gym.make("jmsra_env/JMSRA-N8-v0", config={"bandwidth_hz": 10e6})
    assert env.unwrapped.config.n_agents == 8
    assert env.unwrapped.config.channel.bandwidth_hz == 10e6
    env = gym.make("jmsra_env/JMSRA-v0", llm="mistral-7b", csi_delay=2)
    assert env.unwrapped.config.workload.llm == "mistral-7b" and env.unwrapped.config.csi_delay == 2
    with pytest.raises(ValueError, match="unknown config key 'bandwith_hz'"):
        gym.make("jmsra_env/JMSRA-v0", config={"bandwith_hz": 1.0})
    with pytest.raises(ValueError, match="unknown config key 'agents'"):
        gym.make("jmsra_env/JMSRA-v0", agents=3)


def _rollout(env, seed, steps, action):
    obs, _ = env.reset(seed=seed)
    trace = [obs["snr_db"].copy()]
    for _ in range(steps):
        obs, r, term, trunc, info = env.step(action)
        trace.append(np.concatenate([obs["snr_db"], obs["context_tokens"], [r]]))
        if term or trunc:
            obs, _ = env.reset()
    return np.concatenate(trace)


def test_same_seed_same_episode_different_seeds_differ(equal_nl_action):
    env = gym.make("jmsra_env/JMSRA-v0")
    a = equal_nl_action(4)
    first = _rollout(env, 7, 150, a)
    again = _rollout(gym.make("jmsra_env/JMSRA-v0"), 7, 150, a)
    other = _rollout(env, 8, 150, a)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_reset_with_seed_then_reset_is_deterministic(equal_nl_action):
    a = equal_nl_action(4)

    def seq():
        env = gym.make("jmsra_env/JMSRA-v0")
        out = [env.reset(seed=3)[0]["snr_db"]]
        for _ in range(3):
            env.step(a)
            out.append(env.reset()[0]["snr_db"])
        return np.concatenate(out)

    s1, s2 = seq(), seq()
    np.testing.assert_array_equal(s1, s2)
    assert len(np.unique(s1.reshape(4, 4), axis=0)) == 4  # every reset is a new episode


def test_episode_truncates_after_64_rounds(equal_nl_action):
    env = gym.make("jmsra_env/JMSRA-v0")
    env.reset(seed=0)
    flags = [env.step(equal_nl_action(4))[2:4] for _ in range(64)]
    assert all(not t for t, _ in flags)
    assert [tr for _, tr in flags] == [False] * 63 + [True]


def _world_stats(env, rounds=640):
    env.reset(seed=11)
    a = {"media": np.zeros(4, dtype=np.int8), "bandwidth": np.ones(4)}
    obs_all = []
    for _ in range(rounds):
        obs, *_ , trunc, _ = env.step(a)
        obs_all.append(obs)
        if trunc:
            env.reset()
    return {k: np.stack([o[k] for o in obs_all]) for k in obs_all[0]}


def test_observations_stay_in_their_documented_ranges():
    env = gym.make("jmsra_env/JMSRA-v0")
    s = _world_stats(env)
    for key, space in env.observation_space.spaces.items():
        assert np.all(s[key] >= space.low) and np.all(s[key] <= space.high), key
    ratio = s["nl_tokens"] / s["context_tokens"]
    assert ratio.min() >= 0.05 and ratio.max() <= 0.25 + 1.0 / 256
    assert s["context_tokens"].min() >= 256 and s["context_tokens"].max() <= 2048
    assert np.all(s["context_tokens"] == np.round(s["context_tokens"]))
    assert set(np.unique(s["compute_flops"])) <= {8e12, 10e12, 42e12}


def _lag1_snr_correlation(fading_correlation):
    """Correlation of consecutive full-band SNRs (dB) over many worlds at a fixed distance, without
    shadowing: only the fading moves the SNR."""
    from jmsra_env.world import WorldProcess

    cfg = jmsra_env.make_config(
        fading_correlation=fading_correlation, distance_min_m=100.0, distance_max_m=100.0,
        shadowing_sigma_db=0.0,
    )
    world = WorldProcess(cfg, n_envs=2000)
    rng = np.random.default_rng(0)
    world.reset(rng)
    before = world.observation()["snr_db"]
    world.step(rng)
    after = world.observation()["snr_db"]
    return np.corrcoef(before.ravel(), after.ravel())[0, 1], before


def test_fading_correlation_follows_the_config():
    corr_high, snr = _lag1_snr_correlation(0.9)
    corr_none, _ = _lag1_snr_correlation(0.0)
    assert corr_high > 0.6  # |h|^2 of a Gauss-Markov Rayleigh process: rho^2 = 0.81 in power
    assert abs(corr_none) < 0.1  # independent fading
    # Rayleigh: 10 log10 |h|^2 has mean -2.51 dB around the deterministic SNR at 100 m.
    deterministic = 23.0 - (128.1 - 37.6) + 165.0 - 10 * np.log10(20e6)
    assert np.mean(snr) - deterministic == pytest.approx(-2.51, abs=0.2)


def test_shadowing_is_stationary_with_sigma_8_db():
    cfg = jmsra_env.make_config(distance_min_m=100.0, distance_max_m=100.0, fading_correlation=1.0)
    from jmsra_env.world import WorldProcess

    world = WorldProcess(cfg, n_envs=4000)
    rng = np.random.default_rng(1)
    world.reset(rng)
    for _ in range(100):
        world.step(rng)
    snr = world.observation()["snr_db"]
    # distance fixed, fading frozen per world; std over worlds combines 8 dB shadowing and the
    # fixed fading draw (std of 10 log10 Exp(1) = 5.57 dB): sqrt(64 + 31.0) = 9.75 dB
    assert np.std(snr) == pytest.approx(np.sqrt(64 + (10 / np.log(10)) ** 2 * np.pi**2 / 6), rel=0.05)


def test_observation_is_a_sufficient_statistic():
    env = gym.make("jmsra_env/JMSRA-v0")
    cfg = env.unwrapped.config
    consts = m.model_constants(cfg)
    rng = np.random.default_rng(5)
    obs, _ = env.reset(seed=5)
    for _ in range(100):
        media = rng.integers(0, 2, 4)
        shares = rng.uniform(0.01, 1.0, 4)
        action = {"media": media, "bandwidth": shares}
        terms = m.terms_from_observation(consts, obs)
        expected = m.latency(terms, media, cfg.channel.bandwidth_hz * shares / shares.sum()).latency_s
        obs, reward, _, trunc, info = env.step(action)
        assert reward == -expected  # exact, not approximate
        assert info["latency_s"] == expected
        if trunc:
            obs, _ = env.reset()


def test_stale_csi_observation_is_one_round_old():
    env = gym.make("jmsra_env/JMSRA-StaleCSI-v0")
    cfg = env.unwrapped.config
    obs, _ = env.reset(seed=2)
    a = {"media": np.ones(4), "bandwidth": np.ones(4)}
    true_prev = m.snr_db_from_gain_hz(env.unwrapped.current_terms().gain_hz, cfg.channel.bandwidth_hz)
    differs = 0
    for _ in range(130):
        obs, reward, _, trunc, _ = env.step(a)
        if trunc:
            obs, _ = env.reset()
            true_prev = m.snr_db_from_gain_hz(env.unwrapped.current_terms().gain_hz, cfg.channel.bandwidth_hz)
            continue
        np.testing.assert_allclose(obs["snr_db"], true_prev, rtol=0, atol=1e-9)
        true_now = m.snr_db_from_gain_hz(env.unwrapped.current_terms().gain_hz, cfg.channel.bandwidth_hz)
        differs += not np.allclose(true_now, obs["snr_db"])
        true_prev = true_now
    assert differs > 100  # the observed channel really is stale


def test_zero_bandwidth_for_an_agent_with_payload_is_capped():
    env = gym.make("jmsra_env/JMSRA-v0")
    env.reset(seed=0)
    _, reward, _, _, info = env.step({"media": np.zeros(4), "bandwidth": np.array([1.0, 1.0, 0.0, 1.0])})
    assert info["capped"] is True
    assert reward == -60.0
    assert info["uncapped_latency_s"] == np.inf
    assert info["bandwidth_hz"][2] == 0.0 and info["transmission_s"][2] == np.inf


def test_all_zero_shares_mean_equal_split():
    env = gym.make("jmsra_env/JMSRA-v0")
    env.reset(seed=0)
    _, _, _, _, info = env.step({"media": np.zeros(4), "bandwidth": np.zeros(4)})
    np.testing.assert_array_equal(info["bandwidth_hz"], np.full(4, 5e6))


def test_info_breaks_the_latency_down():
    env = gym.make("jmsra_env/JMSRA-v0")
    env.reset(seed=4)
    _, reward, _, _, info = env.step({"media": np.array([0, 1, 0, 1]), "bandwidth": np.ones(4)})
    for key in ("media", "bandwidth_hz", "rate_bps", "compute_s", "transmission_s", "finish_s", "receiver_s"):
        assert info[key].shape == (4,)
    assert info["kv_share"] == 0.5 and info["capped"] is False
    total = info["finish_s"].max() + info["receiver_s"].sum() + info["answer_s"]
    assert -reward == pytest.approx(total, rel=1e-14)
    assert "jmsra_latency_s" not in info


@pytest.mark.parametrize(
    "action, field",
    [
        ({"media": np.zeros(4), "bandwidth": np.array([1.0, np.nan, 1.0, 1.0])}, "bandwidth"),
        ({"media": np.zeros(4), "bandwidth": np.array([1.0, np.inf, 1.0, 1.0])}, "bandwidth"),
        ({"media": np.zeros(4), "bandwidth": np.array([1.0, -0.1, 1.0, 1.0])}, "bandwidth"),
        ({"media": np.zeros(4), "bandwidth": np.ones(3)}, "bandwidth"),
        ({"media": np.array([0, 2, 0, 1]), "bandwidth": np.ones(4)}, "media"),
        ({"media": np.array([0, np.nan, 0, 1]), "bandwidth": np.ones(4)}, "media"),
        ({"media": np.zeros((2, 2)), "bandwidth": np.ones(4)}, "media"),
        ({"media": np.zeros(4)}, "bandwidth"),
        (np.zeros(8), "dict"),
    ],
)
def test_bad_actions_raise_and_the_env_stays_usable(action, field):
    env = gym.make("jmsra_env/JMSRA-v0")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=field):
        env.step(action)
    _, reward, _, _, _ = env.step({"media": np.zeros(4), "bandwidth": np.ones(4)})
    assert np.isfinite(reward)


@pytest.mark.parametrize(
    "action",
    [np.full(8, np.nan), np.ones(7), np.full(8, 1.5), np.full(8, -np.inf), "x"],
)
def test_bad_box_actions_raise(action):
    env = gym.make("jmsra_env/JMSRA-Box-v1")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(action)
    assert np.isfinite(env.step(np.zeros(8, dtype=np.float32))[1])


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="action_form"):
        JMSRAEnv(action_form="tuple")
    with pytest.raises(ValueError, match="render_mode"):
        JMSRAEnv(render_mode="human")
    with pytest.raises(ValueError, match="config must be"):
        JMSRAEnv(config=[("n_agents", 3)])


def _random_decision(rng, shape, bandwidth_hz):
    media = rng.integers(0, 2, shape)
    b = rng.dirichlet(np.ones(np.shape(media)[-1]), np.shape(media)[:-1] or None) * bandwidth_hz
    return media, b


def _world_terms(n, rounds, seed, **overrides):
    cfg = jmsra_env.make_config(n_agents=n, **overrides)
    world = WorldProcess(cfg, rounds)
    world.reset(np.random.default_rng(seed))
    return world.true_terms()


@pytest.mark.parametrize("n", [1, 4, 16])
def test_box_encoding_round_trip_preserves_the_latency(n):
    terms = _world_terms(n, 200, n)
    rng = np.random.default_rng(n)
    media, b = _random_decision(rng, (200, n), terms.bandwidth_hz)
    a = encode_box(media, b, terms)
    assert a.shape == (200, 2 * n) and np.all(np.abs(a) <= 1.0)
    media2, b2 = jmsra_env.decode_box(a, terms)
    np.testing.assert_array_equal(media2, media)
    before, after = m.latency(terms, media, b), m.latency(terms, media2, b2)
    met = ~before.capped
    np.testing.assert_allclose(b2[met], b[met], rtol=1e-9)
    np.testing.assert_allclose(after.latency_s[met], before.latency_s[met], rtol=1e-9)
    # a decision that misses the cap comes back at the cap floor: within 1e-10 of the spare of it
    np.testing.assert_allclose(after.latency_s, before.latency_s, rtol=1e-7)
    d = encode_dict(media, b)
    media3, b3 = jmsra_env.decode_dict(d, n, terms.bandwidth_hz, (200,))
    np.testing.assert_array_equal(media3, media)
    np.testing.assert_allclose(b3, b, rtol=1e-12)


def test_box_and_dict_envs_charge_the_same_latency_for_the_same_decision():
    dict_env = gym.make("jmsra_env/JMSRA-v0")
    box_env = gym.make("jmsra_env/JMSRA-Box-v1")
    wrapped = BoxActionWrapper(gym.make("jmsra_env/JMSRA-v0"))
    assert wrapped.action_space == box_env.action_space
    rng = np.random.default_rng(0)
    for e in (dict_env, box_env, wrapped):
        e.reset(seed=9)
    for _ in range(70):
        media, b = _random_decision(rng, 4, 20e6)
        terms = box_env.unwrapped.observed_terms()
        r_dict = dict_env.step(encode_dict(media, b))[1]
        r_box = box_env.step(encode_box(media, b, terms))[1]
        r_wrapped = wrapped.step(encode_box(media, b, terms))[1]
        assert r_box == pytest.approx(r_dict, rel=1e-7)  # 1e-9 unless capped (see the round trip)
        assert r_wrapped == pytest.approx(r_box, rel=1e-12)


def test_float32_box_actions_lose_little():
    env = gym.make("jmsra_env/JMSRA-Box-v1")
    env.reset(seed=1)
    terms = env.unwrapped.current_terms()
    media, b = np.array([1, 0, 1, 0]), np.array([8e6, 2e6, 6e6, 4e6])
    exact = m.latency(terms, media, b).latency_s
    reward = env.step(encode_box(media, b, terms).astype(np.float32))[1]
    assert -reward == pytest.approx(exact, rel=1e-6)


@pytest.mark.parametrize("name", EXPERT_NAMES)
def test_float32_cast_of_every_expert_box_action_keeps_its_latency(name):
    for n in (4, 16) if name != "optimal" else (4, 8):
        terms = _world_terms(n, 1500, 7)
        d = solve(name, terms, rng=np.random.default_rng(0))
        a32 = encode_box(d.media, d.bandwidth_hz, terms).astype(np.float32)
        media, b = jmsra_env.decode_box(a32, terms)
        np.testing.assert_array_equal(media, d.media)
        np.testing.assert_allclose(m.latency(terms, media, b).latency_s, d.latency_s, rtol=1e-6)


@pytest.mark.parametrize("kind", ["gaussian-std-1", "uniform", "corners"])
def test_no_box_action_caps_a_round_that_its_media_allow_uncapped(kind):
    n, rounds = 16, 2000
    terms = _world_terms(n, rounds, 3)
    rng = np.random.default_rng(5)
    if kind == "gaussian-std-1":
        a = np.clip(rng.normal(size=(rounds, 2 * n)), -1.0, 1.0)
    elif kind == "uniform":
        a = rng.uniform(-1.0, 1.0, (rounds, 2 * n))
    else:
        a = rng.choice([-1.0, 1.0], (rounds, 2 * n))
    media, b = jmsra_env.decode_box(a.astype(np.float32), terms)
    assert np.all(b[m.select_medium(terms.payload_bits, media) > 0] > 0.0)
    capped = m.latency(terms, media, b).capped
    _, best = optimal_bandwidth(terms, media)
    avoidable = best < terms.latency_cap_s * (1 - 1e-9)
    assert capped.any() and not (capped & avoidable).any()


def test_box_v0_ids_point_to_v1():
    with pytest.raises(gym.error.DeprecatedEnv, match="JMSRA-N8-Box-v1"):
        gym.make("jmsra_env/JMSRA-N8-Box-v0")


def test_render_modes():
    env = gym.make("jmsra_env/JMSRA-v0", render_mode="ansi")
    env.reset(seed=0)
    assert "no decision yet" in env.render()
    env.step({"media": np.array([0, 1, 0, 1]), "bandwidth": np.ones(4)})
    text = env.render()
    assert "E2E latency" in text and text.count("KV") >= 2 and len(text.splitlines()) == 6
    env = gym.make("jmsra_env/JMSRA-v0", render_mode="rgb_array")
    env.reset(seed=0)
    env.step({"media": np.array([0, 1, 0, 1]), "bandwidth": np.ones(4)})
    img = env.render()
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert img.std() > 0  # something was drawn


def test_env_pickles():
    env = JMSRAEnv(n_agents=3)
    env2 = pickle.loads(pickle.dumps(env))
    assert env2.config == env.config


def _spawn_rollout(env_id):
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import SubprocVecEnv

    venv = make_vec_env(
        env_id, n_envs=2, seed=0, vec_env_cls=SubprocVecEnv, vec_env_kwargs={"start_method": "spawn"}
    )
    try:
        obs = venv.reset()
        assert obs["snr_db"].shape == (2, 4)
        assert not np.array_equal(obs["snr_db"][0], obs["snr_db"][1])
        obs, rewards, dones, infos = venv.step(np.zeros((2, 8), dtype=np.float32))
        assert rewards.shape == (2,) and np.all(rewards < 0)
        assert "latency_s" in infos[0]
    finally:
        venv.close()


def test_works_under_subproc_vec_env_with_spawn_by_module_prefixed_id():
    # In a spawned child only the pickled env factory is loaded; "module:id" makes gymnasium
    # import jmsra_env (which registers the IDs) before looking the ID up.
    assert "spawn" in multiprocessing.get_all_start_methods()
    _spawn_rollout("jmsra_env:jmsra_env/JMSRA-Box-v1")


def test_works_under_subproc_vec_env_with_spawn_from_a_script(tmp_path):
    # A user's script that imports jmsra_env: spawn re-imports the main module in each child.
    import subprocess
    import sys
    import textwrap

    script = tmp_path / "train_script.py"
    script.write_text(textwrap.dedent("""
        import numpy as np
        import jmsra_env
        from stable_baselines3.common.env_util import make_vec_env
        from stable_baselines3.common.vec_env import SubprocVecEnv

        if __name__ == "__main__":
            venv = make_vec_env("jmsra_env/JMSRA-Box-v1", n_envs=2, seed=0, vec_env_cls=SubprocVecEnv,
                                vec_env_kwargs={"start_method": "spawn"})
            venv.reset()
            _, rewards, _, _ = venv.step(np.zeros((2, 8), dtype=np.float32))
            venv.close()
            print("rewards", rewards.tolist())
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "rewards" in out.stdout


# -- compatibility with RL libraries (issue 12) --------------------------------------------


@pytest.mark.parametrize("catch", [TypeError, ValueError])
def test_an_unknown_keyword_is_both_a_type_error_and_a_value_error(catch):
    """TorchRL's GymEnv passes frameskip=1 and drops it on a TypeError naming it."""
    with pytest.raises(catch, match="unexpected keyword argument 'frameskip'"):
        gym.make("jmsra_env/JMSRA-v0", frameskip=1)


def _episode_length(env, limit=300):
    env.reset(seed=0)
    action = {"media": np.zeros(4), "bandwidth": np.ones(4)}
    for t in range(1, limit + 1):
        _, _, terminated, truncated, _ = env.step(action)
        assert not terminated
        if truncated:
            return t
    return None


@pytest.mark.parametrize("steps", [10, 100])
def test_max_episode_steps_of_make_sets_the_episode_length(steps):
    env = gym.make("jmsra_env/JMSRA-v0", max_episode_steps=steps)
    assert _episode_length(env) == steps and env.spec.max_episode_steps == steps
    assert _episode_length(env) == steps  # and again after a reset


def test_episode_rounds_still_sets_the_length_without_max_episode_steps():
    assert _episode_length(gym.make("jmsra_env/JMSRA-v0")) == 64
    assert _episode_length(gym.make("jmsra_env/JMSRA-v0", config={"episode_rounds": 70})) == 70
    assert _episode_length(gym.wrappers.TimeLimit(JMSRAEnv(episode_rounds=5), 100)) == 100
