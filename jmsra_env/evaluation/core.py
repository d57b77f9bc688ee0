"""The evaluation core: seeded rounds, the policy protocol, charging, and rolling whole episodes.

**Common random numbers.** A decision never changes the future rounds of the current scenarios
(the world process does not depend on actions), so the rounds of an evaluation are drawn once
(:func:`draw_rounds`) and every policy is charged on the very same rounds. Episode ``e`` is drawn
exactly as ``env.reset(seed=seed + e)`` followed by ``episode_rounds`` steps would draw it, so any
episode of an evaluation can be replayed in the environment. Each round keeps the observation (what
a policy sees; stale with ``csi_delay > 0``) and the *true* model terms (what the environment
charges). A policy decides on all recorded observations in batched calls and is charged
:func:`charge`: :func:`jmsra_env.model.latency` of its decision as the environment decodes it, the
environment's reward bit for bit.

**Whole episodes.** Where decisions change later rounds (sessions: the receiver keeps state between
rounds, docs/sessions.md), rounds cannot be drawn ahead: :func:`rollout_episodes` steps a vector
environment of the scenario's kind, one sub-environment per episode, and lets the policy decide on
the batch of observations each step. Common random numbers still hold: the world does not depend
on the actions, so with the same seed every policy meets the same exogenous rounds (each with its
own receivers). :func:`evaluate_scenario` picks the path: rollouts for a session scenario, rounds
drawn once otherwise. For the single-round scenarios both paths give the same per-round latencies
(a test checks it).

**The policy protocol** (:class:`Policy`): ``label`` and ``kind`` attributes, ``decide(obs) ->
(media, bandwidth_hz)`` on a batch of observations (a Dict of ``(M, ...)`` arrays, or one
observation), and an optional ``reset(config, seed)`` called before every evaluation with the
evaluated scenario and the evaluation's seed, and an optional ``bind_env(envs)`` that
:func:`rollout_episodes` calls with the vector environment of the episodes before it resets it (for
a policy that reads the environment: the session's ``clairvoyant`` bound, :class:`EnvBoundExpert`).
The experts are :class:`jmsra_env.policies.ExpertPolicy`;
trained models plug in from ``jmsra_agents.evaluation`` (``jmsra_env`` never imports ``agents``).
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

import gymnasium as gym
from gymnasium.utils import seeding

from .. import actions, model
from ..bandwidth import optimal_bandwidth
from ..config import ScenarioConfig, make_config
from ..env import JMSRAEnv
from ..policies import REFERENCE_EXPERTS as EXPERTS
from ..policies import ExpertPolicy, _session_future, make_policy
from ..registration import ENV_IDS, SESSION_ENV_IDS
from ..session_env import JMSRASessionEnv, JMSRASessionVectorEnv
from ..session_experts import DEFAULT_HORIZON, SESSION_EXPERT_NAMES, RoundInputs, SessionExpertPolicy
from ..solvers import EXPERT_NAMES
from ..stale import STALE_AWARE, StaleAwarePolicy
from ..vector import JMSRAVectorEnv
from ..world import WorldProcess

__all__ = [
    "EvaluationError",
    "OPTIMAL_MAX_AGENTS",
    "DEFAULT_ENV_ID",
    "DEFAULT_SESSION_ENV_ID",
    "TRAIN_SEED",
    "SELECTION_SEED",
    "HELD_OUT_SEED",
    "DEFAULT_SEED",
    "Policy",
    "Rounds",
    "PolicyResult",
    "draw_rounds",
    "charge",
    "decide_in_chunks",
    "evaluate_policies",
    "rollout_episodes",
    "evaluate_scenario",
    "is_session",
    "EnvBoundExpert",
    "episodes_future",
    "session_expert",
    "expert_names",
    "resolve_experts",
    "oracle_policy",
    "OptimalSplit",
    "check_policy_fits",
    "scenario_from_env_id",
]

# The exhaustive optimum costs 2^N (P2) solves per round: beyond this N it is refused here.
OPTIMAL_MAX_AGENTS = 12
DEFAULT_ENV_ID = "jmsra_env/JMSRA-v0"
DEFAULT_SESSION_ENV_ID = "jmsra_env/JMSRA-Session-v0"  # the scenario of a session-only sweep (pool)

# Seeds, defined once for training and evaluation (episode e of an evaluation uses SEED + e):
TRAIN_SEED = 0  # train.py's default --seed: its training envs start here
SELECTION_SEED = 10_000  # training's periodic evaluation (model selection, best_model.zip)
HELD_OUT_SEED = 20_000  # held out from both: train.py's final comparison and evaluate.py
DEFAULT_SEED = HELD_OUT_SEED

# Rounds per batched decision (bounds the solvers' working memory).
CHUNK_ROUNDS = 4096


class EvaluationError(ValueError):
    """Bad input to an evaluation (unknown name, unusable model, ...); the message names the problem."""


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(name), list(valid), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def progress_iter(iterable, progress: bool | None, **kwargs):
    """tqdm over ``iterable``: on for True, off for False, on a terminal only for None."""
    if progress is False:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=None if progress is None else False, leave=False, **kwargs)


# ---------------------------------------------------------------------------------------------
# Scenarios


def scenario_from_env_id(env_id: str, overrides: Mapping[str, Any] | None = None) -> tuple[ScenarioConfig, str]:
    """``(config, action_form)`` of a registered environment ID with ``overrides`` applied.

    The scenario is the same for an ID and its ``-Box`` twin; only the action form differs.
    """
    if env_id not in gym.registry or not str(env_id).startswith("jmsra_env/"):
        ids = [*ENV_IDS, *SESSION_ENV_IDS]
        raise EvaluationError(f"unknown environment id {env_id!r}.{did_you_mean(env_id, ids)} Registered: {ids}")
    kwargs = gym.spec(env_id).kwargs
    try:
        cfg = make_config(kwargs.get("base_config") or {})
        if overrides:
            cfg = make_config(cfg, **dict(overrides))
    except ValueError as exc:
        raise EvaluationError(f"bad --config for {env_id}: {exc}") from exc
    return cfg, kwargs.get("action_form", "dict")


# ---------------------------------------------------------------------------------------------
# The policy protocol


@runtime_checkable
class Policy(Protocol):
    """What the evaluation needs of a policy (``reset(config, seed)`` is optional).

    ``decide(obs)`` takes a batch of observations (Dict of ``(M, ...)`` arrays) or one observation
    and returns ``(media, bandwidth_hz)`` of the same leading shape (or an object with ``media`` and
    ``bandwidth_hz`` attributes, such as :class:`jmsra_env.solvers.Decision`). A policy whose
    ``oracle`` attribute is true also gets ``true_terms=`` (the fresh channel: a bound, not a policy).
    """

    label: str
    kind: str

    def decide(self, obs: Mapping[str, np.ndarray]) -> Any: ...


def _decision_arrays(out) -> tuple[np.ndarray, np.ndarray]:
    if hasattr(out, "media") and hasattr(out, "bandwidth_hz"):
        return np.asarray(out.media), np.asarray(out.bandwidth_hz, dtype=np.float64)
    media, bandwidth_hz = out
    return np.asarray(media), np.asarray(bandwidth_hz, dtype=np.float64)


def _decide(policy, obs, true_terms) -> tuple[np.ndarray, np.ndarray]:
    if getattr(policy, "oracle", False):
        return _decision_arrays(policy.decide(obs, true_terms=true_terms))
    return _decision_arrays(policy.decide(obs))


def _reset(policy, cfg: ScenarioConfig, seed: int) -> None:
    reset = getattr(policy, "reset", None)
    if callable(reset):
        reset(cfg, seed)


def is_session(cfg: ScenarioConfig) -> bool:
    """Whether ``cfg`` is a session scenario (the receiver keeps state: evaluated by rollouts)."""
    return bool(cfg.session.enabled)


def expert_names(cfg: ScenarioConfig | None = None) -> tuple[str, ...]:
    """The expert and baseline names of a scenario: :func:`jmsra_env.solvers.solve`'s, or for a
    session scenario the session experts' (:data:`jmsra_env.session_experts.SESSION_EXPERT_NAMES`)."""
    if cfg is not None and is_session(cfg):
        return tuple(SESSION_EXPERT_NAMES)
    return tuple(EXPERT_NAMES)


class EnvBoundExpert:
    """A session expert that reads the evaluated environment: ``clairvoyant``, the lookahead
    rollout handed the true future rounds (kind ``bound``: a bound for causal policies, not one).

    It is bound by :func:`rollout_episodes`, which calls ``bind_env(envs)`` with the vector
    environment of the episodes (after ``reset(config, seed)``, before resetting the environment);
    the true future then comes from the sub-environments' world processes (:func:`episodes_future`).
    Rounds drawn once (:func:`evaluate_policies`) have no environment: it refuses them.
    """

    kind = "bound"

    def __init__(self, name: str, cfg: ScenarioConfig, horizon: int | None = None):
        self.label = self.name = name
        self.config = cfg
        self.horizon = DEFAULT_HORIZON if horizon is None else horizon
        self._policy = None

    def __repr__(self) -> str:
        return f"EnvBoundExpert({self.name!r}, n_agents={self.config.n_agents}, horizon={self.horizon})"

    def reset(self, config: ScenarioConfig, seed: int | None = None) -> None:
        self.config = config
        self._policy = None

    def bind_env(self, envs) -> None:
        self._policy = SessionExpertPolicy(self.name, self.config, "dict", self.horizon, episodes_future(envs))

    def decide(self, obs):
        if self._policy is None:
            raise EvaluationError(
                f"{self.label!r} reads the true future rounds of the evaluated environment: evaluate it "
                "with rollout_episodes / evaluate_scenario (they bind it), not on rounds drawn once"
            )
        return self._policy.decide(obs)


def episodes_future(envs):
    """``future(horizon) -> (rounds, counted)`` over the episodes of a vector environment of
    session environments: the batched :class:`~jmsra_env.session_env.JMSRASessionVectorEnv`, or a
    Gymnasium ``SyncVectorEnv`` of :class:`~jmsra_env.session_env.JMSRASessionEnv` (the sub-envs'
    true futures stacked, row ``e`` = sub-environment ``e``)."""
    subs = getattr(envs, "envs", None)
    if subs is None:
        return _session_future(envs)
    parts = [_session_future(e) for e in subs]

    def future(horizon: int):
        outs = [f(horizon) for f in parts]
        rounds = []
        for h in range(len(outs[0][0])):
            fields = {}
            for name in RoundInputs.__dataclass_fields__:
                values = [getattr(o[0][h], name) for o in outs]
                fields[name] = None if values[0] is None else np.concatenate(values, axis=0)
            rounds.append(RoundInputs(**fields))
        return rounds, np.concatenate([o[1] for o in outs], axis=1)

    return future


def session_expert(name: str, cfg: ScenarioConfig, horizon: int | None = None):
    """A session expert as an evaluation policy (``clairvoyant``: an :class:`EnvBoundExpert`)."""
    if name not in SESSION_EXPERT_NAMES:
        raise EvaluationError(
            f"unknown session expert {name!r}.{did_you_mean(name, SESSION_EXPERT_NAMES)} "
            f"Session experts: {list(SESSION_EXPERT_NAMES)}"
        )
    if name == "clairvoyant":
        return EnvBoundExpert(name, cfg, horizon)
    return make_policy(name, config=cfg, action_form="dict", horizon=horizon)


def resolve_experts(names: Sequence[str] | None, cfg: ScenarioConfig) -> tuple[list, list[str]]:
    """Expert policies for ``names`` (None: every expert and baseline; on a session scenario the
    session experts, :func:`session_expert`) and notes for the user. ``"stale-aware"``
    (:class:`jmsra_env.stale.StaleAwarePolicy`) is evaluated when named, never by default.

    ``optimal`` is refused for ``N > OPTIMAL_MAX_AGENTS`` when asked for by name and skipped with a
    note when it comes from the default list.
    """
    default = expert_names(cfg)
    session = is_session(cfg)
    valid = default if session else (*default, STALE_AWARE)  # opt-in: when named, never by default
    notes: list[str] = []
    explicit = names is not None
    seen: set[str] = set()
    policies = []
    for name in list(default) if names is None else list(names):
        if name not in valid:
            raise EvaluationError(
                f"unknown policy {name!r}.{did_you_mean(name, valid)} Experts and baselines"
                f"{' of a session scenario' if session else ''}: {list(valid)}; trained models are given "
                "with --model PATH"
            )
        if name in seen:
            continue
        seen.add(name)
        if session:
            policies.append(session_expert(name, cfg))
            continue
        if name == STALE_AWARE:
            policies.append(StaleAwarePolicy(cfg))
            continue
        if name == "optimal" and cfg.n_agents > OPTIMAL_MAX_AGENTS:
            msg = (
                f"'optimal' (exhaustive search over 2^N media vectors) is limited to N <= "
                f"{OPTIMAL_MAX_AGENTS}; this scenario has N = {cfg.n_agents}"
            )
            if explicit:
                raise EvaluationError(msg + "; drop it (JMSRA becomes the reference)")
            notes.append(msg + ": skipped, gaps are to JMSRA")
            continue
        policies.append(ExpertPolicy(name, cfg))
    return policies, notes


def oracle_policy(cfg: ScenarioConfig):
    """The optimum (JMSRA above ``OPTIMAL_MAX_AGENTS``) deciding on the true, fresh channel."""
    return ExpertPolicy("optimal" if cfg.n_agents <= OPTIMAL_MAX_AGENTS else "jmsra", cfg, oracle=True)


class OptimalSplit:
    """A policy's media with the split that is optimal for them on the round it observes.

    The (P2) split (:func:`jmsra_env.bandwidth.optimal_bandwidth`) on the terms the observation
    gives (causal: the stale channel under ``csi_delay > 0``; a session round's own terms). Next to
    the policy's own row it separates what its media cost from what its split costs; with any
    split the media alone decide a session's receivers, so both rows roll the same episodes.
    Labelled ``<label>+split``.
    """

    def __init__(self, policy, config: ScenarioConfig | None = None):
        self.policy = policy
        self.label = f"{policy.label}+split"
        self.kind = getattr(policy, "kind", "expert")
        self.config = getattr(policy, "config", None) or config
        self.env_id = getattr(policy, "env_id", None)
        self.notes = list(getattr(policy, "notes", []))
        self._consts = None if self.config is None else model.model_constants(self.config)

    def reset(self, config: ScenarioConfig, seed: int | None = None) -> None:
        if hasattr(self.policy, "reset"):
            self.policy.reset(config, seed)
        self._consts = model.model_constants(config)

    def decide(self, obs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        if self._consts is None:
            raise RuntimeError("OptimalSplit needs the scenario: pass config= or call reset(config)")
        media, _ = _decision_arrays(self.policy.decide(obs))
        bandwidth_hz, _ = optimal_bandwidth(model.terms_from_observation(self._consts, obs), media)
        return media, bandwidth_hz


def _config_differences(a: ScenarioConfig, b: ScenarioConfig) -> list[str]:
    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{k}."))
            else:
                out[prefix + k] = v
        return out

    fa, fb = flat(a.to_dict()), flat(b.to_dict())
    return [f"{k}={fb[k]!r} (evaluated: {fa[k]!r})" for k in sorted(fa) if fa[k] != fb.get(k)]


def check_policy_fits(policy, cfg: ScenarioConfig, *, env_id: str | None = None) -> None:
    """Refuse a policy made for another ``N`` than the scenario ``cfg``; note other differences.

    The check is on the scenario (``policy.config``), never on the action form: a model trained on
    an ID's ``-Box`` twin is evaluated on that ID's scenario. Differences other than ``N``
    (bandwidth, loads, ...) are allowed and listed in ``policy.notes``.
    """
    pcfg = getattr(policy, "config", None)
    if not isinstance(pcfg, ScenarioConfig):
        return
    path = getattr(policy, "path", policy.label)
    trained_id = getattr(policy, "env_id", None) or "?"
    where = f" ({env_id})" if env_id else ""
    if pcfg.n_agents != cfg.n_agents:
        raise EvaluationError(
            f"model {path!r} was trained for N = {pcfg.n_agents} agents ({trained_id}) but the "
            f"evaluation scenario{where} has N = {cfg.n_agents}"
        )
    diffs = _config_differences(cfg, pcfg)
    notes = getattr(policy, "notes", None)
    if diffs and notes is not None:
        note = f"{policy.label} was trained on another scenario: " + ", ".join(diffs)
        if note not in notes:
            notes.append(note)


# ---------------------------------------------------------------------------------------------
# Rounds drawn once


@dataclass(frozen=True)
class Rounds:
    """The recorded rounds of an evaluation, flattened episode-major: round ``m = e * T + t``."""

    config: ScenarioConfig
    seed: int
    episodes: int
    rounds_per_episode: int
    obs: dict[str, np.ndarray]  # what the policies see, each (M, ...)
    terms: model.RoundTerms  # the true terms the environment charges, (M, N)

    @property
    def n_rounds(self) -> int:
        return self.episodes * self.rounds_per_episode

    def observed_terms(self) -> model.RoundTerms:
        """The terms a policy computes from the observation (stale channel with ``csi_delay``)."""
        return model.terms_from_observation(model.model_constants(self.config), self.obs)

    def per_episode(self, values: np.ndarray) -> np.ndarray:
        """``(M, ...)`` per-round values as ``(E, T, ...)``."""
        return values.reshape(self.episodes, self.rounds_per_episode, *values.shape[1:])


def _check_episodes_seed(episodes, seed) -> None:
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise EvaluationError(f"episodes must be an integer >= 1; got {episodes!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise EvaluationError(f"seed must be an integer >= 0; got {seed!r}")


def draw_rounds(cfg: ScenarioConfig, episodes: int, seed: int, *, progress: bool | None = False) -> Rounds:
    """Draw ``episodes`` episodes; episode ``e`` is the one ``env.reset(seed=seed + e)`` starts."""
    _check_episodes_seed(episodes, seed)
    n_rounds = cfg.episode_rounds
    world = WorldProcess(cfg, 1)
    obs_parts: dict[str, list[np.ndarray]] = {}
    term_parts: list[model.RoundTerms] = []
    for e in progress_iter(range(episodes), progress, desc="drawing episodes", unit="ep"):
        # What JMSRAEnv.reset(seed=seed + e) and its steps do with self.np_random.
        rng, _ = seeding.np_random(seed + e)
        world.reset(rng)
        for t in range(n_rounds):
            for key, value in world.observation().items():
                obs_parts.setdefault(key, []).append(value)
            term_parts.append(world.true_terms())
            if t + 1 < n_rounds:
                world.step(rng)
    obs = {k: np.concatenate(v, axis=0) for k, v in obs_parts.items()}
    return Rounds(cfg, seed, episodes, n_rounds, obs, model.concat_terms(term_parts))


# ---------------------------------------------------------------------------------------------
# Charging


def charge(terms: model.RoundTerms, media, bandwidth_hz) -> model.LatencyBreakdown:
    """The environment's charge for a decision: :func:`jmsra_env.model.latency` of the decision as
    the environment decodes it from a Dict action (:func:`jmsra_env.actions.encode_dict`), so the
    rounds-drawn-once path and a rollout in the environment give the same latency bit for bit."""
    media = np.asarray(media)
    batch = media.shape[:-1]
    bandwidth = float(np.asarray(terms.bandwidth_hz).reshape(-1)[0])
    decoded = actions.decode_dict(actions.encode_dict(media, bandwidth_hz), media.shape[-1], bandwidth, batch)
    return model.latency(terms, *decoded)


@dataclass(frozen=True)
class PolicyResult:
    """Per-round outcome of one policy, flattened episode-major (``(M, ...)``, ``M = E * T``)."""

    label: str
    kind: str
    episodes: int
    latency_s: np.ndarray  # charged (capped) latency (M,)
    capped: np.ndarray  # (M,)
    media: np.ndarray  # (M, N)
    decision_s_per_round: float = float("nan")  # wall time of the decisions / M
    single_round_s: float | None = None  # wall time of one un-batched decision
    info: dict[str, np.ndarray] = field(default_factory=dict)  # other per-round info (rollouts)
    session: bool = False  # rolled on a session scenario (config.session.enabled): info has its keys

    @property
    def rounds_per_episode(self) -> int:
        return self.latency_s.size // self.episodes


def decide_in_chunks(policy, rounds: Rounds) -> tuple[np.ndarray, np.ndarray]:
    """A policy's decisions on every recorded round, in batched calls of ``CHUNK_ROUNDS``."""
    media, bandwidth = [], []
    for lo in range(0, rounds.n_rounds, CHUNK_ROUNDS):
        sl = slice(lo, lo + CHUNK_ROUNDS)
        m, b = _decide(policy, {k: v[sl] for k, v in rounds.obs.items()}, rounds.terms[sl])
        media.append(m)
        bandwidth.append(b)
    return np.concatenate(media), np.concatenate(bandwidth)


def _time_single(policy, rounds: Rounds, budget_s: float, max_rounds: int = 32) -> float | None:
    """Mean wall time of one un-batched decision (as a policy in the environment takes it)."""
    spent, done = 0.0, 0
    while done < min(max_rounds, rounds.n_rounds) and (done == 0 or spent < budget_s):
        obs = {k: v[done] for k, v in rounds.obs.items()}
        t0 = time.perf_counter()
        _decide(policy, obs, rounds.terms[done])
        spent += time.perf_counter() - t0
        done += 1
    return spent / done if done else None


def evaluate_policies(
    rounds: Rounds,
    policies: Sequence,
    *,
    progress: bool | None = False,
    single_round_budget_s: float = 0.25,
) -> list[PolicyResult]:
    """Charge every policy on ``rounds``; the latency is the environment's reward, negated."""
    labels = [p.label for p in policies]
    if len(set(labels)) != len(labels):
        raise EvaluationError(f"policy labels must be unique; got {labels}")
    results = []
    for policy in progress_iter(policies, progress, desc="policies", unit="policy"):
        _reset(policy, rounds.config, rounds.seed)
        t0 = time.perf_counter()
        media, bandwidth_hz = decide_in_chunks(policy, rounds)
        per_round = (time.perf_counter() - t0) / rounds.n_rounds
        single = _time_single(policy, rounds, single_round_budget_s) if single_round_budget_s > 0 else None
        br = charge(rounds.terms, media, bandwidth_hz)
        results.append(
            PolicyResult(
                policy.label, policy.kind, rounds.episodes,
                np.asarray(br.latency_s, dtype=np.float64), np.asarray(br.capped, dtype=bool),
                np.asarray(br.media), per_round, single,
            )
        )
    return results


# ---------------------------------------------------------------------------------------------
# Whole episodes in a vector environment

_ROLLOUT_KEYS = ("latency_s", "capped", "media")


def _episode_envs(cfg: ScenarioConfig, episodes: int, vectorization: str):
    """One sub-environment per episode, of the scenario's kind (session or single round)."""
    Env, VectorEnv = (JMSRASessionEnv, JMSRASessionVectorEnv) if is_session(cfg) else (JMSRAEnv, JMSRAVectorEnv)
    if vectorization == "sync":
        return gym.vector.SyncVectorEnv([lambda: Env(cfg, action_form="dict")] * episodes)
    if vectorization == "vector":
        return VectorEnv(episodes, cfg, action_form="dict")
    raise EvaluationError(f"vectorization must be 'sync' or 'vector'; got {vectorization!r}")


def _current_terms(envs) -> model.RoundTerms:
    if hasattr(envs, "current_terms"):
        return envs.current_terms()
    return model.concat_terms([t[None] for t in envs.call("current_terms")])


def rollout_episodes(
    scenario: ScenarioConfig | str,
    policy,
    episodes: int,
    seed: int,
    *,
    vectorization: str = "sync",
    overrides: Mapping[str, Any] | None = None,
) -> PolicyResult:
    """Roll ``episodes`` whole episodes of a scenario (a config or a registered ID) with ``policy``.

    One vector environment holds one sub-environment per episode; every step the policy decides on
    the batch of observations, the decision is sent as a Dict action, and each round's latency,
    capped flag, media and every other per-round info field (``result.info``, e.g. a session's
    ``evictions`` and ``kv_pool_used_fraction``) are collected, flattened episode-major like
    :func:`draw_rounds`. The environment is the scenario's: :class:`~jmsra_env.env.JMSRAEnv`, or
    for a session scenario :class:`~jmsra_env.session_env.JMSRASessionEnv` (the receiver's memory
    links the rounds). The policy decides on the whole batch of episodes at once every round (a
    batched expert such as the session ``lookahead`` makes one call per round). A policy with a
    ``bind_env`` method gets the vector environment first (:class:`EnvBoundExpert`).

    ``vectorization="sync"`` (default): Gymnasium's ``SyncVectorEnv`` of the scenario's environment;
    its ``reset(seed=seed)`` starts sub-environment ``e`` with ``seed + e``, so episode ``e`` is the
    one ``env.reset(seed=seed + e)`` starts (those of :func:`draw_rounds` for a single-round
    scenario), the same for every policy: the same exogenous rounds.
    ``vectorization="vector"``: the batched :class:`~jmsra_env.vector.JMSRAVectorEnv` (or
    :class:`~jmsra_env.session_env.JMSRASessionVectorEnv`), one generator for the batch (fastest;
    the same seed still gives every policy the same rounds, but for more than one episode they are
    other episodes than ``env.reset(seed=seed + e)``'s).
    """
    _check_episodes_seed(episodes, seed)
    cfg = scenario_from_env_id(scenario, overrides)[0] if isinstance(scenario, str) else scenario
    if isinstance(scenario, ScenarioConfig) and overrides:
        cfg = make_config(cfg, **dict(overrides))
    envs = _episode_envs(cfg, episodes, vectorization)
    _reset(policy, cfg, seed)
    bind = getattr(policy, "bind_env", None)
    if callable(bind):
        bind(envs)
    oracle = getattr(policy, "oracle", False)
    steps: dict[str, list[np.ndarray]] = {}
    spent = 0.0
    try:
        obs, _ = envs.reset(seed=seed)
        for _ in range(cfg.episode_rounds):
            true_terms = _current_terms(envs) if oracle else None
            t0 = time.perf_counter()
            media, bandwidth_hz = _decide(policy, obs, true_terms)
            spent += time.perf_counter() - t0
            obs, _, _, _, info = envs.step(actions.encode_dict(media, bandwidth_hz))
            for key, value in info.items():
                if not key.startswith("_") and key not in ("final_obs", "final_info", "round"):
                    steps.setdefault(key, []).append(np.asarray(value))
    finally:
        envs.close()
    # (T, E, ...) -> episode-major (E * T, ...)
    per_round = {k: np.swapaxes(np.stack(v), 0, 1).reshape(-1, *v[0].shape[1:]) for k, v in steps.items()}
    n = episodes * cfg.episode_rounds
    return PolicyResult(
        policy.label, policy.kind, episodes,
        per_round["latency_s"].astype(np.float64), per_round["capped"].astype(bool),
        per_round["media"].astype(np.int8), spent / n, None,
        {k: v for k, v in per_round.items() if k not in _ROLLOUT_KEYS}, bool(cfg.session.enabled),
    )


def evaluate_scenario(
    cfg: ScenarioConfig,
    policies: Sequence,
    episodes: int,
    seed: int,
    *,
    progress: bool | None = False,
    single_round_budget_s: float = 0.25,
    vectorization: str = "sync",
) -> list[PolicyResult]:
    """Every policy on the same ``episodes`` episodes of ``cfg`` from ``seed``.

    A session scenario (:func:`is_session`) is rolled (:func:`rollout_episodes`, one rollout per
    policy on the same exogenous rounds, each policy with its own receivers); any other is drawn
    once and charged (:func:`draw_rounds`, :func:`evaluate_policies`; ``vectorization`` is not
    used). ``single_round_budget_s`` times one un-batched decision on drawn rounds only.
    """
    labels = [p.label for p in policies]
    if len(set(labels)) != len(labels):
        raise EvaluationError(f"policy labels must be unique; got {labels}")
    if not is_session(cfg):
        rounds = draw_rounds(cfg, episodes, seed, progress=progress)
        return evaluate_policies(rounds, policies, progress=progress, single_round_budget_s=single_round_budget_s)
    return [
        rollout_episodes(cfg, p, episodes, seed, vectorization=vectorization)
        for p in progress_iter(policies, progress, desc="policies (whole episodes)", unit="policy")
    ]
