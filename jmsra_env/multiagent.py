"""Decentralised agents: the same rounds as a cooperative multi-agent game (PettingZoo ``ParallelEnv``).

>>> from jmsra_env.multiagent import parallel_env
>>> env = parallel_env("JMSRA-v0")
>>> observations, infos = env.reset(seed=0)
>>> actions = {agent: env.action_space(agent).sample() for agent in env.agents}
>>> observations, rewards, terminations, truncations, infos = env.step(actions)

Each agent ``agent_i`` of the team is a player. It observes only its own channel, device, load and
token quantities plus what the receiver broadcasts, picks its medium and a non-negative bandwidth
*request* ``w_i``; the receiver's scheduler grants ``b_i = B w_i / sum_j w_j`` (all zero: an equal
split, :func:`jmsra_env.actions.shares_to_bandwidth_hz`). Every agent receives the shared reward
``-T``. The environment is a thin layer over a :class:`~jmsra_env.env.JMSRAEnv`: the same world
process draws the rounds and :func:`jmsra_env.model.latency` charges them, so a seed gives exactly
the rounds of the single-agent environment and a joint action mapped to the central action
(:func:`joint_to_central_action`) earns exactly the central environment's reward.

Observation (per agent)
    A ``Dict`` with the central observation's keys. *Per-agent* keys (a trailing agents axis in the
    central observation: ``snr_db``, ``compute_flops``, ``mem_bw_bytes_per_s``, ``load``,
    ``context_tokens``, ``nl_tokens``) hold the agent's own entry, shape ``(1,)``; *broadcast* keys
    (:data:`BROADCAST_KEYS`: ``receiver_load``, and in a session the pool's
    ``kv_pool_used_fraction`` and ``kv_pool_bytes``; other keys are broadcast unless they carry an
    agents axis) are copied to every agent. A session scenario (``parallel_env("JMSRA-Session-v0")``)
    wraps :class:`~jmsra_env.session_env.JMSRASessionEnv`: each agent also observes its own
    ``new_tokens``, ``unseen_tokens``, ``kv_resident_tokens`` and ``rounds_since_kv``. Because each per-agent array keeps a length-1 agents axis, every model function that
    reads an observation (:func:`jmsra_env.model.terms_from_observation`) works on one agent's
    observation too: it returns that agent's own terms.

Action (per agent)
    ``Box(0, 1, (2,), float32)``: ``a[0]`` is the medium score (``> 0.5`` = KV, else NL) and
    ``a[1]`` the bandwidth request ``w_i`` (the fraction of the band the agent asks for; only the
    ratios to the others' requests matter). A missing or unknown agent, a mis-shaped, non-finite,
    negative or out-of-range entry raises ``ValueError`` naming the agent and the field.

State
    :meth:`JMSRAParallelEnv.state` is the centralised observation flattened in the observation
    space's (sorted) key order, :attr:`JMSRAParallelEnv.state_keys` (float64,
    :attr:`JMSRAParallelEnv.state_space`): what a centralised critic (MAPPO) reads.

Infos
    Per agent: its own ``medium``, ``bandwidth_hz``, ``rate_bps``, ``compute_s``,
    ``transmission_s``, ``finish_s``, ``receiver_s``, and the round's ``latency_s``,
    ``uncapped_latency_s``, ``capped``, ``answer_s``, ``kv_share`` and ``round``; in a session also
    its own ``evicted`` and the round's ``evictions``, ``kv_pool_used_bytes`` and
    ``kv_pool_used_fraction``. Reset infos are
    empty dicts (TorchRL builds its info spec from them; the step infos then stay out of its
    tensordicts).

Team policies (:class:`TeamPolicy`) act through the same interface: :meth:`TeamPolicy.act` on the
per-agent observations, :meth:`TeamPolicy.predict` on the central observation (returns the central
Dict action, like :class:`jmsra_env.policies.ExpertPolicy`, so the evaluation tools can score
them side by side). :func:`make_team_policy` builds the decentralised yardsticks (``threshold``,
``proportional``) and the centralised experts (``jmsra``, ``optimal``, ...: upper bounds on what
coordination can reach).

PettingZoo is an optional dependency (``pip install jmsra_env[marl]``): without it this module
still imports and the environment works; it is then not an instance of ``pettingzoo.ParallelEnv``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from . import actions, model
from .config import ScenarioConfig
from .env import JMSRAEnv, resolve_env_config
from .policies import ExpertPolicy
from .registration import SESSION_VARIANTS, VARIANTS, variant_of
from .session_env import JMSRASessionEnv
from .session_experts import SESSION_EXPERT_NAMES, SessionExpertPolicy
from .solvers import EXPERT_NAMES, check_name, single_agent_threshold

try:  # optional: the [marl] extra
    from pettingzoo import ParallelEnv as _ParallelEnvBase
except ImportError:  # pragma: no cover - exercised only without pettingzoo
    _ParallelEnvBase = object

__all__ = [
    "JMSRAParallelEnv",
    "parallel_env",
    "BROADCAST_KEYS",
    "KV_THRESHOLD",
    "agent_names",
    "split_observation",
    "join_observations",
    "joint_to_central_action",
    "central_to_joint_action",
    "TeamPolicy",
    "DecentralisedRule",
    "CentralisedExpert",
    "threshold_rule",
    "proportional_rule",
    "RULES",
    "TEAM_POLICY_NAMES",
    "LOCAL_POLICY_NAMES",
    "make_team_policy",
]

# Central observation keys that the receiver broadcasts to every agent (anything else with a
# trailing agents axis is per agent). Listed explicitly so that N = 1 stays unambiguous; the last
# two exist in session scenarios only (the receiver's KV pool).
BROADCAST_KEYS: tuple[str, ...] = ("receiver_load", "kv_pool_used_fraction", "kv_pool_bytes")

KV_THRESHOLD = 0.5  # medium score above which an agent sends its KV cache
_BOUND_TOL = 1e-6  # float32 rounding slack on the [0, 1] bounds

_INFO_PER_AGENT = ("bandwidth_hz", "rate_bps", "compute_s", "transmission_s", "finish_s", "receiver_s")
_INFO_SHARED = ("latency_s", "uncapped_latency_s", "capped", "answer_s", "kv_share", "round")
# Sessions add these after the round (absent from single-round infos): per agent, and shared.
_SESSION_INFO_PER_AGENT = ("evicted",)
_SESSION_INFO_SHARED = ("evictions", "kv_pool_used_bytes", "kv_pool_used_fraction")


def agent_names(n_agents: int) -> list[str]:
    """``["agent_0", ..., "agent_{N-1}"]``."""
    return [f"agent_{i}" for i in range(n_agents)]


def _per_agent_keys(space: spaces.Dict, n_agents: int, broadcast: Sequence[str]) -> tuple[str, ...]:
    return tuple(k for k, s in space.spaces.items() if k not in broadcast and s.shape[-1:] == (n_agents,))


def split_observation(obs: Mapping[str, np.ndarray], per_agent_keys: Sequence[str], n_agents: int) -> list[dict]:
    """Per-agent observations of a central one: per-agent keys sliced to ``(..., 1)``, the rest
    copied to every agent."""
    per = [(k, v) for k, v in obs.items() if k in per_agent_keys]
    shared = [(k, v) for k, v in obs.items() if k not in per_agent_keys]
    out = []
    for i in range(n_agents):
        o = {k: v[..., i : i + 1] for k, v in per}
        o.update((k, v.copy()) for k, v in shared)
        out.append(o)
    return out


def join_observations(observations: Sequence[Mapping[str, np.ndarray]], per_agent_keys: Sequence[str]) -> dict:
    """The central observation of per-agent ones (in agent order): the inverse of
    :func:`split_observation`."""
    first = observations[0]
    return {
        k: np.concatenate([o[k] for o in observations], axis=-1) if k in per_agent_keys else np.asarray(first[k])
        for k in first
    }


def joint_to_central_action(joint) -> dict[str, np.ndarray]:
    """The central Dict action of a joint action ``(..., N, 2)`` (rows ``[medium score, request]``)."""
    a = np.asarray(joint, dtype=np.float64)
    return {"media": (a[..., 0] > KV_THRESHOLD).astype(np.int8), "bandwidth": a[..., 1]}


def central_to_joint_action(action: Mapping[str, Any]) -> np.ndarray:
    """A joint action ``(..., N, 2)`` that maps back to the central Dict ``action``'s decision:
    media as 0 / 1, the shares as requests (exactly; shares above 1 are first scaled so that the
    largest is 1: the scheduler only sees ratios)."""
    media = np.asarray(action["media"], dtype=np.float64)
    shares = np.asarray(action["bandwidth"], dtype=np.float64)
    peak = shares.max(axis=-1, keepdims=True)
    req = np.where(peak > 1.0, shares / np.maximum(peak, 1.0), shares)
    return np.stack([(media != 0).astype(np.float64), req], axis=-1)


class JMSRAParallelEnv(_ParallelEnvBase):
    """The JMSRA rounds as a PettingZoo ``ParallelEnv`` (module docstring: spaces, state, infos).

    ``JMSRAParallelEnv(config=None, *, base_config=None, render_mode=None, **overrides)`` takes the
    arguments of :class:`~jmsra_env.env.JMSRAEnv`; :meth:`from_env` wraps an existing central
    environment with a Dict observation and the Dict action form (e.g. a session scenario).
    Never terminated; truncated (all agents at once) after ``episode_rounds`` rounds, after which
    ``agents`` is empty until the next ``reset``.
    """

    metadata = {"name": "jmsra_parallel_v0", "render_modes": ["ansi", "rgb_array"], "is_parallelizable": True}

    def __init__(
        self,
        config: ScenarioConfig | Mapping[str, Any] | None = None,
        *,
        base_config: ScenarioConfig | Mapping[str, Any] | None = None,
        render_mode: str | None = None,
        **overrides: Any,
    ):
        cfg = resolve_env_config(config, base_config, overrides)
        central_class = JMSRASessionEnv if cfg.session.enabled else JMSRAEnv
        self._setup(central_class(cfg, render_mode=render_mode))

    @classmethod
    def from_env(cls, central, broadcast_keys: Sequence[str] = BROADCAST_KEYS) -> JMSRAParallelEnv:
        """Wrap a central env (Dict observation, Dict action ``media`` / ``bandwidth``)."""
        self = cls.__new__(cls)
        self._setup(central, broadcast_keys)
        return self

    def _setup(self, central, broadcast_keys: Sequence[str] = BROADCAST_KEYS) -> None:
        base = central.unwrapped
        if getattr(base, "action_form", "dict") != "dict":
            raise ValueError("the central env must use action_form='dict'")
        self.central_env = central
        self.config: ScenarioConfig = base.config
        self.render_mode = getattr(base, "render_mode", None)
        n = self.n_agents = self.config.n_agents
        self.possible_agents = agent_names(n)
        self.agents: list[str] = []
        self._index = {a: i for i, a in enumerate(self.possible_agents)}
        obs_space: spaces.Dict = central.observation_space
        self.central_observation_space = obs_space
        self.per_agent_keys = _per_agent_keys(obs_space, n, broadcast_keys)
        self.broadcast_keys = tuple(k for k in obs_space.spaces if k not in self.per_agent_keys)
        # Each agent's space is its own object (no generator shared between agents' spaces).
        self.observation_spaces = {
            a: spaces.Dict(
                {
                    k: spaces.Box(s.low[..., i : i + 1], s.high[..., i : i + 1], dtype=s.dtype)
                    if k in self.per_agent_keys
                    else copy.deepcopy(s)
                    for k, s in obs_space.spaces.items()
                }
            )
            for i, a in enumerate(self.possible_agents)
        }
        self.action_spaces = {a: spaces.Box(0.0, 1.0, (2,), dtype=np.float32) for a in self.possible_agents}
        self.state_space = spaces.Box(
            np.concatenate([s.low.ravel() for s in obs_space.spaces.values()]),
            np.concatenate([s.high.ravel() for s in obs_space.spaces.values()]),
            dtype=np.float64,
        )
        self.state_keys = tuple(obs_space.spaces)  # the Dict space's (sorted) key order
        self._central_obs: dict[str, np.ndarray] | None = None

    # -- PettingZoo API ----------------------------------------------------------------------

    def observation_space(self, agent: str) -> spaces.Dict:
        return self.observation_spaces[self._check_agent(agent)]

    def action_space(self, agent: str) -> spaces.Box:
        return self.action_spaces[self._check_agent(agent)]

    def reset(self, seed: int | None = None, options: dict | None = None):
        obs, _ = self.central_env.reset(seed=seed, options=options)
        self.agents = list(self.possible_agents)
        self._central_obs = obs
        return self._split(obs), {a: {} for a in self.agents}

    def step(self, actions_: Mapping[str, Any]):
        if not self.agents:
            raise RuntimeError("call reset() before step() (the episode has ended)")
        joint = self.joint_action(actions_)
        obs, reward, terminated, truncated, info = self.central_env.step(joint_to_central_action(joint))
        self._central_obs = obs
        agents = self.agents
        observations = self._split(obs)
        rewards = dict.fromkeys(agents, float(reward))
        terminations = dict.fromkeys(agents, bool(terminated))
        truncations = dict.fromkeys(agents, bool(truncated))
        infos = self._agent_infos(info)
        if terminated or truncated:
            self.agents = []
        return observations, rewards, terminations, truncations, infos

    def state(self) -> np.ndarray:
        """The centralised observation, flattened in the order of :attr:`state_keys` (float64)."""
        if self._central_obs is None:
            raise RuntimeError("call reset() before state()")
        obs = self._central_obs
        return np.concatenate([np.ravel(obs[k]) for k in self.state_keys]).astype(np.float64, copy=False)

    def render(self):
        return self.central_env.render()

    def close(self) -> None:
        self.central_env.close()

    # -- helpers -----------------------------------------------------------------------------

    @property
    def central_observation(self) -> dict[str, np.ndarray]:
        """The current central observation (what :meth:`state` flattens)."""
        if self._central_obs is None:
            raise RuntimeError("call reset() first")
        return self._central_obs

    def current_terms(self) -> model.RoundTerms:
        """The model terms the next step charges."""
        return self.central_env.unwrapped.current_terms()

    def _check_agent(self, agent: str) -> str:
        if agent not in self._index:
            first, last = self.possible_agents[0], self.possible_agents[-1]
            raise ValueError(f"unknown agent {agent!r}; agents are {first} .. {last}")
        return agent

    def joint_action(self, actions_: Mapping[str, Any]) -> np.ndarray:
        """Validate one action per live agent and stack them into ``(N, 2)`` float64."""
        if not isinstance(actions_, Mapping):
            raise ValueError(f"actions must be a dict agent -> action; got {type(actions_).__name__}")
        unknown = [a for a in actions_ if a not in self._index]
        if unknown:
            raise ValueError(f"actions for unknown agent(s) {unknown}; agents are {self.possible_agents}")
        missing = [a for a in self.agents if a not in actions_]
        if missing:
            raise ValueError(f"missing action(s) for agent(s) {missing}: every live agent must act")
        try:  # fast path: one array, one check; the per-agent check names the culprit
            joint = np.asarray([actions_[a] for a in self.possible_agents])
        except (TypeError, ValueError, OverflowError):
            joint = None
        if joint is not None and joint.dtype.kind in "biuf" and joint.shape == (self.n_agents, 2):
            joint = joint.astype(np.float64)
            if ((joint >= 0.0) & (joint <= 1.0)).all():
                return joint
        joint = np.empty((self.n_agents, 2))
        for agent, i in self._index.items():
            joint[i] = _check_agent_action(agent, actions_[agent])
        return joint

    def _split(self, obs: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
        return dict(zip(self.possible_agents, split_observation(obs, self.per_agent_keys, self.n_agents)))

    def _agent_infos(self, info: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        shared = {k: info[k] for k in (*_INFO_SHARED, *_SESSION_INFO_SHARED) if k in info}
        media = info["media"]
        per = [(k, info[k].tolist()) for k in (*_INFO_PER_AGENT, *_SESSION_INFO_PER_AGENT) if k in info]
        per.append(("medium", media.tolist()))
        out = {}
        for agent, i in self._index.items():
            d = {k: v[i] for k, v in per}
            d.update(shared)
            out[agent] = d
        return out


def _check_agent_action(agent: str, action) -> np.ndarray:
    # real numbers of shape (2,) [medium score, request] (the field is the agent's action)
    a = actions.action_array(action, agent, (2,), finite=False)
    for j, field in enumerate(("medium score", "request")):
        v = a[j]
        if not np.isfinite(v):
            raise ValueError(f"action of {agent!r}: {field} must be finite; got {v}")
        if v < 0.0:
            raise ValueError(f"action of {agent!r}: {field} must be non-negative; got {v}")
        if v > 1.0 + _BOUND_TOL:
            raise ValueError(f"action of {agent!r}: {field} must be at most 1; got {v}")
    return np.minimum(a, 1.0)


def parallel_env(
    scenario: str | ScenarioConfig | Mapping[str, Any] | None = None,
    *,
    render_mode: str | None = None,
    **overrides: Any,
) -> JMSRAParallelEnv:
    """The multi-agent environment of a scenario, PettingZoo style.

    ``scenario`` is a registered ID (``"jmsra_env/JMSRA-N8-v0"``, ``"jmsra_env/JMSRA-Session-v0"``;
    the ``-Box`` twins name the same scenario), a variant name (``"JMSRA-N8"``,
    ``"JMSRA-Session-TightPool"``, with or without ``-v0``), a :class:`~jmsra_env.ScenarioConfig`
    or a mapping of overrides; keyword ``overrides`` apply last. A session scenario (a session
    variant, or ``session.enabled``) wraps :class:`~jmsra_env.session_env.JMSRASessionEnv`, any
    other :class:`~jmsra_env.env.JMSRAEnv`. Seed through ``reset(seed=...)``.
    """
    variants = {**VARIANTS, **SESSION_VARIANTS}
    base: Mapping[str, Any] | None = None
    config: ScenarioConfig | Mapping[str, Any] | None = None
    if isinstance(scenario, str):
        base = variants.get(scenario.removesuffix("-v0"))
        if base is None:
            try:
                variant, _ = variant_of(scenario if "/" in scenario else f"jmsra_env/{scenario}")
            except ValueError:
                raise ValueError(
                    f"unknown scenario {scenario!r}; give a variant ({', '.join(variants)}), a registered "
                    "ID, a ScenarioConfig or a mapping of overrides"
                ) from None
            base = variants[variant]
    else:
        config = scenario
    base_config = dict(base) if base is not None else None
    return JMSRAParallelEnv(config, base_config=base_config, render_mode=render_mode, **overrides)


# ---------------------------------------------------------------------------------------------
# Team policies: decentralised rules, centralised experts


class TeamPolicy:
    """A policy for the whole team, usable on the multi-agent and on the central environment.

    Subclasses implement :meth:`agent_actions` (central observation ``(N,)`` or a batch
    ``(M, N)`` -> joint action ``(..., N, 2)``). ``decentralised`` says whether agent ``i``'s
    action depends only on agent ``i``'s own observation.
    """

    name: str = "team"
    decentralised: bool = False

    def __init__(self, config: ScenarioConfig, broadcast_keys: Sequence[str] = BROADCAST_KEYS):
        self.config = config
        self.consts = model.model_constants(config)
        self.broadcast_keys = tuple(broadcast_keys)
        self.agents = agent_names(config.n_agents)
        self._label: str | None = None

    # The evaluation's policy protocol (jmsra_env.evaluation.Policy): label, kind, decide.
    @property
    def label(self) -> str:
        """The name in evaluation tables (default: :attr:`name`)."""
        return self._label or self.name

    @label.setter
    def label(self, value: str) -> None:
        self._label = value

    @property
    def kind(self) -> str:
        """``"decentralised"`` or ``"expert"`` (a centralised expert acting for the team)."""
        return "decentralised" if self.decentralised else "expert"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, n_agents={self.config.n_agents})"

    def agent_actions(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def _per_agent_keys(self, obs: Mapping[str, np.ndarray]) -> tuple[str, ...]:
        n = self.config.n_agents
        return tuple(k for k, v in obs.items() if k not in self.broadcast_keys and np.shape(v)[-1:] == (n,))

    def act(self, observations: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """Per-agent actions (float32 ``(2,)``) for the multi-agent env's per-agent observations."""
        obs_list = [observations[a] for a in self.agents]
        keys = tuple(k for k in obs_list[0] if k not in self.broadcast_keys)
        joint = self.agent_actions(join_observations(obs_list, keys))
        return {a: joint[..., i, :].astype(np.float32) for i, a in enumerate(self.agents)}

    def predict(self, obs, state=None, episode_start=None, deterministic: bool = True):
        """SB3-style on the CENTRAL Dict observation (one or a batch): ``(Dict action, None)``,
        the joint action mapped by :func:`joint_to_central_action` (float64, exact)."""
        if not isinstance(obs, Mapping) or "snr_db" not in obs:
            raise ValueError(
                f"obs must be the central Dict observation (a mapping with 'snr_db', ...); got {type(obs).__name__}"
            )
        return joint_to_central_action(self.agent_actions(obs)), None

    def decide(self, obs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """``(media, bandwidth_hz)`` the scheduler grants for the team's action on a central observation."""
        a = joint_to_central_action(self.agent_actions(obs))
        return a["media"], actions.shares_to_bandwidth_hz(a["bandwidth"], self.consts.bandwidth_hz)

    __call__ = predict


def threshold_rule(obs: Mapping[str, np.ndarray], consts: model.ModelConstants, n_agents: int) -> np.ndarray:
    """Single-agent threshold on ``B / N``: KV exactly when the agent's own channel on an equal share
    favours it (:func:`jmsra_env.solvers.single_agent_threshold`); request 1 (an equal split).

    Works agent by agent: ``obs`` holds per-agent arrays ``(..., k)`` for any ``k`` agents (one
    agent's own observation has ``k = 1``); returns ``(..., k, 2)``.
    """
    terms = model.terms_from_observation(consts, obs)
    kv = single_agent_threshold(terms, consts.bandwidth_hz / n_agents).kv_preferred
    return np.stack([kv.astype(np.float64), np.ones(kv.shape)], axis=-1)


def proportional_rule(obs: Mapping[str, np.ndarray], consts: model.ModelConstants, n_agents: int) -> np.ndarray:
    """The threshold rule's medium; a request proportional to the agent's transmission time on an
    equal share, ``D_i(x_i) / r_i(B / N)`` (payload over spectral efficiency), divided by the
    latency cap and clipped to 1.

    If every agent's transmission time were linear in its bandwidth, granting shares proportional
    to these requests would make all transmissions end together: the (P2) optimality condition
    without the compute times, which an agent cannot compare without the others' observations.
    Agent by agent like :func:`threshold_rule`.
    """
    kv = threshold_rule(obs, consts, n_agents)[..., 0]
    terms = model.terms_from_observation(consts, obs)
    rate = model.rate_bps(np.full(kv.shape, consts.bandwidth_hz / n_agents), terms.gain_hz)
    tx = model.transmission_time_s(model.select_medium(terms.payload_bits, kv), rate)
    request = np.minimum(tx / consts.latency_cap_s, 1.0)
    return np.stack([kv, request], axis=-1)


RULES = {"threshold": threshold_rule, "proportional": proportional_rule}


class DecentralisedRule(TeamPolicy):
    """Every agent applies ``rule`` to its own observation (:data:`RULES`)."""

    decentralised = True

    def __init__(self, name: str, config: ScenarioConfig, broadcast_keys: Sequence[str] = BROADCAST_KEYS):
        if name not in RULES:
            raise ValueError(f"unknown decentralised rule {name!r}; valid: {', '.join(RULES)}")
        super().__init__(config, broadcast_keys)
        self.name = name
        self.rule = RULES[name]

    def agent_action(self, agent_obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """One agent's action ``(2,)`` from its own observation alone."""
        return self.rule(agent_obs, self.consts, self.config.n_agents)[..., 0, :]

    def act(self, observations):
        return {a: self.agent_action(observations[a]).astype(np.float32) for a in self.agents}

    def agent_actions(self, obs):
        # The rule is elementwise over the agents axis, so one call on the central observation
        # gives every agent's decentralised action at once (a test checks the equality).
        return self.rule(obs, self.consts, self.config.n_agents)


class CentralisedExpert(TeamPolicy):
    """A centralised expert of :mod:`jmsra_env.solvers` (``jmsra``, ``optimal``, ...) acting for the
    team: it reads everyone's observation (an upper bound on what coordination reaches). In a
    session scenario the session experts (``lookahead``, ``pool-aware``, ...,
    :class:`jmsra_env.session_experts.SessionExpertPolicy`) are available too."""

    decentralised = False

    def __init__(
        self, name: str, config: ScenarioConfig, broadcast_keys: Sequence[str] = BROADCAST_KEYS, seed=None
    ):
        super().__init__(config, broadcast_keys)
        if config.session.enabled and name in _SESSION_TEAM_EXPERTS:
            self.name = name
            self.expert = SessionExpertPolicy(name, config)
        else:
            self.name = check_name(name)
            self.expert = ExpertPolicy(name, config, "dict", seed)

    def agent_actions(self, obs):
        d = self.expert.decide(obs)
        return central_to_joint_action(actions.encode_dict(d.media, d.bandwidth_hz))


# Session experts that decide from the observation alone (the clairvoyant one reads the env's future).
_SESSION_TEAM_EXPERTS = tuple(n for n in SESSION_EXPERT_NAMES if n != "clairvoyant")
TEAM_POLICY_NAMES: tuple[str, ...] = (*RULES, *EXPERT_NAMES)
# The decentralised rules under the names evaluate.py lists them by (next to the experts'
# ``threshold-equal``, which is the same decision as ``threshold-local``).
LOCAL_POLICY_NAMES: dict[str, str] = {"threshold-local": "threshold", "proportional-local": "proportional"}


def make_team_policy(name: str, config: ScenarioConfig, seed: int | None = None) -> TeamPolicy:
    """A decentralised rule (``threshold``, ``proportional``, or as :data:`LOCAL_POLICY_NAMES`
    ``threshold-local``, ``proportional-local``, labelled so) or a centralised expert by name (in a
    session scenario also a session expert: ``lookahead``, ``pool-aware``)."""
    if name in RULES:
        return DecentralisedRule(name, config)
    if name in LOCAL_POLICY_NAMES:
        rule = DecentralisedRule(LOCAL_POLICY_NAMES[name], config)
        rule.label = name
        return rule
    if name in EXPERT_NAMES or (config.session.enabled and name in _SESSION_TEAM_EXPERTS):
        return CentralisedExpert(name, config, seed=seed)
    valid = (*TEAM_POLICY_NAMES, *LOCAL_POLICY_NAMES, *(_SESSION_TEAM_EXPERTS if config.session.enabled else ()))
    raise ValueError(f"unknown team policy {name!r}; valid: {', '.join(dict.fromkeys(valid))}")
