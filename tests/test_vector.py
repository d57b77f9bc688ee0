"""The batched environment (JMSRAVectorEnv) and its Stable-Baselines3 adapter (NativeVecEnv)."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space
from scipy import stats

import jmsra_env
from jmsra_env import model
from jmsra_env.registration import env_id
from jmsra_env.vector import JMSRAVectorEnv


def make_vec(id_="jmsra_env/JMSRA-v0", num_envs=4, **kwargs):
    return gym.make_vec(id_, num_envs=num_envs, vectorization_mode="vector_entry_point", **kwargs)


def random_dict_actions(rng, m, n):
    """Mixed media and uneven shares, so that every term of the model is exercised."""
    return {"media": rng.integers(0, 2, (m, n)).astype(np.int8), "bandwidth": rng.random((m, n))}


def equal_split(m, n, media=0):
    return {"media": np.full((m, n), media, dtype=np.int8), "bandwidth": np.ones((m, n))}


def assert_info_row_equal(single_info, vector_info, i=0):
    for key, value in single_info.items():
        assert np.array_equal(np.asarray(value), vector_info[key][i]), key


# -- construction ---------------------------------------------------------------------------


@pytest.mark.parametrize("id_", jmsra_env.ENV_IDS)
def test_make_vec_returns_the_batched_env_for_every_id(id_):
    envs = make_vec(id_, num_envs=3)
    single = gym.make(id_).unwrapped
    assert isinstance(envs, JMSRAVectorEnv)
    assert envs.num_envs == 3
    assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP  # Gymnasium's default
    assert envs.config == single.config and envs.action_form == single.action_form
    assert envs.single_action_space == single.action_space
    assert envs.single_observation_space == single.observation_space
    obs, _ = envs.reset(seed=0)
    assert envs.observation_space.contains(obs)
    assert envs.action_space == batch_space(single.action_space, 3)
    _, rewards, _, _, _ = envs.step(envs.action_space.sample())
    assert rewards.shape == (3,) and np.all(rewards < 0.0)


def test_config_overrides_pass_through_make_vec_and_unknown_keys_are_rejected():
    envs = make_vec(num_envs=2, config={"n_agents": 6})
    assert envs.config.n_agents == 6 and envs.observation_space["snr_db"].shape == (2, 6)
    with pytest.raises(ValueError, match="no_such_key"):
        make_vec(num_envs=2, config={"no_such_key": 1})
    with pytest.raises(ValueError, match="num_envs"):
        JMSRAVectorEnv(0)


# -- seeding and exactness ------------------------------------------------------------------


def rollout(envs, seed, steps, action_seed=1):
    """The observed SNRs and contexts, and the rewards, of ``steps`` random decisions."""
    rng = np.random.default_rng(action_seed)
    n = envs.config.n_agents
    obs, _ = envs.reset(seed=seed)
    observed, rewards = [obs["snr_db"]], []
    for _ in range(steps):
        obs, reward, _, _, _ = envs.step(random_dict_actions(rng, envs.num_envs, n))
        observed += [obs["snr_db"], obs["context_tokens"]]
        rewards.append(reward)
    return observed, rewards


def test_same_seed_gives_the_same_batch_trajectories_and_other_seeds_differ():
    envs = JMSRAVectorEnv(8, episode_rounds=10)
    obs_a, rew_a = rollout(envs, seed=3, steps=25)
    obs_b, rew_b = rollout(JMSRAVectorEnv(8, episode_rounds=10), seed=3, steps=25)
    obs_c, rew_c = rollout(envs, seed=4, steps=25)
    assert all(np.array_equal(x, y) for x, y in zip(obs_a + rew_a, obs_b + rew_b))
    assert not any(np.array_equal(x, y) for x, y in zip(obs_a, obs_c))
    assert sum(np.array_equal(x, y) for x, y in zip(rew_a, rew_c)) == 2  # the two reset steps (0)


def test_reset_with_seed_then_without_is_a_deterministic_sequence():
    def episodes(envs):
        first, _ = envs.reset(seed=11)
        second, _ = envs.reset()
        return first["snr_db"], second["snr_db"]

    a, b = episodes(JMSRAVectorEnv(5)), episodes(JMSRAVectorEnv(5))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], a[1])


@pytest.mark.parametrize(
    "variant, overrides",
    [
        ("JMSRA", {}),
        ("JMSRA-StaleCSI", {}),
        ("JMSRA-N8", {"episode_rounds": 100}),
        ("JMSRA", {"jmsra_in_info": True, "episode_rounds": 20}),
    ],
)
@pytest.mark.parametrize("form", ["dict", "box"])
@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP], ids=["next", "same"])
def test_a_batch_of_one_reproduces_the_single_env_exactly(variant, overrides, form, mode):
    id_ = env_id(variant, form)
    single = gym.make(id_, **overrides)
    envs = make_vec(id_, num_envs=1, autoreset_mode=mode, **overrides)
    n, rounds = envs.config.n_agents, envs.config.episode_rounds
    rng = np.random.default_rng(7)

    def actions():
        dict_action = random_dict_actions(rng, 1, n)
        if form == "dict":
            return dict_action, {k: v[0] for k, v in dict_action.items()}
        terms = envs.observed_terms()
        box = jmsra_env.encode_box(dict_action["media"], dict_action["bandwidth"], terms).astype(np.float32)
        return box, box[0]

    obs_s, info_s = single.reset(seed=42)
    obs_v, info_v = envs.reset(seed=42)
    assert info_v["round"][0] == info_s["round"] == 0
    episodes = 0
    for _ in range(3 * rounds):  # three episodes, including two resets after truncation
        for key in obs_s:
            assert np.array_equal(obs_s[key], obs_v[key][0]), key
        action_v, action_s = actions()
        obs_s, reward_s, term_s, trunc_s, info_s = single.step(action_s)
        obs_v, reward_v, term_v, trunc_v, info_v = envs.step(action_v)
        assert reward_v[0] == reward_s and term_v[0] == term_s and trunc_v[0] == trunc_s
        same_step_end = trunc_s and mode == AutoresetMode.SAME_STEP  # the round is in final_info
        assert_info_row_equal(info_s, info_v["final_info"] if same_step_end else info_v)
        if trunc_s:
            episodes += 1
            if mode == AutoresetMode.SAME_STEP:  # the last observation is kept as final_obs
                for key in obs_s:
                    assert np.array_equal(obs_s[key], info_v["final_obs"][0][key]), key
                assert_info_row_equal(info_s, info_v["final_info"])
            else:  # the last observation is returned; the next step resets
                for key in obs_s:
                    assert np.array_equal(obs_s[key], obs_v[key][0]), key
                obs_v, reward_v, term_v, trunc_v, info_v = envs.step(actions()[0])
                assert reward_v[0] == 0.0 and not term_v[0] and not trunc_v[0]
                assert info_v["round"][0] == 0
            obs_s, _ = single.reset()
    assert episodes == 3


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP], ids=["next", "same"])
def test_a_batch_of_one_matches_gymnasium_sync_vector_env(mode):
    """Same observations, rewards, flags and (NEXT_STEP) infos as SyncVectorEnv over JMSRAEnv."""
    config = {"episode_rounds": 6}
    ours = make_vec(num_envs=1, config=config, autoreset_mode=mode)
    sync = gym.make_vec("jmsra_env/JMSRA-v0", num_envs=1, vectorization_mode="sync", config=config,
                        vector_kwargs={"autoreset_mode": mode})
    obs_o, info_o = ours.reset(seed=3)
    obs_s, info_s = sync.reset(seed=3)
    rng = np.random.default_rng(1)
    for _ in range(20):
        assert all(np.array_equal(obs_o[k], obs_s[k]) for k in obs_s)
        action = random_dict_actions(rng, 1, ours.config.n_agents)
        obs_o, rew_o, term_o, trunc_o, info_o = ours.step(action)
        obs_s, rew_s, term_s, trunc_s, info_s = sync.step(action)
        assert np.array_equal(rew_o, rew_s) and np.array_equal(term_o, term_s)
        assert np.array_equal(trunc_o, trunc_s)
        if mode == AutoresetMode.NEXT_STEP:
            assert sorted(info_o) == sorted(info_s)
            assert all(np.array_equal(info_o[k], info_s[k]) for k in info_s)
        elif trunc_s[0]:
            final_o, final_s = info_o["final_obs"][0], info_s["final_obs"][0]
            assert all(np.array_equal(final_o[k], final_s[k]) for k in final_s)


# -- distribution of the sub-environments ---------------------------------------------------


def episode_means_vector(m, seed, policy_media, rng_wrapper=None):
    envs = JMSRAVectorEnv(m)
    envs.reset(seed=seed)
    if rng_wrapper is not None:  # replace the generator after the seeded reset, then restart
        envs.np_random = rng_wrapper(envs.np_random)
        envs.reset()
    total = np.zeros(m)
    for _ in range(envs.config.episode_rounds):
        _, rewards, _, _, info = envs.step(equal_split(m, envs.config.n_agents, policy_media))
        total += info["latency_s"]
    return total / envs.config.episode_rounds


class CopiesOfOneWorld:
    """A broken generator: every sub-environment gets the draws of the first one (the worlds'
    axis of a draw is the one whose length is the number of worlds)."""

    def __init__(self, rng, n_worlds=512):
        self.rng = rng
        self.n_worlds = n_worlds

    def _copy(self, draw, size):
        size = (size,) if np.isscalar(size) else tuple(size)
        axis = size.index(self.n_worlds)
        one = draw(size[:axis] + (1,) + size[axis + 1 :])
        return np.broadcast_to(one, size).copy()

    def random(self, size):
        return self._copy(self.rng.random, size)

    def standard_normal(self, size):
        return self._copy(self.rng.standard_normal, size)


def episode_means_single(episodes, seed, policy_media):
    env = gym.make("jmsra_env/JMSRA-v0")
    n = env.unwrapped.config.n_agents
    action = {k: v[0] for k, v in equal_split(1, n, policy_media).items()}
    env.reset(seed=seed)
    means = []
    for _ in range(episodes):
        total, truncated, rounds = 0.0, False, 0
        while not truncated:
            _, _, _, truncated, info = env.step(action)
            total += info["latency_s"]
            rounds += 1
        means.append(total / rounds)
        env.reset()
    return np.asarray(means)


def same_distribution(batch_means, single_means, alpha=1e-4):
    """Episode-mean latencies agree in mean (within 4 standard errors, rounds within an episode are
    correlated so each episode counts once) and in spread (F test on the variances at ``alpha``)."""
    se = np.hypot(batch_means.std(ddof=1) / np.sqrt(batch_means.size),
                  single_means.std(ddof=1) / np.sqrt(single_means.size))
    mean_ok = abs(batch_means.mean() - single_means.mean()) <= 4.0 * se
    ratio = batch_means.var(ddof=1) / single_means.var(ddof=1)
    df = (batch_means.size - 1, single_means.size - 1)
    spread_ok = stats.f.ppf(alpha / 2, *df) <= ratio <= stats.f.ppf(1 - alpha / 2, *df)
    return bool(mean_ok and spread_ok)


@pytest.mark.parametrize("media", [0, 1], ids=["all-NL", "all-KV"])
def test_each_sub_env_draws_rounds_from_the_single_env_distribution(media):
    batch = episode_means_vector(512, seed=5, policy_media=media)
    single = episode_means_single(120, seed=6, policy_media=media)
    assert same_distribution(batch, single)
    # The check has power: a batch whose sub-environments are all copies of one world fails it.
    copies = episode_means_vector(512, seed=5, policy_media=media, rng_wrapper=CopiesOfOneWorld)
    assert np.ptp(copies) == 0.0 and not same_distribution(copies, single)


def test_sub_envs_differ_from_each_other():
    envs = JMSRAVectorEnv(16)
    obs, _ = envs.reset(seed=0)
    _, rewards, _, _, _ = envs.step(equal_split(16, envs.config.n_agents))
    assert np.unique(obs["snr_db"], axis=0).shape[0] == 16
    assert np.unique(obs["context_tokens"], axis=0).shape[0] == 16
    assert np.unique(rewards).size == 16


# -- actions --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "form, bad, field",
    [
        ("dict", lambda m, n: {"media": np.full((m, n), 2), "bandwidth": np.ones((m, n))}, "media"),
        ("dict", lambda m, n: {"media": np.zeros((m, n)), "bandwidth": -np.ones((m, n))}, "bandwidth"),
        ("dict", lambda m, n: {"media": np.zeros((m, n)), "bandwidth": np.full((m, n), np.nan)}, "bandwidth"),
        ("dict", lambda m, n: {"media": np.zeros(n), "bandwidth": np.ones(n)}, "media"),  # not batched
        ("dict", lambda m, n: {"media": np.zeros((m, n))}, "bandwidth"),
        ("box", lambda m, n: np.full((m, 2 * n), 2.0), "action"),
        ("box", lambda m, n: np.zeros((m + 1, 2 * n)), "action"),
        ("box", lambda m, n: np.full((m, 2 * n), np.inf), "action"),
    ],
)
def test_bad_actions_raise_value_error_naming_the_field_and_leave_the_batch_usable(form, bad, field):
    m = 3
    envs, twin = JMSRAVectorEnv(m, action_form=form), JMSRAVectorEnv(m, action_form=form)
    n = envs.config.n_agents
    envs.reset(seed=1)
    twin.reset(seed=1)
    with pytest.raises(ValueError, match=field):
        envs.step(bad(m, n))
    good = np.zeros((m, 2 * n), np.float32) if form == "box" else equal_split(m, n)
    obs, rewards, *_ = envs.step(good)
    obs_t, rewards_t, *_ = twin.step(good)
    assert np.array_equal(rewards, rewards_t) and np.array_equal(obs["snr_db"], obs_t["snr_db"])


# -- autoreset ------------------------------------------------------------------------------


def test_same_step_autoreset_returns_the_new_episode_with_final_obs_and_final_info():
    m, rounds = 4, 5
    envs = JMSRAVectorEnv(m, episode_rounds=rounds, autoreset_mode="SameStep")
    assert envs.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    obs, _ = envs.reset(seed=2)
    action = equal_split(m, envs.config.n_agents)
    for t in range(rounds):
        last_obs = obs
        obs, rewards, terminated, truncated, info = envs.step(action)
        played = info["final_info"] if t == rounds - 1 else info  # the ending round: final_info
        assert np.array_equal(played["round"], np.full(m, t)) and not terminated.any()
        assert np.all(rewards < 0.0) and np.array_equal(rewards, -played["latency_s"])
    assert truncated.all() and info["_final_obs"].all() and info["_final_info"].all()
    # The top level is the reset info, as in SyncVectorEnv.
    assert sorted(info) == ["_final_info", "_final_obs", "_round", "final_info", "final_obs", "round"]
    assert not info["round"].any()
    # The returned observation already starts the next episode; final_obs ends the finished one.
    for i in range(m):
        assert not np.array_equal(info["final_obs"][i]["snr_db"], obs["snr_db"][i])
        assert not np.array_equal(info["final_obs"][i]["snr_db"], last_obs["snr_db"][i])
    # The next step is a real round of the new episode (no step with reward 0).
    _, rewards, _, truncated, info = envs.step(action)
    assert np.array_equal(info["round"], np.zeros(m)) and np.all(rewards < 0.0) and not truncated.any()
    assert "final_obs" not in info


def test_next_step_autoreset_resets_on_the_step_after_truncation():
    m, rounds = 4, 5
    envs = JMSRAVectorEnv(m, episode_rounds=rounds)
    obs, _ = envs.reset(seed=2)
    action = equal_split(m, envs.config.n_agents)
    for t in range(rounds):
        obs, rewards, terminated, truncated, info = envs.step(action)
        assert np.array_equal(info["round"], np.full(m, t)) and np.all(rewards < 0.0)
    assert truncated.all() and "final_obs" not in info
    final = obs
    # The action of the reset step is ignored (even a nonsensical valid one): reward 0, round 0.
    obs, rewards, terminated, truncated, info = envs.step(equal_split(m, envs.config.n_agents, 1))
    assert np.array_equal(rewards, np.zeros(m)) and not truncated.any() and not terminated.any()
    assert sorted(info) == ["_round", "round"] and not info["round"].any()
    assert not np.array_equal(obs["snr_db"], final["snr_db"])
    _, rewards, _, _, info = envs.step(action)
    assert np.all(rewards < 0.0) and np.array_equal(info["round"], np.zeros(m))


@pytest.mark.parametrize("mode", ["NextStep", "SameStep"])
def test_partial_reset_puts_sub_envs_out_of_step_and_each_truncates_on_its_own(mode):
    m, rounds = 3, 4
    envs = JMSRAVectorEnv(m, episode_rounds=rounds, autoreset_mode=mode)
    envs.reset(seed=0)
    action = equal_split(m, envs.config.n_agents)
    envs.step(action)
    envs.step(action)
    _, info = envs.reset(options={"reset_mask": np.array([False, True, False])})
    assert info["_round"].tolist() == [False, True, False]
    envs.step(action)
    _, _, _, truncated, info = envs.step(action)
    assert truncated.tolist() == [True, False, True]
    if mode == "SameStep":  # 0 and 2 ended and were reset: their round is in final_info
        assert info["round"].tolist() == [0, 1, 0] and info["_latency_s"].tolist() == [False, True, False]
        assert info["final_info"]["round"][[0, 2]].tolist() == [3, 3]
    else:
        assert info["round"].tolist() == [3, 1, 3]
    _, rewards, _, truncated, info = envs.step(action)
    assert not truncated.any()
    if mode == "SameStep":
        assert info["round"].tolist() == [0, 2, 0] and np.all(rewards < 0.0)
    else:  # sub-environments 0 and 2 reset now, 1 plays its round
        assert info["round"].tolist() == [0, 2, 0] and rewards[0] == rewards[2] == 0.0 and rewards[1] < 0.0
        assert info["_latency_s"].tolist() == [False, True, False]
        _, rewards, _, _, info = envs.step(action)
        assert info["round"].tolist() == [0, 3, 0] and np.all(rewards < 0.0)


def test_unknown_autoreset_mode_is_rejected():
    with pytest.raises(ValueError, match="autoreset_mode"):
        JMSRAVectorEnv(2, autoreset_mode="Sometimes")


def test_observation_is_a_sufficient_statistic_for_the_whole_batch():
    envs = JMSRAVectorEnv(32, action_form="dict")
    obs, _ = envs.reset(seed=9)
    actions = random_dict_actions(np.random.default_rng(0), 32, envs.config.n_agents)
    media, bandwidth_hz = envs.decode_action(actions)
    expected = model.latency(model.terms_from_observation(envs.consts, obs), media, bandwidth_hz).latency_s
    _, rewards, _, _, _ = envs.step(actions)
    assert np.array_equal(rewards, -expected)


def test_render_gives_one_frame_per_sub_env_with_its_last_round():
    envs = JMSRAVectorEnv(2, render_mode="ansi")
    obs, _ = envs.reset(seed=0)
    frames = envs.render()
    assert len(frames) == 2 and f"{obs['snr_db'][1][0]:.1f}" in frames[1]
    _, _, _, _, info = envs.step(equal_split(2, envs.config.n_agents))
    single = jmsra_env.JMSRAEnv(render_mode="ansi")
    single._last_info = {k: v[1] for k, v in info.items() if not k.startswith("_")}
    single._last_obs = {k: v[1] for k, v in envs._last_obs.items()}
    assert envs.render()[1] == single.render()
    rgb = JMSRAVectorEnv(2, render_mode="rgb_array")
    rgb.reset(seed=0)
    rgb.step(equal_split(2, rgb.config.n_agents))
    images = rgb.render()
    assert len(images) == 2 and images[0].ndim == 3 and images[0].shape[-1] == 3


# -- the SB3 adapter ------------------------------------------------------------------------


def test_native_vec_env_matches_the_batched_env_and_sb3_conventions():
    from jmsra_agents.native_vec_env import make_native_vec_env

    m, rounds = 3, 6
    venv = make_native_vec_env("jmsra_env/JMSRA-Box-v1", m, seed=4, config={"episode_rounds": rounds},
                               monitor=False)
    ref = make_vec("jmsra_env/JMSRA-Box-v1", num_envs=m, config={"episode_rounds": rounds},
                   autoreset_mode=AutoresetMode.SAME_STEP)
    obs = venv.reset()
    obs_r, _ = ref.reset(seed=4)
    assert all(np.array_equal(obs[k], obs_r[k]) for k in obs_r)
    assert venv.get_attr("config") == [ref.config] * m
    terms = venv.env_method("current_terms", indices=[2])[0]
    assert np.array_equal(terms.gain_hz, ref.current_terms().gain_hz[2])
    actions = np.zeros((m, 2 * ref.config.n_agents), np.float32)
    for t in range(rounds):
        obs, rewards, dones, infos = venv.step(actions)
        obs_r, rewards_r, _, truncated_r, info_r = ref.step(actions)
        assert all(np.array_equal(obs[k], obs_r[k]) for k in obs_r)
        assert rewards.dtype == np.float32 and np.array_equal(rewards, rewards_r.astype(np.float32))
        assert isinstance(infos, list) and len(infos) == m
        played = info_r["final_info"] if t == rounds - 1 else info_r  # SAME_STEP: the ending round
        assert [i["latency_s"] for i in infos] == played["latency_s"].tolist()
    assert dones.all() and all(i["TimeLimit.truncated"] for i in infos)
    for i in range(m):
        terminal = infos[i]["terminal_observation"]
        assert all(np.array_equal(terminal[k], info_r["final_obs"][i][k]) for k in obs_r)


def test_native_vec_env_of_one_reproduces_sb3_dummy_vec_env():
    from stable_baselines3.common.vec_env import DummyVecEnv

    from jmsra_agents.native_vec_env import make_native_vec_env

    config = {"episode_rounds": 7}
    native = make_native_vec_env("jmsra_env/JMSRA-Box-v1", 1, seed=13, config=config, monitor=False)
    dummy = DummyVecEnv([lambda: gym.make("jmsra_env/JMSRA-Box-v1", config=config)])
    dummy.seed(13)
    rng = np.random.default_rng(0)
    obs_n, obs_d = native.reset(), dummy.reset()
    for _ in range(20):  # crosses two auto-resets
        assert all(np.array_equal(obs_n[k], obs_d[k]) for k in obs_d)
        action = rng.uniform(-1, 1, (1, 8)).astype(np.float32)
        obs_n, rew_n, done_n, info_n = native.step(action)
        obs_d, rew_d, done_d, info_d = dummy.step(action)
        assert np.array_equal(rew_n, rew_d) and np.array_equal(done_n, done_d)
        if done_d[0]:
            term_n, term_d = info_n[0]["terminal_observation"], info_d[0]["terminal_observation"]
            assert all(np.array_equal(term_n[k], term_d[k]) for k in term_d)
            assert info_n[0]["TimeLimit.truncated"] == info_d[0]["TimeLimit.truncated"]


def test_ppo_learns_on_native_vec_env_under_vec_normalize():
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecNormalize

    from jmsra_agents.native_vec_env import make_native_vec_env

    venv = make_native_vec_env("jmsra_env/JMSRA-Box-v1", 4, seed=0, config={"episode_rounds": 16})
    venv = VecNormalize(venv)
    agent = PPO("MultiInputPolicy", venv, n_steps=32, batch_size=64, n_epochs=1, seed=0, device="cpu")
    agent.learn(total_timesteps=256)
    assert agent.num_timesteps == 256
    assert len(agent.ep_info_buffer) == 16  # VecMonitor saw 4 envs x 4 episodes of 16 rounds
    assert all(ep["l"] == 16 for ep in agent.ep_info_buffer)
    obs = venv.reset()
    action, _ = agent.predict(obs, deterministic=True)
    assert action.shape == (4, 8) and np.all(np.abs(action) <= 1.0)


def test_gymnasium_vector_wrappers_work_over_the_default_next_step_mode():
    from gymnasium.wrappers.vector import FlattenObservation, NormalizeObservation, RecordEpisodeStatistics

    envs = make_vec("jmsra_env/JMSRA-Box-v1", num_envs=3, config={"episode_rounds": 5})
    wrapped = RecordEpisodeStatistics(NormalizeObservation(FlattenObservation(envs)))
    obs, _ = wrapped.reset(seed=0)
    assert obs.shape == (3, 7 * 4 - 3)  # six (N,) keys and receiver_load (1,)
    action = np.zeros((3, 8), np.float32)
    total = np.zeros(3)
    for _ in range(5):
        obs, rewards, _, truncated, info = wrapped.step(action)
        total += rewards
    assert truncated.all() and np.array_equal(info["episode"]["l"], np.full(3, 5))
    assert np.allclose(info["episode"]["r"], total)


# -- compatibility: DISABLED autoreset, max_episode_steps, SyncVectorEnv's info layout --------


def test_disabled_autoreset_leaves_resets_to_reset_mask():
    m, rounds = 3, 4
    envs = JMSRAVectorEnv(m, episode_rounds=rounds, autoreset_mode="Disabled")
    assert envs.metadata["autoreset_mode"] == AutoresetMode.DISABLED
    envs.reset(seed=0)
    action = equal_split(m, envs.config.n_agents)
    envs.step(action)
    envs.reset(options={"reset_mask": np.array([False, True, False])})
    for _ in range(rounds - 1):
        obs, _, _, truncated, info = envs.step(action)
    assert truncated.tolist() == [True, False, True] and "final_obs" not in info
    assert info["round"].tolist() == [3, 2, 3]
    obs2, info2 = envs.reset(options={"reset_mask": truncated})
    assert info2["_round"].tolist() == [True, False, True]
    assert np.array_equal(obs2["snr_db"][1], obs["snr_db"][1])  # sub-env 1 keeps its episode
    _, rewards, _, truncated, info = envs.step(action)
    assert info["round"].tolist() == [0, 3, 0] and np.all(rewards < 0.0) and truncated.tolist() == [False, True, False]


def test_disabled_autoreset_refuses_to_step_an_ended_sub_env_and_changes_nothing():
    envs = JMSRAVectorEnv(2, episode_rounds=2, autoreset_mode=AutoresetMode.DISABLED)
    envs.reset(seed=1)
    action = equal_split(2, envs.config.n_agents)
    envs.step(action)
    obs, *_ = envs.step(action)
    terms = envs.current_terms()
    with pytest.raises(RuntimeError, match=r"\[0, 1\] ended"):
        envs.step(action)
    assert envs.current_terms() is terms
    obs2, _ = envs.reset(options={"reset_mask": np.array([True, True])})
    envs.step(action)  # usable again


def test_max_episode_steps_passes_through_make_vec():
    envs = make_vec(num_envs=2, max_episode_steps=7)
    assert envs.config.episode_rounds == 7
    envs.reset(seed=0)
    for t in range(7):
        _, _, _, truncated, _ = envs.step(equal_split(2, envs.config.n_agents))
    assert truncated.all()
    with pytest.raises(ValueError, match="max_episode_steps"):
        JMSRAVectorEnv(2, max_episode_steps=2.5)


def _masked_rows_equal(a, b):
    """Two Gymnasium vector infos: same keys, same masks, same values where the mask is set."""
    assert sorted(a) == sorted(b)
    for key in a:
        if key.startswith("_"):
            assert np.array_equal(a[key], b[key]), key
        elif isinstance(a[key], dict):
            _masked_rows_equal(a[key], b[key])
        elif key != "final_obs":
            mask = a["_" + key]
            assert np.array_equal(np.asarray(a[key])[mask], np.asarray(b[key])[mask]), key


@pytest.mark.parametrize("mode", list(AutoresetMode), ids=lambda m: m.value)
def test_info_layout_matches_sync_vector_env_through_truncation(mode):
    """The infos of every step, the truncating and the next included, against SyncVectorEnv over
    JMSRAEnv (a batch of one reproduces the single env exactly)."""
    config = {"episode_rounds": 3}
    ours = make_vec(num_envs=1, config=config, autoreset_mode=mode)
    sync = gym.make_vec("jmsra_env/JMSRA-v0", num_envs=1, vectorization_mode="sync", config=config,
                        vector_kwargs={"autoreset_mode": mode})
    _, info_o = ours.reset(seed=5)
    _, info_s = sync.reset(seed=5)
    _masked_rows_equal(info_o, info_s)
    rng = np.random.default_rng(0)
    for _ in range(8):
        action = random_dict_actions(rng, 1, ours.config.n_agents)
        obs_o, rew_o, _, trunc_o, info_o = ours.step(action)
        obs_s, rew_s, _, trunc_s, info_s = sync.step(action)
        assert np.array_equal(rew_o, rew_s) and np.array_equal(trunc_o, trunc_s)
        _masked_rows_equal(info_o, info_s)
        if "final_obs" in info_s:
            assert all(np.array_equal(info_o["final_obs"][0][k], info_s["final_obs"][0][k]) for k in obs_s)
        if mode == AutoresetMode.DISABLED and trunc_s.any():
            ours.reset(options={"reset_mask": trunc_o.copy()})
            sync.reset(options={"reset_mask": trunc_s.copy()})
