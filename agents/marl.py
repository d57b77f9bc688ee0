"""The ``jmsra-train-marl`` command, and the TorchRL reference trainer with its run format.

``jmsra-train-marl`` (or ``python -m jmsra_agents.marl``) trains MAPPO or IPPO with the torch
backend's multi-agent trainer (:mod:`jmsra_agents.torch_marl`, ``train.py --algorithm mappo``: the
run directory, lock, ``--resume``, checkpoints and safe format of ``train.py``); its flags are
translated (:func:`main`). ``jmsra-train-marl --reference`` runs the reference trainer below
instead, which writes the multi-agent run format of this module (``marl.json``), kept so that its
runs stay loadable by ``evaluate.py`` (:func:`load_marl_policy`) and the two can be compared.

The reference trainer trains on :mod:`jmsra_env.multiagent`'s
``ParallelEnv`` through TorchRL's ``PettingZooWrapper``, with ``MultiAgentMLP`` actors (one network
shared by all agents, each agent reading only its own features), ``ClipPPOLoss``, ``GAE`` and a
``Collector``: no hand-written PPO.

The stack, bottom to top::

    JMSRAParallelEnv        per-agent Dict observations, [medium score, request] actions
    AgentFeatureEnv         per agent: jmsra_agents.features of its OWN observation (standardised), and
                            the deadline action encoding (jmsra_agents.encoding) from its own observation
    PettingZooWrapper       TorchRL tensordicts; group "agents"; "state" for MAPPO's critic

* **Observation per agent**: :func:`jmsra_agents.features.observation_features` ("physics") of the agent's
  own observation (a one-agent observation: its channel, device, load, tokens and the receiver's
  broadcast), 20 entries (27 in a session: + :func:`session_features`), standardised with
  statistics of rounds drawn at start-up (saved with the run). The MAPPO critic reads ``state``:
  the same features of the central observation (``18 N + 2``; sessions ``23 N + 4``), standardised.
* **Action per agent** (``Box(-1, 1, (2,))``): ``a[0] > 0`` means KV; ``a[1]`` codes a finish-time
  target ``10 ** (0.5 + 1.5 a[1])`` s and the agent requests the bandwidth that meets it
  (:func:`jmsra_agents.encoding.deadline_bandwidth_hz`, from its own observation, at most the band), as a
  fraction of the band; the scheduler normalises the requests (``--encoding request``: ``a[1]``
  mapped to a request ``(a[1] + 1) / 2`` directly).
* **Reward**: the shared ``-T``; single rounds are contextual bandits, so ``gamma = 0`` by default;
  in a session a KV message fills the receiver's pool for later rounds: ``gamma = 0.9``
  (:data:`SESSION_GAMMA`) by default.
* **Sessions** (``--scenario JMSRA-Session-v0``): the features add the receiver's state
  (:func:`session_features`: new, unseen and resident tokens, rounds since the last KV message, the
  pool's usage); training's evaluation rolls whole episodes (:class:`TeamEvaluator`).

A run directory holds ``actor.safetensors`` and ``critic.safetensors`` (torch ``state_dict``s),
``marl.json`` (format, algorithm, scenario config, hyperparameters, feature statistics, frames),
``tb/`` (TensorBoard: ``train/mean_latency_s``, ``eval/mean_latency_s``, ``eval/gap_to_jmsra_pct``,
losses) and ``checkpoints/ckpt_<frames>/`` with the same files. Every file is written atomically.
:func:`load_marl_policy` returns a :class:`MARLPolicy`, a :class:`jmsra_env.multiagent.TeamPolicy`:
``act`` on per-agent observations, ``predict`` on the central Dict observation (the evaluation tools'
common denominator).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from jmsra_env import model
from jmsra_env.config import ScenarioConfig, make_config, parse_overrides
from jmsra_env.session import never_rounds as session_never_rounds
from jmsra_env.session_env import SESSION_OBS_KEYS
from jmsra_env.multiagent import (
    BROADCAST_KEYS,
    JMSRAParallelEnv,
    TeamPolicy,
    joint_to_central_action,
    parallel_env,
)
from jmsra_env.world import WorldProcess

from .checkpoint import atomic_write_bytes, package_versions
from .encoding import deadline_bandwidth_hz
from .features import observation_features, session_features
from .training import SESSION_GAMMA  # the session discount, shared with the single-agent trainer

try:
    from pettingzoo import ParallelEnv as _ParallelEnvBase
except ImportError:  # pragma: no cover - the [marl] extra installs it
    _ParallelEnvBase = object

__all__ = [
    "ALGORITHMS",
    "ENCODINGS",
    "MARL_FORMAT",
    "MARLConfig",
    "FeatureCodec",
    "session_features",
    "AgentFeatureEnv",
    "make_torchrl_env",
    "build_actor_net",
    "MARLPolicy",
    "behaviour_clone",
    "evaluate_team",
    "TeamEvaluator",
    "BC_EXPERTS",
    "default_gamma",
    "load_marl_policy",
    "is_marl_run",
    "train",
    "main",
]

ALGORITHMS = ("mappo", "ippo")
ENCODINGS = ("deadline", "request")
MARL_FORMAT = "jmsra_env.marl/1"
RUN_FILE = "marl.json"
ACTOR_FILE = "actor.safetensors"
CRITIC_FILE = "critic.safetensors"
_FEATURES = "physics"
_STATS_ROUNDS = 64  # rounds x 256 worlds drawn for the feature statistics


def default_gamma(config: ScenarioConfig) -> float:
    """The discount when ``MARLConfig.gamma`` is None: :data:`SESSION_GAMMA` in a session, else 0."""
    return SESSION_GAMMA if config.session.enabled else 0.0


@dataclass(frozen=True)
class MARLConfig:
    """Hyperparameters of a multi-agent PPO run (TorchRL names where they exist)."""

    algorithm: str = "mappo"  # "mappo": critic over state(); "ippo": per-agent critic on own features
    total_frames: int = 200_000  # environment rounds in total
    frames_per_batch: int = 2048  # rounds per collected batch
    n_epochs: int = 8  # passes over a batch
    minibatch_size: int = 256  # rounds per gradient step
    learning_rate: float = 3e-4
    max_grad_norm: float = 1.0
    clip_epsilon: float = 0.2
    entropy_coef: float = 0.0
    # None: the scenario's default, 0 for single rounds (a decision does not change later rounds),
    # SESSION_GAMMA for sessions (a KV message fills the receiver's pool for later rounds)
    gamma: float | None = None
    lmbda: float = 0.95
    hidden: int = 128  # units per hidden layer (actor and critic)
    depth: int = 2  # hidden layers
    encoding: str = "deadline"  # "deadline" (finish-time target) or "request" (direct)
    eval_rounds: int = 1024  # held-out rounds scored after every eval_every batches
    eval_every: int = 5
    checkpoint_every: int = 25  # batches between checkpoints (0: only the final save)
    bc_steps: int = 0  # behaviour-cloning steps of the actor on JMSRA before PPO (0: pure RL)
    bc_rounds: int = 32_768  # rounds JMSRA solves for behaviour cloning
    bc_scale: float = 0.1  # the actor's action scale that cloning drives towards (PPO's exploration)
    seed: int = 0

    def __post_init__(self) -> None:
        ints = (
            "total_frames", "frames_per_batch", "n_epochs", "minibatch_size", "hidden", "depth", "eval_rounds",
            "eval_every",
        )
        for name in ints:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1; got {v!r}")
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}; got {self.algorithm!r}")
        if self.encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}; got {self.encoding!r}")
        if self.minibatch_size > self.frames_per_batch:
            raise ValueError(
                f"minibatch_size ({self.minibatch_size}) must be <= frames_per_batch ({self.frames_per_batch})"
            )
        checks = [
            ("learning_rate", self.learning_rate > 0, "> 0"),
            ("max_grad_norm", self.max_grad_norm > 0, "> 0"),
            ("clip_epsilon", self.clip_epsilon > 0, "> 0"),
            ("entropy_coef", self.entropy_coef >= 0, ">= 0"),
            ("gamma", self.gamma is None or 0 <= self.gamma <= 1, "in [0, 1] (or None: the scenario's default)"),
            ("lmbda", 0 <= self.lmbda <= 1, "in [0, 1]"),
            ("bc_steps", isinstance(self.bc_steps, int) and self.bc_steps >= 0, "an integer >= 0"),
            ("bc_rounds", isinstance(self.bc_rounds, int) and self.bc_rounds >= 1, "an integer >= 1"),
            ("bc_scale", self.bc_scale > 0, "> 0"),
            ("checkpoint_every", isinstance(self.checkpoint_every, int) and self.checkpoint_every >= 0,
             "an integer >= 0"),
            ("seed", isinstance(self.seed, int) and self.seed >= 0, "an integer >= 0"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"{name} must be {rule}; got {getattr(self, name)!r}")


# ---------------------------------------------------------------------------------------------
# Features and the action encoding, per agent from its own observation


def _agent_batch(obs: Mapping[str, np.ndarray], n_agents: int, per_agent_keys: Sequence[str]) -> dict[str, np.ndarray]:
    """A central observation ``(..., N)`` as a batch of N one-agent observations ``(..., N, 1)``:
    agent ``i``'s own entries and the broadcast ones, nothing of the other agents."""
    out = {}
    for k, v in obs.items():
        v = np.asarray(v, dtype=np.float64)
        if k in per_agent_keys:
            out[k] = v[..., None]
        else:
            out[k] = np.broadcast_to(v[..., None, :], (*v.shape[:-1], n_agents, v.shape[-1]))
    return out


_SESSION_AGENT_FEATURES, _SESSION_SCALARS = 5, 2


class FeatureCodec:
    """Observation features and the action decoding of the multi-agent policies (train and eval).

    Features: :func:`jmsra_agents.features.observation_features` ("physics"); in a session scenario
    followed by :func:`session_features` (the receiver's state). Standardised with statistics of
    rounds drawn at start-up (sessions: whole episodes rolled with random media), saved with a run.
    """

    def __init__(self, config: ScenarioConfig, encoding: str = "deadline", stats: Mapping[str, Any] | None = None):
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}; got {encoding!r}")
        self.config = config
        self.encoding = encoding
        self.n_agents = config.n_agents
        self.session = bool(config.session.enabled)
        self.never = session_never_rounds(config)
        self.consts = model.model_constants(config)
        self.stats = {k: np.asarray(v, dtype=np.float32) for k, v in (stats or self._draw_stats()).items()}

    @property
    def features(self) -> str:
        """The feature set's name (saved in ``marl.json``)."""
        return f"{_FEATURES}+session" if self.session else _FEATURES

    def _per_agent_keys(self, obs) -> tuple[str, ...]:
        n = self.n_agents
        return tuple(k for k, v in obs.items() if k not in BROADCAST_KEYS and np.shape(v)[-1:] == (n,))

    def _features(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        f = observation_features(obs, self.consts, _FEATURES, session=False)
        if self.session:
            f = np.concatenate([f, session_features(obs, self.consts, self.never)], axis=-1)
        return f

    def raw_agent_features(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        return self._features(_agent_batch(obs, self.n_agents, self._per_agent_keys(obs)))

    def _stat_observations(self):
        """Observations ``(256, ...)`` of ``_STATS_ROUNDS`` rounds, seeded apart from any run."""
        rng = np.random.default_rng(12345)  # fixed: the statistics belong to the scenario, not the run
        if not self.session:
            world = WorldProcess(self.config, 256)
            world.reset(rng)
            for _ in range(_STATS_ROUNDS):
                yield world.observation()
                world.step(rng)
            return
        from jmsra_env.session_env import JMSRASessionVectorEnv

        env = JMSRASessionVectorEnv(256, self.config)
        obs, _ = env.reset(seed=12345)
        for _ in range(min(_STATS_ROUNDS, self.config.episode_rounds)):
            yield obs
            media = (rng.random((256, self.n_agents)) < 0.5).astype(np.int8)  # both media, caches and evictions
            obs, *_ = env.step({"media": media, "bandwidth": np.ones((256, self.n_agents))})
        env.close()

    def _draw_stats(self) -> dict[str, np.ndarray]:
        agent, state = [], []
        for obs in self._stat_observations():
            agent.append(self.raw_agent_features(obs).reshape(-1, self.n_agent_features))
            state.append(self._features(obs))
        a, s = np.concatenate(agent).astype(np.float64), np.concatenate(state).astype(np.float64)  # exact sums
        return {
            "agent_mean": a.mean(0), "agent_std": np.maximum(a.std(0), 1e-3),
            "state_mean": s.mean(0), "state_std": np.maximum(s.std(0), 1e-3),
        }

    @property
    def n_agent_features(self) -> int:
        """Features of one agent: "physics" 18 + 2 (+ session 5 + 2)."""
        return 20 + (_SESSION_AGENT_FEATURES + _SESSION_SCALARS if self.session else 0)

    @property
    def n_state_features(self) -> int:
        extra = _SESSION_AGENT_FEATURES * self.n_agents + _SESSION_SCALARS if self.session else 0
        return 18 * self.n_agents + 2 + extra

    def agent_features(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Standardised float32 features ``(..., N, F)``; row ``i`` from agent ``i``'s own observation."""
        f = self.raw_agent_features(obs)
        return ((f - self.stats["agent_mean"]) / self.stats["agent_std"]).astype(np.float32)

    def state_features(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Standardised float32 features of the central observation ``(..., n_state_features)``."""
        f = self._features(obs)
        return ((f - self.stats["state_mean"]) / self.stats["state_std"]).astype(np.float32)

    def joint_action(self, obs: Mapping[str, np.ndarray], policy_action) -> np.ndarray:
        """The env's joint action ``(..., N, 2)`` (``[medium score, request]``) for policy actions in
        [-1, 1] ``(..., N, 2)``; agent ``i``'s from its own action and observation."""
        a = np.clip(np.asarray(policy_action, dtype=np.float64), -1.0, 1.0)
        kv = (a[..., 0] > 0.0).astype(np.int8)
        if self.encoding == "request":
            request = 0.5 * (a[..., 1] + 1.0)
        else:
            own = _agent_batch(obs, self.n_agents, self._per_agent_keys(obs))
            b = deadline_bandwidth_hz(kv[..., None], a[..., 1:2], own, self.consts)[..., 0]
            request = b / self.consts.bandwidth_hz
        return np.stack([kv.astype(np.float64), request], axis=-1)


class AgentFeatureEnv(_ParallelEnvBase):
    """:class:`~jmsra_env.multiagent.JMSRAParallelEnv` with per-agent feature observations
    (``Box(-inf, inf, (20,))``), policy actions ``Box(-1, 1, (2,))`` and a feature ``state``."""

    metadata = {"name": "jmsra_features_v0", "render_modes": [], "is_parallelizable": True}

    def __init__(self, env: JMSRAParallelEnv, codec: FeatureCodec):
        self.env = env
        self.codec = codec
        self.possible_agents = list(env.possible_agents)
        self.agents: list[str] = []
        obs_space = spaces.Box(-np.inf, np.inf, (codec.n_agent_features,), dtype=np.float32)
        act_space = spaces.Box(-1.0, 1.0, (2,), dtype=np.float32)
        self.observation_spaces = {a: obs_space for a in self.possible_agents}
        self.action_spaces = {a: act_space for a in self.possible_agents}
        self.state_space = spaces.Box(-np.inf, np.inf, (codec.n_state_features,), dtype=np.float32)

    def observation_space(self, agent):
        return self.observation_spaces[agent]

    def action_space(self, agent):
        return self.action_spaces[agent]

    def _observe(self) -> dict[str, np.ndarray]:
        f = self.codec.agent_features(self.env.central_observation)
        return {a: f[i] for i, a in enumerate(self.possible_agents)}

    def reset(self, seed=None, options=None):
        _, infos = self.env.reset(seed=seed, options=options)
        self.agents = list(self.env.agents)
        return self._observe(), infos

    def step(self, actions_):
        missing = [a for a in self.agents if a not in actions_]
        unknown = [a for a in actions_ if a not in self.action_spaces]
        if missing or unknown:
            raise ValueError(f"actions: missing for agent(s) {missing}, unknown agent(s) {unknown}")
        pa = np.stack([np.asarray(actions_[a], dtype=np.float64) for a in self.possible_agents])
        joint = self.codec.joint_action(self.env.central_observation, pa)
        _, rewards, terms, truncs, infos = self.env.step(dict(zip(self.possible_agents, joint)))
        self.agents = list(self.env.agents)
        return self._observe(), rewards, terms, truncs, infos

    def state(self) -> np.ndarray:
        return self.codec.state_features(self.env.central_observation)

    def close(self):
        self.env.close()


def make_torchrl_env(config: ScenarioConfig, codec: FeatureCodec, algorithm: str = "mappo", device="cpu", seed=None):
    """The TorchRL env: ``PettingZooWrapper`` over :class:`AgentFeatureEnv` (group ``"agents"``)."""
    from torchrl.envs.libs.pettingzoo import PettingZooWrapper

    inner = AgentFeatureEnv(JMSRAParallelEnv(config), codec)
    return PettingZooWrapper(
        inner,
        group_map={"agents": list(inner.possible_agents)},
        return_state=algorithm == "mappo",
        categorical_actions=False,
        device=device,
        seed=seed,
    )


# ---------------------------------------------------------------------------------------------
# Networks


def build_actor_net(n_features: int, n_agents: int, hidden: int, depth: int, device="cpu"):
    """Shared-parameter decentralised actor: own features -> (loc, scale) of a 2-d TanhNormal."""
    import torch
    from tensordict.nn import NormalParamExtractor
    from torchrl.modules import MultiAgentMLP

    return torch.nn.Sequential(
        MultiAgentMLP(
            n_agent_inputs=n_features, n_agent_outputs=4, n_agents=n_agents, centralised=False,
            share_params=True, device=device, depth=depth, num_cells=hidden, activation_class=torch.nn.Tanh,
        ),
        NormalParamExtractor(),
    )


def _state_critic(n_state: int, n_agents: int, hidden: int, depth: int, device="cpu"):
    """MAPPO's critic: an MLP over ``state`` whose value is copied to every agent ``(..., N, 1)``."""
    import torch
    from torchrl.modules import MLP

    class StateValue(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp = MLP(in_features=n_state, out_features=1, depth=depth, num_cells=hidden,
                           activation_class=torch.nn.Tanh, device=device)

        def forward(self, state):
            v = self.mlp(state).unsqueeze(-2)
            return v.expand(*v.shape[:-2], n_agents, 1)

    return StateValue()


def _build_critic_net(cfg: MARLConfig, codec: FeatureCodec, device):
    import torch
    from torchrl.modules import MultiAgentMLP

    if cfg.algorithm == "mappo":
        return _state_critic(codec.n_state_features, codec.n_agents, cfg.hidden, cfg.depth, device)
    return MultiAgentMLP(
        n_agent_inputs=codec.n_agent_features, n_agent_outputs=1, n_agents=codec.n_agents, centralised=False,
        share_params=True, device=device, depth=cfg.depth, num_cells=cfg.hidden, activation_class=torch.nn.Tanh,
    )


def _critic_in_keys(algorithm: str):
    return ["state"] if algorithm == "mappo" else [("agents", "observation")]


# ---------------------------------------------------------------------------------------------
# The trained policy as a team policy


class MARLPolicy(TeamPolicy):
    """A trained multi-agent actor acting for the team (decentralised: each agent's action from its
    own features). Deterministic actions are ``tanh(loc)``.

    Also an evaluation policy (:class:`jmsra_env.evaluation.Policy`, what ``evaluate.py --model``
    loads): ``label``, ``kind = "marl"``, ``decide``, ``reset(config, seed)`` (features and the
    deadline encoding then use the evaluated scenario's constants), ``config`` (the scenario
    trained on), ``path``, ``env_id`` and ``notes``.
    """

    decentralised = True
    kind = "marl"

    def __init__(
        self, actor_net, codec: FeatureCodec, name: str = "mappo", device="cpu", *, path: str = "<memory>",
        env_id: str | None = None,
    ):
        super().__init__(codec.config)
        self.actor_net = actor_net.eval()
        self.codec = codec
        self.name = name
        self.device = device
        self.path = path
        self.env_id = env_id
        self.notes: list[str] = []

    def reset(self, config: ScenarioConfig | None = None, seed: int | None = None) -> None:
        """Before an evaluation on ``config`` (same N): its constants (bandwidth, ...) from now on."""
        if config is not None:
            if config.n_agents != self.config.n_agents:
                raise ValueError(f"this policy acts for N = {self.config.n_agents} agents; got N = {config.n_agents}")
            self.consts = self.codec.consts = model.model_constants(config)

    def policy_actions(self, obs: Mapping[str, np.ndarray], deterministic: bool = True) -> np.ndarray:
        import torch

        if self.codec.session and (missing := [k for k in SESSION_OBS_KEYS if k not in obs]):
            raise ValueError(
                f"this policy was trained on a session scenario: it decides on session observations (this one "
                f"lacks {missing}); evaluate it on whole session episodes, not on independent rounds"
            )
        feats = torch.as_tensor(self.codec.agent_features(obs), device=self.device)
        with torch.no_grad():
            loc, scale = self.actor_net(feats)
            x = loc if deterministic else loc + scale * torch.randn_like(loc)
        return torch.tanh(x).cpu().numpy().astype(np.float64)

    def agent_actions(self, obs):
        return self.codec.joint_action(obs, self.policy_actions(obs))

    def predict(self, obs, state=None, episode_start=None, deterministic: bool = True):
        if not isinstance(obs, Mapping) or "snr_db" not in obs:
            raise ValueError(f"obs must be the central Dict observation; got {type(obs).__name__}")
        joint = self.codec.joint_action(obs, self.policy_actions(obs, deterministic))
        return joint_to_central_action(joint), None

    __call__ = predict


# ---------------------------------------------------------------------------------------------
# Saving and loading


def _save_run(directory: Path, actor_net, critic_net, meta: Mapping[str, Any]) -> None:
    """Write the three files of a run atomically (each via a temporary file and os.replace)."""
    from safetensors.torch import save as st_save

    directory.mkdir(parents=True, exist_ok=True)
    for fname, net in ((ACTOR_FILE, actor_net), (CRITIC_FILE, critic_net)):
        tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
        atomic_write_bytes(directory / fname, st_save(tensors))
    atomic_write_bytes(directory / RUN_FILE, json.dumps(meta, indent=2, sort_keys=True).encode())


def is_marl_run(path: str | Path) -> bool:
    """Whether ``path`` is a multi-agent run (or checkpoint) directory: it holds ``marl.json``."""
    return (Path(path) / RUN_FILE).is_file()


def load_marl_policy(path: str | Path, device: str = "cpu", *, label: str | None = None) -> MARLPolicy:
    """The policy of a run directory or one of its checkpoint directories (``label`` default:
    ``<algorithm>:<directory name>``)."""
    import torch
    from safetensors import SafetensorError, safe_open

    from .safe_files import (
        check_finite_tensors, check_tensor_shapes, field_error, load_json_file, read_safetensors_header,
        validate_feature_stats, validate_marl_network,
    )

    path = Path(path)
    run_file = path / RUN_FILE
    if not run_file.is_file():
        raise ValueError(f"{path} is not a multi-agent run directory: no {RUN_FILE}")
    meta = load_json_file(run_file, "multi-agent run description")  # size and depth limited
    if not isinstance(meta, dict):
        raise ValueError(f"{run_file}: must be a JSON object; got {type(meta).__name__}")
    if meta.get("format") != MARL_FORMAT:
        raise ValueError(f"{run_file}: format must be {MARL_FORMAT!r}; got {meta.get('format')!r:.60}")
    for key in ("config", "marl", "feature_stats"):
        if not isinstance(meta.get(key), dict):
            raise field_error(run_file, key, f"must be an object; got {type(meta.get(key)).__name__}")
    if meta.get("env_id") is not None and not isinstance(meta["env_id"], str):
        raise field_error(run_file, "env_id", f"must be a string; got {type(meta['env_id']).__name__}")
    try:
        cfg = make_config(meta["config"])
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
        raise field_error(run_file, "config", f"{type(exc).__name__}: {exc}") from None
    try:
        hp = MARLConfig(**meta["marl"])
    except (TypeError, ValueError, OverflowError) as exc:
        raise field_error(run_file, "marl", f"{type(exc).__name__}: {exc}") from None
    session = bool(cfg.session.enabled)
    n_agent = 20 + (_SESSION_AGENT_FEATURES + _SESSION_SCALARS if session else 0)
    n_state = 18 * cfg.n_agents + 2 + (_SESSION_AGENT_FEATURES * cfg.n_agents + _SESSION_SCALARS if session else 0)
    validate_marl_network(meta["marl"], n_agent, run_file)  # sizes within the limits before building
    stats = validate_feature_stats(
        meta["feature_stats"],
        {"agent_mean": n_agent, "agent_std": n_agent, "state_mean": n_state, "state_std": n_state}, run_file,
    )
    codec = FeatureCodec(cfg, hp.encoding, stats)
    actor = build_actor_net(codec.n_agent_features, codec.n_agents, hp.hidden, hp.depth, device)
    actor_file = path / ACTOR_FILE
    expected = {k: tuple(v.shape) for k, v in actor.state_dict().items()}
    check_tensor_shapes(read_safetensors_header(actor_file), expected, actor_file)  # header only
    try:
        with safe_open(str(actor_file), framework="pt", device=str(torch.device(device))) as fh:
            tensors = {name: fh.get_tensor(name) for name in expected}
    except (SafetensorError, ValueError, OSError, RuntimeError) as exc:
        raise ValueError(f"corrupt multi-agent weights {actor_file}: {exc}") from exc
    check_finite_tensors(tensors, actor_file)
    actor.load_state_dict(tensors)
    policy = MARLPolicy(actor, codec, name=hp.algorithm, device=device, path=str(path), env_id=meta.get("env_id"))
    policy.label = label or f"{hp.algorithm}:{path.resolve().name}"
    return policy


# ---------------------------------------------------------------------------------------------
# Training


# The expert behaviour cloning imitates: JMSRA on single rounds; in a session the pool-aware JMSRA
# (myopic JMSRA overflows the pool and thrashes: 3.9 s vs 2.7 s a round on JMSRA-Session-v0,
# docs/multiagent.md; the lookahead expert is as good but over 10x slower to solve).
BC_EXPERTS = {"single": "jmsra", "session": "pool-aware"}


def _expert_rounds(cfg: ScenarioConfig, worlds: int, rounds: int, seed: int):
    """``(obs, true terms, expert decision)`` of ``rounds`` rounds of ``worlds`` worlds (batches
    ``(worlds, ...)``) with the expert of :data:`BC_EXPERTS`. Single rounds: a world process;
    sessions: episodes of a session vector env rolled with the expert's decisions, so the receiver
    states are those the expert leads to."""
    from jmsra_env.solvers import solve

    if not cfg.session.enabled:
        world = WorldProcess(cfg, worlds)
        rng = np.random.default_rng([seed, 104729])
        world.reset(rng)
        for _ in range(rounds):
            obs, terms = world.observation(), world.true_terms()
            yield obs, terms, solve(BC_EXPERTS["single"], terms)
            world.step(rng)
        return
    from jmsra_env import actions
    from jmsra_env.session_env import JMSRASessionVectorEnv
    from jmsra_env.session_experts import SessionExpertPolicy

    expert = SessionExpertPolicy(BC_EXPERTS["session"], cfg)
    env = JMSRASessionVectorEnv(worlds, cfg)
    obs, _ = env.reset(seed=104729 + seed)
    for _ in range(rounds):
        d = expert.decide(obs)
        yield obs, env.current_terms(), d
        obs, *_ = env.step(actions.encode_dict(d.media, d.bandwidth_hz))
    env.close()


class TeamEvaluator:
    """Held-out mean latency of team policies, and JMSRA's on the same rounds (``jmsra_s``), through
    the one evaluation path (:mod:`jmsra_env.evaluation`).

    ``ceil(n_rounds / episode_rounds)`` episodes from ``SELECTION_SEED + seed``: single-round
    scenarios draw them once (:func:`jmsra_env.evaluation.draw_rounds`) and charge every policy on
    them (:func:`jmsra_env.evaluation.evaluate_policies`); sessions roll whole episodes in the
    session vector env (:func:`jmsra_env.evaluation.rollout_episodes`, the same exogenous rounds for
    every policy); JMSRA is the myopic expert there.
    """

    def __init__(self, cfg: ScenarioConfig, n_rounds: int, seed: int):
        from jmsra_env import evaluation as ev
        from jmsra_env.multiagent import make_team_policy

        self.cfg = cfg
        self.session = bool(cfg.session.enabled)
        self.episodes = max(1, -(-n_rounds // cfg.episode_rounds))
        self.seed = ev.SELECTION_SEED + seed
        self._rounds = None if self.session else ev.draw_rounds(cfg, self.episodes, self.seed)
        self.jmsra_s = self(make_team_policy("jmsra", cfg))

    def __call__(self, policy: TeamPolicy) -> float:
        from jmsra_env import evaluation as ev

        if self._rounds is not None:
            (result,) = ev.evaluate_policies(self._rounds, [policy], single_round_budget_s=0.0)
        else:
            result = ev.rollout_episodes(self.cfg, policy, self.episodes, self.seed, vectorization="vector")
        return float(np.mean(result.latency_s))


def behaviour_clone(actor_net, codec: FeatureCodec, hp: MARLConfig, device, log=None) -> float:
    """Regress every agent's deterministic action (``tanh(loc)``) on its part of JMSRA's decision
    (:func:`jmsra_agents.encoding.expert_policy_action`: medium +-1, finish-time code or share), from
    its own features only, and its scale towards ``hp.bc_scale``. Returns the last loss. In a
    session the expert is the pool-aware JMSRA (:data:`BC_EXPERTS`) on episodes it rolls.

    JMSRA's decision depends on the whole team; a decentralised actor learns its best local
    approximation, which MAPPO then improves on the shared reward.
    """
    import torch

    from .encoding import expert_policy_action

    cfg, n = codec.config, codec.n_agents
    worlds = max(1, -(-hp.bc_rounds // cfg.episode_rounds))
    feats, targets = [], []
    for obs, terms, d in _expert_rounds(cfg, worlds, min(cfg.episode_rounds, -(-hp.bc_rounds // worlds)), hp.seed):
        a = expert_policy_action("box" if codec.encoding == "request" else "deadline", d.media, d.bandwidth_hz, terms)
        targets.append(np.stack([a[..., :n], a[..., n:]], axis=-1))  # (M, N, 2)
        feats.append(codec.agent_features(obs))
    x = torch.as_tensor(np.concatenate(feats), device=device)
    y = torch.as_tensor(np.clip(np.concatenate(targets), -0.98, 0.98), dtype=torch.float32, device=device)
    opt = torch.optim.Adam(actor_net.parameters(), lr=1e-3)
    batch = min(hp.minibatch_size, x.shape[0])
    gen = torch.Generator(device="cpu").manual_seed(hp.seed)
    value = float("nan")
    for step in range(hp.bc_steps):
        idx = torch.randint(0, x.shape[0], (batch,), generator=gen).to(device)
        loc, scale = actor_net(x[idx])
        loss = torch.nn.functional.mse_loss(torch.tanh(loc), y[idx]) + torch.nn.functional.mse_loss(
            scale, torch.full_like(scale, hp.bc_scale)
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        value = float(loss.detach())
        if log is not None and (step + 1) % max(1, hp.bc_steps // 4) == 0:
            log(f"behaviour cloning {step + 1}/{hp.bc_steps}: loss {value:.4f}")
    return value


def evaluate_team(policy: TeamPolicy, obs, terms) -> float:
    """Mean latency (s) of a team policy on rounds ``(obs, terms)``, charged as the environment
    charges a decision (:func:`jmsra_env.evaluation.charge`)."""
    from jmsra_env import evaluation as ev

    return float(np.mean(ev.charge(terms, *policy.decide(obs)).latency_s))


def train(
    config: ScenarioConfig,
    hp: MARLConfig,
    run_dir: str | Path,
    *,
    device: str = "auto",
    progress: bool = False,
    log=print,
    env_id: str | None = None,
) -> dict[str, Any]:
    """Train MAPPO or IPPO; returns a summary (final eval latency, JMSRA's, frames, seconds).

    ``env_id``: the registered ID ``config`` came from, if any (saved for ``evaluate.py``).
    ``hp.gamma = None`` is resolved by :func:`default_gamma` (and saved resolved)."""
    import torch
    from tensordict.nn import TensorDictModule
    from torch.utils.tensorboard import SummaryWriter
    from torchrl.collectors import Collector
    from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
    from torchrl.data.replay_buffers.samplers import SamplerWithoutReplacement
    from torchrl.modules import ProbabilisticActor, TanhNormal, ValueOperator
    from torchrl.objectives import ClipPPOLoss, ValueEstimators

    from .ppo import resolve_device

    if hp.gamma is None:
        hp = dataclasses.replace(hp, gamma=default_gamma(config))
    dev = resolve_device(device)
    if dev == "cpu":
        torch.set_num_threads(1)  # small networks: one thread avoids contention (measured 20x faster on 2 cores)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(hp.seed)
    codec = FeatureCodec(config, hp.encoding)
    env = make_torchrl_env(config, codec, hp.algorithm, device=dev, seed=hp.seed)
    n = config.n_agents

    actor_net = build_actor_net(codec.n_agent_features, n, hp.hidden, hp.depth, dev)
    policy_module = TensorDictModule(
        actor_net, in_keys=[("agents", "observation")], out_keys=[("agents", "loc"), ("agents", "scale")]
    )
    policy = ProbabilisticActor(
        policy_module,
        spec=env.full_action_spec_unbatched[("agents", "action")],
        in_keys=[("agents", "loc"), ("agents", "scale")],
        out_keys=[("agents", "action")],
        distribution_class=TanhNormal,
        distribution_kwargs={"low": -1.0, "high": 1.0},
        return_log_prob=True,
    )
    critic_net = _build_critic_net(hp, codec, dev)
    critic = ValueOperator(critic_net, in_keys=_critic_in_keys(hp.algorithm), out_keys=[("agents", "state_value")])

    collector = Collector(
        env, policy, frames_per_batch=hp.frames_per_batch, total_frames=hp.total_frames, device=dev,
        auto_register_policy_transforms=False,  # the policy is stateless: no InitTracker needed
    )
    buffer = TensorDictReplayBuffer(
        storage=LazyTensorStorage(hp.frames_per_batch, device=dev),
        sampler=SamplerWithoutReplacement(),
        batch_size=hp.minibatch_size,
    )
    loss = ClipPPOLoss(
        actor_network=policy, critic_network=critic, clip_epsilon=hp.clip_epsilon,
        entropy_coeff=hp.entropy_coef, normalize_advantage=True,
        normalize_advantage_exclude_dims=(-2,),  # standardise per agent (their rewards are shared anyway)
    )
    loss.set_keys(
        reward=("agents", "reward"), action=("agents", "action"), value=("agents", "state_value"),
        done=("agents", "done"), terminated=("agents", "terminated"),
        sample_log_prob=("agents", "action_log_prob"),
    )
    loss.make_value_estimator(ValueEstimators.GAE, gamma=hp.gamma, lmbda=hp.lmbda)
    optim = torch.optim.Adam(loss.parameters(), lr=hp.learning_rate)

    evaluator = TeamEvaluator(config, hp.eval_rounds, hp.seed)
    jmsra_s = evaluator.jmsra_s
    team = MARLPolicy(actor_net, codec, hp.algorithm, dev)
    writer = SummaryWriter(str(run_dir / "tb"))
    if hp.bc_steps:
        bc_loss = behaviour_clone(actor_net, codec, hp, dev, log if progress else None)
        actor_net.train()
        writer.add_scalar("bc/loss", bc_loss, 0)
        writer.add_scalar("eval/mean_latency_s", evaluator(team), 0)

    def meta(frames: int, kind: str) -> dict[str, Any]:
        return {
            "format": MARL_FORMAT, "kind": kind, "frames": frames, "algorithm": hp.algorithm,
            "config": config.to_dict(), "marl": dataclasses.asdict(hp), "n_agents": n,
            "feature_stats": {k: v.tolist() for k, v in codec.stats.items()},
            "env_id": env_id, "features": codec.features, "versions": {**package_versions(), **_marl_versions()},
        }

    def evaluate() -> float:
        actor_net.eval()
        mean = evaluator(team)
        actor_net.train()
        return mean

    frames, t0, batch_i, last_eval = 0, time.perf_counter(), 0, float("nan")
    n_updates = hp.frames_per_batch // hp.minibatch_size
    for data in collector:
        batch_i += 1
        frames += data.numel()
        reward = data.get(("next", "agents", "reward"))
        with torch.no_grad():
            loss.value_estimator(
                data, params=loss.critic_network_params, target_params=loss.target_critic_network_params
            )
        buffer.extend(data.reshape(-1))
        for _ in range(hp.n_epochs):
            for _ in range(n_updates):
                sub = buffer.sample()
                out = loss(sub)
                total = out["loss_objective"] + out["loss_critic"] + out["loss_entropy"]
                optim.zero_grad()
                total.backward()
                torch.nn.utils.clip_grad_norm_(loss.parameters(), hp.max_grad_norm)
                optim.step()
        collector.update_policy_weights_()
        writer.add_scalar("train/mean_latency_s", float(-reward.mean()), frames)
        writer.add_scalar("train/loss_objective", float(out["loss_objective"].detach()), frames)
        writer.add_scalar("train/loss_critic", float(out["loss_critic"].detach()), frames)
        writer.add_scalar("train/frames_per_s", frames / (time.perf_counter() - t0), frames)
        if batch_i % hp.eval_every == 0 or frames >= hp.total_frames:
            last_eval = evaluate()
            gap = 100.0 * (last_eval / jmsra_s - 1.0)
            writer.add_scalar("eval/mean_latency_s", last_eval, frames)
            writer.add_scalar("eval/jmsra_latency_s", jmsra_s, frames)
            writer.add_scalar("eval/gap_to_jmsra_pct", gap, frames)
            if progress:
                train_t = float(-reward.mean())
                log(f"frames {frames:>8d}  train T {train_t:.3f} s  eval T {last_eval:.3f} s  ({gap:+.1f} % vs JMSRA)")
        if hp.checkpoint_every and batch_i % hp.checkpoint_every == 0:
            _save_run(run_dir / "checkpoints" / f"ckpt_{frames}", actor_net, critic_net, meta(frames, "checkpoint"))
    collector.shutdown()
    writer.flush()
    writer.close()
    if last_eval != last_eval:  # NaN: no evaluation happened yet
        last_eval = evaluate()
    _save_run(run_dir, actor_net, critic_net, meta(frames, "final"))
    return {
        "algorithm": hp.algorithm, "frames": frames, "seconds": time.perf_counter() - t0,
        "eval_latency_s": last_eval, "jmsra_latency_s": jmsra_s,
        "gap_to_jmsra_pct": 100.0 * (last_eval / jmsra_s - 1.0), "run_dir": str(run_dir), "device": dev,
        "gamma": hp.gamma,
    }


def _marl_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("torchrl", "tensordict", "pettingzoo"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


# ---------------------------------------------------------------------------------------------
# CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jmsra-train-marl",
        description="Train MAPPO or IPPO on the multi-agent JMSRA environment: the torch backend's multi-agent "
        "trainer (train.py --algorithm mappo; run directory, lock, --resume, safe format), or with --reference the "
        "TorchRL reference trainer (marl.json runs).",
    )
    p.add_argument("--scenario", default="JMSRA-v0", help="variant or registered ID (default JMSRA-v0)")
    p.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE", help="scenario overrides, e.g. n_agents=8")
    p.add_argument("--logdir", default="runs", help="parent directory of the run directory")
    p.add_argument("--run-name", default=None, help="run directory name (default <algorithm>-<scenario>)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--quick", action="store_true",
                   help="a quick run (train.py --quick's budget; --reference: 20,000 frames)")
    p.add_argument("--force", action="store_true", help="replace an existing run directory (not with --reference)")
    p.add_argument("--resume", metavar="RUN_DIR", default=None,
                   help="continue a run of this trainer (not with --reference); the flags given must match the run")
    p.add_argument("--reference", action="store_true",
                   help="the TorchRL reference trainer (its own run format, marl.json; no lock, no resume)")
    for f in dataclasses.fields(MARLConfig):  # each hyperparameter written once, in MARLConfig
        if f.name == "gamma":
            kind, text = float, f"default 0 (single-round scenarios), {SESSION_GAMMA} (sessions)"
        else:
            kind, text = type(f.default), f"--reference default {f.default}"
        p.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=None, help=text)
    return p


def _scenario_env_id(scenario: str) -> str | None:
    """The registered (Dict-action) ID of a ``--scenario`` variant or ID; None if it names none."""
    from jmsra_env.registration import SESSION_VARIANTS, VARIANTS, env_id, variant_of

    name = scenario.removesuffix("-v0")
    if name in VARIANTS or name in SESSION_VARIANTS:
        return env_id(name)
    try:
        return env_id(variant_of(scenario if "/" in scenario else f"jmsra_env/{scenario}")[0])
    except ValueError:
        return None


# jmsra-train-marl flag -> train.py flag, for the hyperparameters that mean the same in both trainers
_SAME_FLAGS = {"algorithm": "--algorithm", "total_frames": "--total-timesteps", "learning_rate": "--learning-rate",
               "n_epochs": "--n-epochs", "max_grad_norm": "--max-grad-norm", "clip_epsilon": "--clip-range",
               "entropy_coef": "--ent-coef", "gamma": "--gamma", "lmbda": "--gae-lambda", "bc_steps": "--bc-steps",
               "bc_rounds": "--bc-rounds", "seed": "--seed"}
_REFERENCE_ONLY = {"bc_scale": "the actor's TanhNormal scale", "eval_rounds": "--eval-episodes of train.py"}


def _check_given(given: dict[str, Any]) -> None:
    """Each given hyperparameter's own range (``MARLConfig``'s checks, naming the flag's field)."""
    for name, value in given.items():
        try:
            MARLConfig(**{name: value})
        except ValueError as exc:
            if "minibatch_size (" not in str(exc):  # the pair's check belongs to the reference's defaults
                raise


def _train_argv(args: argparse.Namespace, given: dict[str, Any], cfg: ScenarioConfig) -> list[str]:
    """The ``train.py`` flags of a ``jmsra-train-marl`` command (the torch backend's multi-agent trainer)."""
    from .torch_ppo import TORCH_N_ENVS

    for name, what in _REFERENCE_ONLY.items():
        if name in given:
            raise ValueError(f"--{name.replace('_', '-')} applies to --reference only ({what})")
    if given.get("encoding", "deadline") != "deadline":
        raise ValueError("--encoding request applies to --reference only; this trainer's agents use the deadline "
                         "encoding (medium and finish-time target)")
    if args.resume is not None:
        out = ["--resume", args.resume]
    else:
        env_id = _scenario_env_id(args.scenario) or args.scenario
        name = args.run_name or f"{given.get('algorithm', 'mappo')}-{args.scenario.split('/')[-1]}"
        out = ["--algorithm", given.get("algorithm", "mappo"), "--env-id", env_id, "--logdir", args.logdir,
               "--run-name", name, *(["--force"] if args.force else []), *(["--quick"] if args.quick else [])]
        for kv in args.config:
            out += ["--config", kv]
    out += ["--device", args.device, "--no-progress-bar"]
    for name, flag in _SAME_FLAGS.items():
        if name in given and not (args.resume is None and name == "algorithm"):
            out += [flag, str(given[name])]
    if "frames_per_batch" in given:  # rounds per rollout = --n-steps x --n-envs
        fpb = given["frames_per_batch"]
        if fpb % TORCH_N_ENVS:
            raise ValueError(f"--frames-per-batch must be a multiple of {TORCH_N_ENVS:,} (the rollout's teams); got {fpb}")
        out += ["--n-steps", str(fpb // TORCH_N_ENVS)]
    if "minibatch_size" in given:  # rounds per gradient step; a sample is one agent in one round
        out += ["--batch-size", str(given["minibatch_size"] * cfg.n_agents)]
    if "hidden" in given or "depth" in given:
        out += ["--net-arch", ",".join([str(given.get("hidden", 128))] * given.get("depth", 2))]
    rounds = TORCH_N_ENVS * (given.get("frames_per_batch", 8 * TORCH_N_ENVS) // TORCH_N_ENVS)
    for name, flag in (("eval_every", "--eval-freq"), ("checkpoint_every", "--checkpoint-freq")):
        if name in given:  # batches -> rounds
            out += [flag, str(given[name] * rounds)]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``jmsra-train-marl``: exit status 0, 2 on bad input (one line naming the flag), 130 / 143
    when a signal stopped a run (saved; ``--resume`` continues it)."""
    args = _parser().parse_args(argv)
    try:
        given = {f.name: getattr(args, f.name) for f in dataclasses.fields(MARLConfig)}
        hp_kwargs = {k: v for k, v in given.items() if v is not None}
        if args.reference:
            if args.resume is not None or args.force:
                raise ValueError(f"--{'resume' if args.resume is not None else 'force'} does not apply to --reference "
                                 f"(its runs have no lock and no resume)")
            if args.quick and "total_frames" not in hp_kwargs:
                hp_kwargs["total_frames"] = 20_000
            hp = MARLConfig(**hp_kwargs)
        else:
            _check_given(hp_kwargs)
        env = parallel_env(args.scenario, **parse_overrides(args.config))
        cfg = env.config
        train_argv = None if args.reference else _train_argv(args, hp_kwargs, cfg)
    except ValueError as exc:
        print(f"jmsra-train-marl: error: {exc}", file=sys.stderr)
        return 2
    if args.reference:
        name = args.run_name or f"{hp.algorithm}-{args.scenario.split('/')[-1]}"
        summary = train(
            cfg, hp, Path(args.logdir) / name, device=args.device, progress=True, env_id=_scenario_env_id(args.scenario)
        )
        print(json.dumps(summary, indent=2))
        return 0
    return _run_torch_trainer(train_argv)


def _run_torch_trainer(train_argv: list[str]) -> int:
    """``train.py`` with ``train_argv``, its errors reported as this command's."""
    from .cli_train import build_parser, train_from_argv

    def refuse(message: str) -> int:
        print(f"jmsra-train-marl: error: {message} (in train.py's terms)", file=sys.stderr)
        return 2

    result = train_from_argv(train_argv, build_parser(prog="jmsra-train-marl"), refuse)
    return result if isinstance(result, int) else result.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
