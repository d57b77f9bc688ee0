"""Session environments: registration, checkers, sufficient statistic, seeding, the batched twin."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import jmsra_env
from jmsra_env import model, session
from jmsra_env.registration import ENV_IDS, SESSION_ENV_IDS, env_id
from jmsra_env.session_env import (
    SESSION_OBS_KEYS,
    JMSRASessionEnv,
    JMSRASessionVectorEnv,
    SessionWorldProcess,
)

WARNING_WHITELIST = ("The action space is not based off a numpy array",)


def make_vec(id_, num_envs, **kwargs):
    return gym.make_vec(id_, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs)


def random_action(rng, n, batch=()):
    return {"media": rng.integers(0, 2, (*batch, n)).astype(np.int8), "bandwidth": rng.uniform(0.01, 1, (*batch, n))}


# -- registration and checkers ------------------------------------------------------------------


@pytest.mark.parametrize("id_", SESSION_ENV_IDS)
def test_gymnasium_and_sb3_checkers_pass_on_every_session_id(id_):
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        check_env(gym.make(id_).unwrapped)
        sb3_check_env(gym.make(id_).unwrapped)
    assert [str(w.message) for w in records if not str(w.message).startswith(WARNING_WHITELIST)] == []


def test_session_variants_configure_the_pool():
    mib = 2**20
    pools = {i: gym.make(i).unwrapped.config.kv_pool_bytes / mib for i in SESSION_ENV_IDS if "-Box" not in i}
    assert pools == {
        "jmsra_env/JMSRA-Session-v0": 640,
        "jmsra_env/JMSRA-Session-N8-v0": 1280,
        "jmsra_env/JMSRA-Session-TightPool-v0": 256,
        "jmsra_env/JMSRA-Session-LargePool-v0": 4096,
    }
    env = gym.make("jmsra_env/JMSRA-Session-N8-Box-v1")
    assert env.action_space.shape == (16,) and isinstance(env.unwrapped, JMSRASessionEnv)


def test_single_round_ids_stay_single_round():
    for id_ in ENV_IDS:
        env = gym.make(id_).unwrapped
        assert type(env) is jmsra_env.JMSRAEnv and not env.config.session.enabled
        assert "new_tokens" not in env.observation_space.spaces


def test_large_pool_never_binds():
    env = gym.make("jmsra_env/JMSRA-Session-LargePool-v0")
    env.reset(seed=0)
    kv_only = {"media": np.ones(4, dtype=np.int8), "bandwidth": np.ones(4)}
    for _ in range(64):
        *_, info = env.step(kv_only)
        assert info["evictions"] == 0
    assert info["kv_pool_used_fraction"] < 1.0


# -- the world's token process -------------------------------------------------------------------


def test_contexts_grow_by_the_new_tokens():
    env = JMSRASessionEnv()
    obs, _ = env.reset(seed=3)
    assert np.array_equal(obs["new_tokens"], obs["context_tokens"])  # dL(0) = L(0)
    assert ((256 <= obs["context_tokens"]) & (obs["context_tokens"] <= 2048)).all()
    for _ in range(64):
        prev = obs["context_tokens"]
        obs, *_ = env.step({"media": np.zeros(4, dtype=np.int8), "bandwidth": np.ones(4)})
        assert np.array_equal(obs["context_tokens"], prev + obs["new_tokens"])
        assert ((64 <= obs["new_tokens"]) & (obs["new_tokens"] <= 512)).all()


def test_session_world_draws_the_same_channel_as_the_single_round_world():
    """Only the token counts differ: the channels, devices and loads are the single-round world's."""
    cfg = jmsra_env.make_config({"session.enabled": True})
    a, b = SessionWorldProcess(cfg, 3), jmsra_env.world.WorldProcess(cfg, 3, chunk_rounds=cfg.episode_rounds + 1)
    a.reset(np.random.default_rng(0))
    b.reset(np.random.default_rng(0))
    oa, ob = a.observation(), b.observation()
    for key in ("snr_db", "load", "receiver_load", "compute_flops"):
        assert np.array_equal(oa[key], ob[key]), key


# -- sufficient statistic ------------------------------------------------------------------------


@pytest.mark.parametrize("id_", ["jmsra_env/JMSRA-Session-v0", "jmsra_env/JMSRA-Session-TightPool-v0"])
def test_observation_is_a_sufficient_statistic_for_reward_and_next_state(id_):
    env = gym.make(id_)
    cfg = env.unwrapped.config
    consts = model.model_constants(cfg)
    never = session.never_rounds(cfg)
    rng = np.random.default_rng(5)
    obs, _ = env.reset(seed=5)
    evictions = 0
    for _ in range(2 * cfg.episode_rounds):
        action = random_action(rng, cfg.n_agents)
        action["media"] = (rng.random(cfg.n_agents) < 0.7).astype(np.int8)  # KV-heavy: the pool binds
        shares = action["bandwidth"]
        terms = model.terms_from_observation(consts, obs)
        expected = model.latency(terms, action["media"], cfg.channel.bandwidth_hz * shares / shares.sum()).latency_s
        state = session.state_from_observation(obs, consts, never)
        nxt, evicted = session.transition(state, action["media"], obs["context_tokens"], 0)
        new_obs, reward, _, trunc, info = env.step(action)
        assert reward == -expected  # exact
        assert np.array_equal(evicted, info["evicted"])
        evictions += info["evictions"]
        if trunc:
            obs, _ = env.reset()
            continue
        assert np.array_equal(new_obs["kv_resident_tokens"], nxt.kv_tokens)
        assert np.array_equal(new_obs["unseen_tokens"], new_obs["context_tokens"] - nxt.seen_tokens)
        assert np.array_equal(new_obs["rounds_since_kv"], session.rounds_since_kv(nxt, 1, never))
        assert new_obs["kv_pool_used_fraction"][0] == nxt.pool_used_fraction
        obs = new_obs
    assert evictions > 0  # the check covered evictions


def test_info_reports_evictions_and_pool_usage():
    env = gym.make("jmsra_env/JMSRA-Session-TightPool-v0")
    env.reset(seed=1)
    kv_only = {"media": np.ones(4, dtype=np.int8), "bandwidth": np.ones(4)}
    used, total = [], 0
    for _ in range(64):
        *_, info = env.step(kv_only)
        used.append(info["kv_pool_used_bytes"])
        total += info["evictions"]
        assert info["evicted"].shape == (4,) and info["evictions"] == info["evicted"].sum()
        assert info["kv_pool_used_bytes"] <= 256 * 2**20
    assert total > 0 and info["kv_pool_used_fraction"] == used[-1] / (256 * 2**20)


# -- seeding -------------------------------------------------------------------------------------


def _episode(seed, rounds=64):
    env = gym.make("jmsra_env/JMSRA-Session-v0")
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(0)
    rewards, ctx = [], [obs["context_tokens"]]
    for _ in range(rounds):
        obs, r, *_ = env.step(random_action(rng, 4))
        rewards.append(r)
        ctx.append(obs["context_tokens"])
    return np.array(rewards), np.array(ctx)


def test_same_seed_same_session_different_seeds_differ():
    a, b, c = _episode(7), _episode(7), _episode(8)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[1], c[1])


def test_reset_empties_the_receiver():
    env = JMSRASessionEnv()
    env.reset(seed=0)
    env.step({"media": np.ones(4, dtype=np.int8), "bandwidth": np.ones(4)})
    assert env.receiver_state.kv_tokens.any()
    obs, _ = env.reset()
    assert not env.receiver_state.kv_tokens.any() and not env.receiver_state.seen_tokens.any()
    assert np.array_equal(obs["unseen_tokens"], obs["context_tokens"])
    assert (obs["rounds_since_kv"] == session.never_rounds(env.config)).all()


# -- the batched twin ----------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["dict", "box"])
@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP], ids=["next", "same"])
def test_a_batch_of_one_reproduces_the_single_session_env(form, mode):
    id_ = env_id("JMSRA-Session-TightPool", form)
    single = gym.make(id_)
    envs = make_vec(id_, 1, autoreset_mode=mode)
    assert isinstance(envs, JMSRASessionVectorEnv)
    assert envs.single_observation_space == single.observation_space
    rng = np.random.default_rng(7)

    def actions():
        a = random_action(rng, 4, (1,))
        if form == "box":
            box = jmsra_env.encode_box(a["media"], a["bandwidth"], envs.observed_terms())
            return box, box[0]
        return a, {k: v[0] for k, v in a.items()}

    obs_s, _ = single.reset(seed=42)
    obs_v, _ = envs.reset(seed=42)
    episodes = 0
    for _ in range(2 * 64):
        for key in obs_s:
            assert np.array_equal(obs_s[key], obs_v[key][0]), key
        action_v, action_s = actions()
        obs_s, r_s, _, tr_s, info_s = single.step(action_s)
        obs_v, r_v, _, tr_v, info_v = envs.step(action_v)
        assert r_v[0] == r_s and tr_v[0] == tr_s
        # SAME_STEP (as SyncVectorEnv): the round that ended an episode is in final_info
        ended = info_v["final_info"] if mode == AutoresetMode.SAME_STEP and tr_s else info_v
        for key in ("evictions", "kv_pool_used_bytes", "kv_pool_used_fraction", "latency_s"):
            assert ended[key][0] == info_s[key], key
        assert np.array_equal(ended["evicted"][0], info_s["evicted"])
        if tr_s:
            episodes += 1
            final = info_v["final_obs"][0] if mode == AutoresetMode.SAME_STEP else {k: v[0] for k, v in obs_v.items()}
            for key in obs_s:
                assert np.array_equal(obs_s[key], final[key]), key
            if mode == AutoresetMode.NEXT_STEP:
                obs_v, r_v, *_ = envs.step(actions()[0])
                assert r_v[0] == 0.0
            obs_s, _ = single.reset()
    assert episodes == 2


def test_sub_envs_reset_their_own_receiver_only():
    envs = JMSRASessionVectorEnv(3)
    envs.reset(seed=0)
    envs.step({"media": np.ones((3, 4), dtype=np.int8), "bandwidth": np.ones((3, 4))})
    obs, _ = envs.reset(options={"reset_mask": np.array([False, True, False])})
    kv = envs.receiver_state.kv_tokens
    assert kv[0].any() and not kv[1].any() and kv[2].any()
    assert (obs["rounds_since_kv"][1] == session.never_rounds(envs.config)).all()
    assert (obs["rounds_since_kv"][[0, 2]] == 1).all()


def test_session_observation_keys():
    env = JMSRASessionEnv()
    obs, _ = env.reset(seed=0)
    assert set(SESSION_OBS_KEYS) <= set(obs) and env.observation_space.contains(obs)


@pytest.mark.parametrize("id_", SESSION_ENV_IDS)
def test_make_vec_gives_the_batched_session_env_for_every_id(id_):
    envs = make_vec(id_, 3)
    single = gym.make(id_).unwrapped
    assert isinstance(envs, JMSRASessionVectorEnv) and envs.config == single.config
    assert envs.single_observation_space == single.observation_space
    assert envs.single_action_space == single.action_space
    obs, _ = envs.reset(seed=0)
    assert envs.observation_space.contains(obs)
    _, rewards, _, _, info = envs.step(envs.action_space.sample())
    assert rewards.shape == (3,) and info["evictions"].shape == (3,)


@pytest.mark.parametrize("id_", ["jmsra_env/JMSRA-Session-TightPool-v0", "jmsra_env/JMSRA-Session-LargePool-v0"])
def test_observations_stay_in_the_space_over_whole_kv_heavy_episodes(id_):
    envs = make_vec(id_, 16)
    rng = np.random.default_rng(0)
    obs, _ = envs.reset(seed=0)
    for _ in range(64):
        assert envs.observation_space.contains(obs)
        media = (rng.random((16, 4)) < 0.8).astype(np.int8)
        obs, *_ = envs.step({"media": media, "bandwidth": np.ones((16, 4))})
    assert envs.observation_space.contains(obs)  # the final observation, longest contexts
