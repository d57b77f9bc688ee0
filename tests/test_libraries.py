"""Off-the-shelf RL libraries on the registered IDs: the recipes of docs/libraries.md, run small.

Stable-Baselines3 (PPO, SAC, TD3 with default hyperparameters), TorchRL (``GymEnv`` on every ID,
``GymWrapper`` over the native vector env, ``SerialEnv``), CleanRL's ``ppo_continuous_action.py``
env construction, Tianshou (PPO) and RL Baselines3 Zoo; plus the env-level options
(``features=``, ``action_encoding=``) they rely on.
"""

import functools
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import jmsra_env
from jmsra_env import ENV_IDS, model
from jmsra_env.features import feature_names, n_features, observation_features
from jmsra_env.registration import VARIANTS, env_id
from jmsra_env.solvers import optimal_bandwidth

BOX_IDS = [env_id(v, "box") for v in VARIANTS]
REPO = Path(__file__).resolve().parents[1]


class CapAudit(gym.Wrapper):
    """Count the rounds the action encoding capped: capped on the observed round although the
    same media admit an uncapped split there (what the Box form promises never happens)."""

    def __init__(self, env):
        super().__init__(env)
        self.rounds = self.capped = self.caused = 0

    def step(self, action):
        terms = self.env.unwrapped.observed_terms()
        obs, reward, terminated, truncated, info = self.env.step(action)
        seen = model.latency(terms, info["media"], info["bandwidth_hz"])
        self.rounds += 1
        if seen.capped:
            self.capped += 1
            _, best = optimal_bandwidth(terms, info["media"])
            self.caused += int(best < terms.latency_cap_s)
        return obs, reward, terminated, truncated, info


def _audited(id_, **kwargs):
    return CapAudit(gym.make(id_, **kwargs))


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- Stable-Baselines3 -------------------------------------------------------------------------


@pytest.mark.parametrize("id_", BOX_IDS)
def test_sb3_ppo_with_default_hyperparameters_is_never_capped_by_the_encoding(id_):
    from stable_baselines3 import PPO

    env = _audited(id_)
    PPO("MultiInputPolicy", env, seed=0).learn(2048)  # one default rollout (std 1) and update
    assert env.rounds >= 2048 and env.caused == 0


@pytest.mark.parametrize("algo", ["SAC", "TD3"])
@pytest.mark.parametrize("id_", ["jmsra_env/JMSRA-Box-v1", "jmsra_env/JMSRA-N16-Box-v1"])
def test_sb3_off_policy_with_default_hyperparameters_is_never_capped_by_the_encoding(algo, id_):
    import stable_baselines3

    env = _audited(id_)
    # 100 uniform warm-up actions (learning_starts), then the learned tanh-squashed policy
    getattr(stable_baselines3, algo)("MultiInputPolicy", env, seed=0).learn(200)
    assert env.rounds >= 200 and env.caused == 0


def test_sb3_on_the_env_level_options():
    from stable_baselines3 import PPO

    env = gym.make("jmsra_env/JMSRA-Box-v1", features="physics", action_encoding="deadline")
    model_ = PPO("MlpPolicy", env, gamma=0.0, n_steps=256, batch_size=64, seed=0).learn(256)
    action, _ = model_.predict(env.reset(seed=0)[0], deterministic=True)
    assert action.shape == (8,)


# -- the env-level options ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["log", "physics"])
def test_features_option_gives_the_documented_flat_layout(kind):
    env = gym.make("jmsra_env/JMSRA-N8-v0", features=kind)
    obs, _ = env.reset(seed=0)
    assert obs.shape == env.observation_space.shape == (n_features(8, kind),) and obs.dtype == np.float32
    assert len(feature_names(8, kind)) == obs.size
    raw = env.unwrapped._last_obs
    first = 6 if kind == "log" else 18  # agent-major: agent 1's block starts here
    assert obs[first] == np.float32(raw["snr_db"][1] / 10.0)
    assert feature_names(8, kind)[first] == "agent1: snr_db/10"
    np.testing.assert_array_equal(obs, observation_features(raw, env.unwrapped.consts, kind))


def test_deadline_option_charges_what_the_encoding_decodes():
    from jmsra_env.encoding import decode_deadline

    env = gym.make("jmsra_env/JMSRA-Box-v1", action_encoding="deadline")
    obs, _ = env.reset(seed=3)
    code = np.linspace(-1.0, 1.0, 8)
    env_action = decode_deadline(code, obs, env.unwrapped.consts)
    media, b = jmsra_env.decode_box(env_action, env.unwrapped.observed_terms())
    expected = model.latency(env.unwrapped.current_terms(), media, b).latency_s
    assert -env.step(code)[1] == expected


def test_the_solved_encoding_of_an_optimal_decision_is_charged_its_latency():
    from jmsra_env.encoding import encode_solved
    from jmsra_env.solvers import solve

    env = gym.make("jmsra_env/JMSRA-N8-Box-v1", action_encoding="solved", jmsra_in_info=True)
    env.reset(seed=2)
    for _ in range(20):
        terms = env.unwrapped.observed_terms()
        decision = solve("jmsra", terms)
        code = encode_solved(decision.media, decision.bandwidth_hz, terms)
        np.testing.assert_array_equal(code[8:], 0.0)  # the optimal split is the zero action
        info = env.step(code)[4]
        assert info["latency_s"] == pytest.approx(info["jmsra_latency_s"], rel=1e-9)


def test_the_vector_entry_point_takes_the_same_options():
    envs = gym.make_vec("jmsra_env/JMSRA-Box-v1", num_envs=3, vectorization_mode="vector_entry_point",
                        features="log", action_encoding="deadline")
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (3, n_features(4, "log"))
    obs, reward, *_ = envs.step(np.zeros((3, 8)))
    assert obs.shape == (3, 25) and np.all(reward < 0)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"features": "pixels"}, "features"), ({"action_encoding": "linear"}, "action_encoding")],
)
def test_bad_options_name_the_option(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gym.make("jmsra_env/JMSRA-Box-v1", **kwargs)


def test_the_deadline_encoding_needs_a_box_id():
    with pytest.raises(ValueError, match="Box"):
        gym.make("jmsra_env/JMSRA-v0", action_encoding="deadline")


def test_the_flattened_dict_observation_is_alphabetical():
    env = gym.wrappers.FlattenObservation(gym.make("jmsra_env/JMSRA-v0"))
    obs, _ = env.reset(seed=0)
    raw = env.unwrapped._last_obs
    keys = sorted(raw)
    assert keys[0] == "compute_flops" and keys[-1] == "snr_db"
    np.testing.assert_array_equal(obs, np.concatenate([raw[k] for k in keys]))


# -- TorchRL -----------------------------------------------------------------------------------


@pytest.mark.parametrize("id_", ENV_IDS)
def test_torchrl_gymenv_passes_check_env_specs(id_):
    from torchrl.envs.libs.gym import GymEnv
    from torchrl.envs.utils import check_env_specs

    check_env_specs(GymEnv(id_))  # TorchRL passes frameskip=1 and drops it on the TypeError


@pytest.mark.parametrize("options", [{}, {"features": "physics", "action_encoding": "deadline"}])
def test_torchrl_gymwrapper_over_the_native_vector_env(options):
    from torchrl.envs.libs.gym import GymWrapper
    from torchrl.envs.utils import check_env_specs

    venv = gym.make_vec("jmsra_env/JMSRA-Box-v1", num_envs=4, vectorization_mode="vector_entry_point",
                        autoreset_mode="Disabled", config={"episode_rounds": 8}, **options)
    env = GymWrapper(venv)
    check_env_specs(env)
    rollout = env.rollout(20, break_when_any_done=False)  # crosses two episode ends
    assert rollout["next", "reward"].shape == (4, 20, 1) and rollout["next", "done"].sum() == 8


def test_torchrl_serial_env_with_options():
    from torchrl.envs import SerialEnv
    from torchrl.envs.libs.gym import GymEnv
    from torchrl.envs.utils import check_env_specs

    make = functools.partial(GymEnv, "jmsra_env/JMSRA-Box-v1", features="physics", action_encoding="deadline")
    env = SerialEnv(2, make)
    check_env_specs(env)
    assert env.rollout(5)["next", "observation"].shape == (2, 5, n_features(4, "physics"))
    env.close()


# -- CleanRL ppo_continuous_action.py (Gymnasium 1.x), its env construction -------------------


def test_cleanrl_ppo_continuous_action_env_construction():
    def make_env(env_id, idx, capture_video, run_name, gamma):  # CleanRL's, verbatim but the video
        def thunk():
            env = gym.make(env_id)
            env = gym.wrappers.FlattenObservation(env)  # deal with dm_control's Dict observation space
            env = gym.wrappers.RecordEpisodeStatistics(env)
            env = gym.wrappers.ClipAction(env)
            env = gym.wrappers.NormalizeObservation(env)
            env = gym.wrappers.TransformObservation(env, lambda obs: np.clip(obs, -10, 10), env.observation_space)
            env = gym.wrappers.NormalizeReward(env, gamma=gamma)
            env = gym.wrappers.TransformReward(env, lambda reward: np.clip(reward, -10, 10))
            return env

        return thunk

    envs = gym.vector.SyncVectorEnv(
        [make_env("jmsra_env/JMSRA-Box-v1", i, False, "test", 0.0) for i in range(2)]
    )
    assert isinstance(envs.single_action_space, gym.spaces.Box)
    next_obs, _ = envs.reset(seed=1)
    rng = np.random.default_rng(0)
    episodes = 0
    for _ in range(70):  # a Gaussian policy with std 1 at initialisation, past an episode end
        next_obs, reward, terminations, truncations, infos = envs.step(rng.normal(size=(2, 8)))
        assert np.all(np.isfinite(next_obs)) and np.all(np.abs(next_obs) <= 10)
        if "episode" in infos:
            episodes += int(infos["_episode"].sum())
    assert episodes == 2


# -- Tianshou ----------------------------------------------------------------------------------


def test_tianshou_ppo_trains_and_collects():
    from tianshou.algorithm import PPO
    from tianshou.algorithm.modelfree.reinforce import ProbabilisticActorPolicy
    from tianshou.algorithm.optim import AdamOptimizerFactory
    from tianshou.data import Collector, VectorReplayBuffer
    from tianshou.env import DummyVectorEnv
    from tianshou.trainer import OnPolicyTrainerParams
    from tianshou.utils.net.common import Net
    from tianshou.utils.net.continuous import ContinuousActorProbabilistic, ContinuousCritic
    from torch.distributions import Independent, Normal

    def make():
        return gym.make("jmsra_env/JMSRA-Box-v1", features="physics", action_encoding="deadline")

    env = make()
    obs_shape, act_shape = env.observation_space.shape, env.action_space.shape
    actor = ContinuousActorProbabilistic(
        preprocess_net=Net(state_shape=obs_shape, hidden_sizes=(64, 64)), action_shape=act_shape, unbounded=True
    )
    critic = ContinuousCritic(preprocess_net=Net(state_shape=obs_shape, hidden_sizes=(64, 64)))
    policy = ProbabilisticActorPolicy(
        actor=actor, dist_fn=lambda loc_scale: Independent(Normal(*loc_scale), 1), action_space=env.action_space
    )
    algorithm = PPO(policy=policy, critic=critic, optim=AdamOptimizerFactory(lr=3e-4), gamma=0.0)
    train_envs = DummyVectorEnv([make, make])
    collector = Collector(algorithm, train_envs, VectorReplayBuffer(256, len(train_envs)))
    algorithm.run_training(OnPolicyTrainerParams(
        training_collector=collector, max_epochs=1, epoch_num_steps=256, collection_step_num_env_steps=128,
        batch_size=64, test_collector=None, show_progress=False, verbose=False,
    ))
    stats = Collector(algorithm, DummyVectorEnv([make])).collect(n_step=64, reset_before_collect=True)
    assert stats.n_collected_steps == 64 and np.isfinite(stats.returns_stat.mean)


# -- RL Baselines3 Zoo -------------------------------------------------------------------------


def test_rl_zoo_trains_with_the_repository_hyperparameters(tmp_path):
    cmd = [
        sys.executable, "-m", "rl_zoo3.train", "--algo", "ppo", "--env", "jmsra_env/JMSRA-Box-v1",
        "--gym-packages", "jmsra_env", "--conf-file", str(REPO / "hyperparams" / "ppo.yml"),
        "--num-threads", "1", "-n", "256", "--seed", "0", "--log-folder", str(tmp_path), "--eval-freq", "-1",
        "--hyperparams", "n_envs:2", "n_steps:128", "batch_size:64", "n_epochs:1",
    ]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert list(tmp_path.glob("ppo/JMSRA-Box-v1_1/JMSRA-Box-v1.zip")) or list(tmp_path.rglob("*.zip"))
