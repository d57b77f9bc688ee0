"""Side-by-side evaluation of policies on common random rounds, and regime sweeps.

**Common random numbers.** A decision never changes the future rounds (the world process does not
depend on actions), so the rounds of an evaluation are drawn once and every policy is charged on the
very same rounds. Episode ``e`` is drawn exactly as ``env.reset(seed=seed + e)`` followed by
``episode_rounds`` steps would draw it (same generator, same calls), so any episode of an evaluation
can be replayed in the environment. For each round we record the observation (what a policy sees;
with ``csi_delay > 0`` its SNR is stale) and the *true* model terms (what the environment charges).
Each policy then decides on all recorded observations in one batched call and its latency is
:func:`jmsra_env.model.latency` on the true terms, exactly the environment's reward (a test checks
that equality against stepping the real environment).

**Policies.** Experts and baselines by name (:mod:`jmsra_env.solvers`: ``optimal``, ``jmsra``,
``nl-only``, ``kv-only``, ``nl-only-equal``, ``kv-only-equal``, ``threshold-equal``, ``random``) decide
on the terms computed from the observation; trained PPO models (``agents.checkpoint``) predict on the
raw observations and their actions are decoded by the environment's own decoder.

**Statistics.** The 95 % confidence interval of a mean is a Student t interval over the per-episode
means (episodes are independent; rounds within an episode are not). The gap to the reference
(the optimum, else JMSRA) is ``mean / mean_ref - 1`` with a paired t interval over the per-episode
differences (common random numbers make it tight). p50 and p95 pool all rounds.
"""

from __future__ import annotations

import difflib
import math
import os
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import actions, model
from .config import LLM_CATALOG, ScenarioConfig, make_config
from .world import WorldProcess

__all__ = [
    "EvaluationError",
    "OPTIMAL_MAX_AGENTS",
    "DEFAULT_ENV_ID",
    "DEFAULT_SEED",
    "SUMMARY_COLUMNS",
    "TIMING_COLUMNS",
    "SWEEP_COLUMNS",
    "Rounds",
    "draw_rounds",
    "SolverPolicy",
    "ModelPolicy",
    "PolicyResult",
    "expert_names",
    "resolve_experts",
    "oracle_policy",
    "load_model_policy",
    "check_model_fits",
    "check_sweep_policies",
    "format_sweep_value",
    "reference_label",
    "scenario_from_env_id",
    "evaluate_policies",
    "summarise",
    "timing_rows",
    "Sweep",
    "SWEEPS",
    "get_sweep",
    "parse_sweep_values",
    "sweep_configs",
    "run_sweep",
    "sweep_findings",
]

# The exhaustive optimum costs 2^N (P2) solves per round: beyond this N it is refused here.
OPTIMAL_MAX_AGENTS = 12
DEFAULT_ENV_ID = "jmsra_env/JMSRA-v0"
# Evaluation episodes start here: held out from training (train.py seeds its envs from 0) and from
# model selection (seeds 10000..); train.py's final held-out comparison uses these seeds too.
DEFAULT_SEED = 20_000
# Experts the paper compares; the rest are baselines.
_EXPERTS = ("optimal", "jmsra")
# Rounds per batched solver call (bounds the solvers' working memory).
_CHUNK_ROUNDS = 4096


class EvaluationError(ValueError):
    """Bad input to an evaluation (unknown name, unusable model, ...); the message names the problem."""


def _did_you_mean(name: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(name), list(valid), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


# ---------------------------------------------------------------------------------------------
# Scenarios


def scenario_from_env_id(env_id: str, overrides: Mapping[str, Any] | None = None) -> tuple[ScenarioConfig, str]:
    """``(config, action_form)`` of a registered environment ID with ``overrides`` applied."""
    import gymnasium as gym

    from .registration import ENV_IDS

    if env_id not in gym.registry or not str(env_id).startswith("jmsra_env/"):
        raise EvaluationError(
            f"unknown environment id {env_id!r}.{_did_you_mean(env_id, ENV_IDS)} Registered: {list(ENV_IDS)}"
        )
    kwargs = gym.spec(env_id).kwargs
    try:
        cfg = make_config(kwargs.get("base_config") or {})
        if overrides:
            cfg = make_config(cfg, **dict(overrides))
    except ValueError as exc:
        raise EvaluationError(f"bad --config for {env_id}: {exc}") from exc
    return cfg, kwargs.get("action_form", "dict")


# ---------------------------------------------------------------------------------------------
# Rounds


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


def draw_rounds(cfg: ScenarioConfig, episodes: int, seed: int, *, progress: bool | None = False) -> Rounds:
    """Draw ``episodes`` episodes; episode ``e`` is the one ``env.reset(seed=seed + e)`` starts."""
    from gymnasium.utils import seeding

    if not isinstance(episodes, int) or episodes < 1:
        raise EvaluationError(f"episodes must be an integer >= 1; got {episodes!r}")
    if not isinstance(seed, int) or seed < 0:
        raise EvaluationError(f"seed must be an integer >= 0; got {seed!r}")
    consts = model.model_constants(cfg)
    n_rounds = cfg.episode_rounds
    world = WorldProcess(cfg, 1)
    obs_parts: dict[str, list[np.ndarray]] = {}
    term_parts: list[model.RoundTerms] = []
    for e in _progress(range(episodes), progress, desc="drawing episodes", unit="ep"):
        # What JMSRAEnv.reset(seed=seed + e) and its steps do with self.np_random.
        rng, _ = seeding.np_random(seed + e)
        world.reset(rng)
        for t in range(n_rounds):
            for key, value in world.observation().items():
                obs_parts.setdefault(key, []).append(value)
            term_parts.append(world.true_terms(consts))
            if t + 1 < n_rounds:
                world.step(rng)
    obs = {k: np.concatenate(v, axis=0) for k, v in obs_parts.items()}
    return Rounds(cfg, seed, episodes, n_rounds, obs, model.concat_terms(term_parts))


def _progress(iterable, progress: bool | None, **kwargs):
    """tqdm over ``iterable``: on for True, off for False, on a terminal only for None."""
    if progress is False:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=None if progress is None else False, leave=False, **kwargs)


# ---------------------------------------------------------------------------------------------
# Policies


def expert_names() -> tuple[str, ...]:
    """The expert and baseline names :func:`jmsra_env.solvers.solve` accepts."""
    from .solvers import EXPERT_NAMES

    return tuple(EXPERT_NAMES)


def _policy_rng(seed: int, label: str) -> np.random.Generator:
    # Per policy, so that a random policy's draws do not depend on which other policies run.
    return np.random.default_rng([seed, zlib.crc32(label.encode())])


@dataclass
class SolverPolicy:
    """An expert or baseline of :mod:`jmsra_env.solvers`, deciding on the observed terms.

    With ``oracle=True`` it decides on the *true* terms instead (perfect, fresh channel knowledge):
    a lower bound no policy that sees the observation can reach when ``csi_delay > 0``; with
    ``csi_delay = 0`` it decides exactly as the plain expert.
    """

    name: str
    oracle: bool = False

    @property
    def label(self) -> str:
        return "oracle" if self.oracle else self.name

    @property
    def kind(self) -> str:
        if self.oracle:
            return "bound"
        return "expert" if self.name in _EXPERTS else "baseline"

    def decide(self, rounds: Rounds) -> tuple[np.ndarray, np.ndarray]:
        """Media and bandwidth (Hz) for every round, ``(M, N)`` each, in batched solver calls."""
        from .solvers import solve

        terms = rounds.terms if self.oracle else rounds.observed_terms()
        rng = _policy_rng(rounds.seed, self.label)
        media, bandwidth = [], []
        for lo in range(0, rounds.n_rounds, _CHUNK_ROUNDS):
            d = solve(self.name, terms[lo : lo + _CHUNK_ROUNDS], rng=rng)
            media.append(np.asarray(d.media))
            bandwidth.append(np.asarray(d.bandwidth_hz, dtype=np.float64))
        return np.concatenate(media), np.concatenate(bandwidth)

    def decide_one(self, rounds: Rounds, m: int, rng: np.random.Generator) -> None:
        """One un-batched decision on round ``m``, from its observation (as a policy in the env)."""
        from .solvers import solve

        obs = {k: v[m] for k, v in rounds.obs.items()}
        solve(self.name, model.terms_from_observation(model.model_constants(rounds.config), obs), rng=rng)


@dataclass
class ModelPolicy:
    """A trained model (``agents.checkpoint.TrainedPolicy``) predicting on the raw observations."""

    label: str
    path: str
    trained: Any
    notes: list[str] = field(default_factory=list)
    kind: str = "ppo"

    @property
    def n_agents(self) -> int:
        return int(self.trained.config.n_agents)

    def _decode(self, action, cfg: ScenarioConfig, batch: tuple[int, ...], obs):
        consts = model.model_constants(cfg)
        form = getattr(self.trained, "action_form", "box")
        if form == "box":
            return actions.decode_box(action, model.terms_from_observation(consts, obs), batch)
        return actions.decode_dict(action, cfg.n_agents, consts.bandwidth_hz, batch)

    def decide(self, rounds: Rounds) -> tuple[np.ndarray, np.ndarray]:
        media, bandwidth = [], []
        for lo in range(0, rounds.n_rounds, _CHUNK_ROUNDS):
            obs = {k: v[lo : lo + _CHUNK_ROUNDS] for k, v in rounds.obs.items()}
            action, _ = self.trained.predict(obs, deterministic=True)
            batch = (next(iter(obs.values())).shape[0],)
            m, b = self._decode(action, rounds.config, batch, obs)
            media.append(m)
            bandwidth.append(b)
        return np.concatenate(media), np.concatenate(bandwidth)

    def decide_one(self, rounds: Rounds, m: int, rng: np.random.Generator) -> None:
        obs = {k: v[m] for k, v in rounds.obs.items()}
        action, _ = self.trained.predict(obs, deterministic=True)
        self._decode(action, rounds.config, (), obs)


def resolve_experts(
    names: Sequence[str] | None, cfg: ScenarioConfig
) -> tuple[list[SolverPolicy], list[str]]:
    """Expert policies for ``names`` (None: every expert and baseline) and notes for the user.

    ``optimal`` is refused for ``N > OPTIMAL_MAX_AGENTS`` when asked for by name and skipped with a
    note when it comes from the default list.
    """
    valid = expert_names()
    notes: list[str] = []
    explicit = names is not None
    chosen = list(valid) if names is None else list(names)
    seen: set[str] = set()
    policies = []
    for name in chosen:
        if name not in valid:
            raise EvaluationError(
                f"unknown policy {name!r}.{_did_you_mean(name, valid)} Experts and baselines: "
                f"{list(valid)}; trained models are given with --model PATH"
            )
        if name in seen:
            continue
        seen.add(name)
        if name == "optimal" and cfg.n_agents > OPTIMAL_MAX_AGENTS:
            msg = (
                f"'optimal' (exhaustive search over 2^N media vectors) is limited to N <= "
                f"{OPTIMAL_MAX_AGENTS}; this scenario has N = {cfg.n_agents}"
            )
            if explicit:
                raise EvaluationError(msg + "; drop it (JMSRA becomes the reference)")
            notes.append(msg + ": skipped, gaps are to JMSRA")
            continue
        policies.append(SolverPolicy(name))
    return policies, notes


def oracle_policy(cfg: ScenarioConfig) -> SolverPolicy:
    """The optimum (JMSRA above ``OPTIMAL_MAX_AGENTS``) deciding on the true, fresh channel."""
    return SolverPolicy("optimal" if cfg.n_agents <= OPTIMAL_MAX_AGENTS else "jmsra", oracle=True)


def _model_label(path: Path) -> str:
    p = path.resolve()
    if p.is_dir():
        return f"ppo:{p.name}"
    stem = p.name[: -len(".zip")] if p.name.endswith(".zip") else p.name
    parent = p.parent.name
    return f"ppo:{parent}" if stem == "model" else f"ppo:{parent}/{stem}"


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


def _model_action_space_shape(trained) -> tuple[int, ...] | None:
    for holder in (trained, getattr(trained, "model", None)):
        space = getattr(holder, "action_space", None)
        shape = getattr(space, "shape", None)
        if shape is not None:
            return tuple(shape)
    return None


def load_model_policy(
    path: str | os.PathLike, *, label: str | None = None, device: str = "cpu"
) -> ModelPolicy:
    """Load a trained model (run dir, model.zip or checkpoint dir) through ``agents.checkpoint``.

    Check that it fits the evaluated scenario with :func:`check_model_fits`.
    """
    p = Path(path)
    if not p.exists():
        raise EvaluationError(f"model path {str(path)!r} does not exist")
    try:
        from agents.checkpoint import load_trained_policy
    except ImportError as exc:  # pragma: no cover - depends on the training package being present
        raise EvaluationError(
            f"cannot load model {str(path)!r}: the training package (agents.checkpoint) is not importable ({exc})"
        ) from exc
    try:
        trained = load_trained_policy(p, device=device)
    except Exception as exc:  # noqa: BLE001 - any failure to load is reported with the path
        raise EvaluationError(f"cannot load model {str(path)!r}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(getattr(trained, "config", None), ScenarioConfig):
        raise EvaluationError(
            f"model {str(path)!r} carries no scenario config (run.json); cannot check that it fits"
        )
    return ModelPolicy(label or _model_label(p), str(path), trained)


def check_model_fits(
    policy: ModelPolicy,
    cfg: ScenarioConfig,
    *,
    env_id: str | None = None,
    env_action_form: str | None = None,
) -> None:
    """Refuse a model trained for another ``N`` (or, when ``env_action_form`` is given, action form).

    Other differences from ``cfg`` (bandwidth, loads...) are allowed and listed in ``policy.notes``.
    """
    trained, path = policy.trained, policy.path
    tcfg: ScenarioConfig = trained.config
    trained_id = getattr(trained, "env_id", "?")
    where = f" ({env_id})" if env_id else ""
    if tcfg.n_agents != cfg.n_agents:
        raise EvaluationError(
            f"model {path!r} was trained for N = {tcfg.n_agents} agents ({trained_id}) but the "
            f"evaluation scenario{where} has N = {cfg.n_agents}"
        )
    form = getattr(trained, "action_form", None)
    if form not in ("box", "dict"):
        raise EvaluationError(f"model {path!r} has an unknown action form {form!r} (expected 'box' or 'dict')")
    if env_action_form is not None and form != env_action_form:
        raise EvaluationError(
            f"model {path!r} was trained for the {form!r} action form ({trained_id}) but --env-id "
            f"{env_id} uses the {env_action_form!r} form"
        )
    shape = _model_action_space_shape(trained)
    if form == "box" and shape is not None and shape != (2 * cfg.n_agents,):
        raise EvaluationError(
            f"model {path!r} has action space shape {shape}, not the 'box' action form "
            f"{(2 * cfg.n_agents,)} of N = {cfg.n_agents} agents"
        )
    diffs = _config_differences(cfg, tcfg)
    if diffs:
        note = f"{policy.label} was trained on another scenario: " + ", ".join(diffs)
        if note not in policy.notes:
            policy.notes.append(note)


# ---------------------------------------------------------------------------------------------
# Evaluation


@dataclass(frozen=True)
class PolicyResult:
    """Per-round outcome of one policy on the evaluation's rounds (flattened, ``(M, ...)``)."""

    label: str
    kind: str
    latency_s: np.ndarray  # charged (capped) latency (M,)
    capped: np.ndarray  # (M,)
    media: np.ndarray  # (M, N)
    decision_s_per_round: float  # wall time of the batched decision / M
    single_round_s: float | None  # wall time of one un-batched decision (mean over a few rounds)


def _time_single(policy, rounds: Rounds, budget_s: float, max_rounds: int = 32) -> float | None:
    rng = np.random.default_rng(0)  # not the evaluation's stream
    spent, done = 0.0, 0
    while done < min(max_rounds, rounds.n_rounds) and (done == 0 or spent < budget_s):
        t0 = time.perf_counter()
        policy.decide_one(rounds, done, rng)
        spent += time.perf_counter() - t0
        done += 1
    return spent / done if done else None


def evaluate_policies(
    rounds: Rounds,
    policies: Sequence[SolverPolicy | ModelPolicy],
    *,
    progress: bool | None = False,
    single_round_budget_s: float = 0.25,
) -> list[PolicyResult]:
    """Charge every policy on ``rounds``; the latency is the environment's reward, negated."""
    labels = [p.label for p in policies]
    if len(set(labels)) != len(labels):
        raise EvaluationError(f"policy labels must be unique; got {labels}")
    results = []
    for policy in _progress(policies, progress, desc="policies", unit="policy"):
        t0 = time.perf_counter()
        media, bandwidth_hz = policy.decide(rounds)
        per_round = (time.perf_counter() - t0) / rounds.n_rounds
        single = _time_single(policy, rounds, single_round_budget_s) if single_round_budget_s > 0 else None
        br = model.latency(rounds.terms, media, bandwidth_hz)
        results.append(
            PolicyResult(
                policy.label,
                policy.kind,
                np.asarray(br.latency_s, dtype=np.float64),
                np.asarray(br.capped, dtype=bool),
                np.asarray(media),
                per_round,
                single,
            )
        )
    return results


SUMMARY_COLUMNS = (
    "policy",
    "kind",
    "episodes",
    "rounds",
    "mean_latency_s",
    "ci95_s",
    "ci95_low_s",
    "ci95_high_s",
    "p50_latency_s",
    "p95_latency_s",
    "reference",
    "gap_pct",
    "gap_ci95_pct",
    "kv_share",
    "capped_rate",
)
TIMING_COLUMNS = ("policy", "decision_ms_per_round", "single_round_decision_ms")


def _t_halfwidth(samples: np.ndarray) -> float:
    """Half-width of the 95 % Student t interval of the mean of ``samples`` (nan for fewer than 2)."""
    from scipy import stats

    k = samples.size
    if k < 2:
        return float("nan")
    sd = float(np.std(samples, ddof=1))
    return float(stats.t.ppf(0.975, k - 1)) * sd / math.sqrt(k)


def reference_label(results: Sequence[PolicyResult]) -> str | None:
    """The gap reference: the optimum when evaluated, else JMSRA, else none."""
    labels = {r.label for r in results}
    for ref in _EXPERTS:
        if ref in labels:
            return ref
    return None


def summarise(rounds: Rounds, results: Sequence[PolicyResult]) -> list[dict[str, Any]]:
    """One summary row per policy (columns :data:`SUMMARY_COLUMNS`)."""
    ref = reference_label(results)
    ref_ep = None
    if ref is not None:
        ref_ep = rounds.per_episode(next(r for r in results if r.label == ref).latency_s).mean(axis=1)
    rows = []
    for r in results:
        ep = rounds.per_episode(r.latency_s).mean(axis=1)
        mean = float(r.latency_s.mean())
        hw = _t_halfwidth(ep)
        gap = gap_hw = float("nan")
        if ref_ep is not None:
            ref_mean = float(ref_ep.mean())
            diff = ep - ref_ep  # paired: common random numbers
            gap = 100.0 * float(diff.mean()) / ref_mean
            gap_hw = 100.0 * _t_halfwidth(diff) / ref_mean
        rows.append(
            {
                "policy": r.label,
                "kind": r.kind,
                "episodes": rounds.episodes,
                "rounds": rounds.n_rounds,
                "mean_latency_s": mean,
                "ci95_s": hw,
                "ci95_low_s": mean - hw,
                "ci95_high_s": mean + hw,
                "p50_latency_s": float(np.percentile(r.latency_s, 50)),
                "p95_latency_s": float(np.percentile(r.latency_s, 95)),
                "reference": ref or "",
                "gap_pct": gap,
                "gap_ci95_pct": gap_hw,
                "kv_share": float(np.mean(r.media)),
                "capped_rate": float(np.mean(r.capped)),
            }
        )
    return rows


def timing_rows(results: Sequence[PolicyResult]) -> list[dict[str, Any]]:
    """Decision time per round (batched call / rounds) and of a single un-batched decision, in ms."""
    return [
        {
            "policy": r.label,
            "decision_ms_per_round": 1e3 * r.decision_s_per_round,
            "single_round_decision_ms": float("nan") if r.single_round_s is None else 1e3 * r.single_round_s,
        }
        for r in results
    ]


# ---------------------------------------------------------------------------------------------
# Sweeps


@dataclass(frozen=True)
class Sweep:
    """A scenario parameter to sweep: its default values and the config overrides of one value."""

    name: str
    parameter: str  # axis label, with unit
    values: tuple[Any, ...]
    overrides: Callable[[Any], dict[str, Any]]
    parse: Callable[[str], Any] = float
    log_x: bool = False
    categorical: bool = False
    description: str = ""


def _distance(d: float) -> dict[str, Any]:
    return {"distance_min_m": float(d), "distance_max_m": float(d)}


SWEEPS: dict[str, Sweep] = {
    s.name: s
    for s in (
        Sweep(
            "bandwidth", "total bandwidth B (MHz)", (1e6, 2e6, 5e6, 10e6, 20e6, 50e6, 100e6),
            lambda v: {"bandwidth_hz": float(v)}, log_x=True,
            description="channel.bandwidth_hz (--sweep-values in Hz)",
        ),
        Sweep(
            "load", "maximum background load u_max", (0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95),
            lambda v: {"load_max": float(v)},
            description="workload.load_max: loads start U[0, u_max] and walk in [0, u_max]",
        ),
        Sweep(
            "distance", "agent distance d (m)", (20.0, 50.0, 100.0, 150.0, 250.0, 400.0, 600.0),
            _distance, log_x=True,
            description="channel.distance_min_m = distance_max_m = d: every agent at distance d",
        ),
        Sweep(
            "agents", "agents N", (1, 2, 3, 4, 6, 8, 12, 16),
            lambda v: {"n_agents": int(v)}, parse=int,
            description="n_agents (the optimum only where N <= 12)",
        ),
        Sweep(
            "kv-bits", "KV cache precision q_bits", (2, 4, 8, 16),
            lambda v: {"kv_bits": int(v)}, parse=int, log_x=True,
            description="workload.kv_bits",
        ),
        Sweep(
            "model", "LLM", tuple(LLM_CATALOG),
            lambda v: {"llm": str(v)}, parse=str, categorical=True,
            description="workload.llm over the LLM catalog",
        ),
    )
}

SWEEP_COLUMNS = (
    "sweep",
    "value",
    "n_agents",
    "policy",
    "kind",
    "episodes",
    "mean_latency_s",
    "ci95_s",
    "p50_latency_s",
    "p95_latency_s",
    "kv_share",
    "capped_rate",
)
SWEEP_POLICIES = ("nl-only", "kv-only", "jmsra", "optimal")


def get_sweep(name: str) -> Sweep:
    if name not in SWEEPS:
        raise EvaluationError(f"unknown sweep {name!r}.{_did_you_mean(name, SWEEPS)} Sweeps: {list(SWEEPS)}")
    return SWEEPS[name]


def parse_sweep_values(sweep: Sweep, text: str | None) -> tuple[Any, ...]:
    """Comma-separated values for ``sweep`` (its defaults for None), validated as configs."""
    if text is None:
        return sweep.values
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise EvaluationError(f"--sweep-values for {sweep.name!r} is empty")
    try:
        values = tuple(sweep.parse(s) for s in items)
    except ValueError as exc:
        raise EvaluationError(f"bad --sweep-values for {sweep.name!r}: {exc}") from exc
    return values


def sweep_configs(sweep: Sweep, cfg: ScenarioConfig, values: Sequence[Any]) -> list[ScenarioConfig]:
    """The scenario of every sweep value (a bad value is an error naming the config field)."""
    out = []
    for v in values:
        try:
            out.append(make_config(cfg, **sweep.overrides(v)))
        except ValueError as exc:
            raise EvaluationError(f"sweep {sweep.name!r} value {v!r}: {exc}") from exc
    return out


def check_sweep_policies(
    policy_names: Sequence[str] | None, sweep: Sweep, cfg: ScenarioConfig, values: Sequence[Any]
) -> list[str]:
    """The experts a sweep runs (None: :data:`SWEEP_POLICIES`); unknown names and an explicit
    ``optimal`` where the sweep reaches ``N > OPTIMAL_MAX_AGENTS`` are errors."""
    names = list(SWEEP_POLICIES if policy_names is None else policy_names)
    valid = expert_names()
    for name in names:
        if name not in valid:
            raise EvaluationError(
                f"unknown policy {name!r}.{_did_you_mean(name, valid)} Experts and baselines: {list(valid)}"
            )
    if policy_names is not None and "optimal" in names:
        too_big = [c.n_agents for c in sweep_configs(sweep, cfg, values) if c.n_agents > OPTIMAL_MAX_AGENTS]
        if too_big:
            raise EvaluationError(
                f"'optimal' (exhaustive search) is limited to N <= {OPTIMAL_MAX_AGENTS}; "
                f"the sweep reaches N = {max(too_big)}"
            )
    return names


def run_sweep(
    sweep: Sweep,
    cfg: ScenarioConfig,
    values: Sequence[Any],
    *,
    episodes: int,
    seed: int,
    policy_names: Sequence[str] | None = None,
    models: Sequence[ModelPolicy] = (),
    progress: bool | None = False,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Latency against a scenario parameter; rows :data:`SWEEP_COLUMNS`, and notes for the user.

    Every value is evaluated on the same seeds (common random numbers across values too).
    ``optimal`` runs where ``N <= OPTIMAL_MAX_AGENTS``; a model where its ``N`` matches.
    """
    names = check_sweep_policies(policy_names, sweep, cfg, values)
    configs = sweep_configs(sweep, cfg, values)
    notes = []
    rows: list[dict[str, Any]] = []
    for value, vcfg in _progress(list(zip(values, configs)), progress, desc=f"sweep {sweep.name}", unit="value"):
        pols: list[Any] = [SolverPolicy(n) for n in names if n != "optimal" or vcfg.n_agents <= OPTIMAL_MAX_AGENTS]
        if "optimal" in names and vcfg.n_agents > OPTIMAL_MAX_AGENTS:
            notes.append(f"{sweep.name}={value}: N = {vcfg.n_agents} > {OPTIMAL_MAX_AGENTS}, optimum skipped")
        pols += [m for m in models if m.n_agents == vcfg.n_agents]
        rounds = draw_rounds(vcfg, episodes, seed)
        results = evaluate_policies(rounds, pols, single_round_budget_s=0.0)
        for row in summarise(rounds, results):
            rows.append(
                {
                    "sweep": sweep.name,
                    "value": value,
                    "n_agents": vcfg.n_agents,
                    **{k: row[k] for k in SWEEP_COLUMNS if k in row},
                }
            )
    for m in models:
        if not any(r["policy"] == m.label for r in rows):
            notes.append(f"{m.label} (N = {m.n_agents}) fits no scenario of this sweep: not evaluated")
    return rows, notes


def sweep_findings(rows: Sequence[Mapping[str, Any]], sweep: Sweep) -> list[str]:
    """Plain-language regime findings: where KV-only beats NL-only and how JMSRA compares."""
    by: dict[Any, dict[str, float]] = {}
    share: dict[Any, dict[str, float]] = {}
    order: list[Any] = []
    for r in rows:
        if r["value"] not in by:
            order.append(r["value"])
        by.setdefault(r["value"], {})[r["policy"]] = float(r["mean_latency_s"])
        share.setdefault(r["value"], {})[r["policy"]] = float(r["kv_share"])
    lines = []
    kv_wins = [v for v in order if {"nl-only", "kv-only"} <= set(by[v]) and by[v]["kv-only"] < by[v]["nl-only"]]
    nl_wins = [v for v in order if {"nl-only", "kv-only"} <= set(by[v]) and by[v]["kv-only"] >= by[v]["nl-only"]]
    fmt = lambda v: format_sweep_value(sweep, v)  # noqa: E731
    if kv_wins or nl_wins:
        lines.append(
            f"KV-only beats NL-only at {sweep.name} = {', '.join(map(fmt, kv_wins)) or 'none'}; "
            f"NL-only wins at {', '.join(map(fmt, nl_wins)) or 'none'}"
        )
    for v in order:
        d = by[v]
        if "jmsra" in d and {"nl-only", "kv-only"} <= set(d):
            best_single = min(d["nl-only"], d["kv-only"])
            ref = f", {100 * (d['jmsra'] / d['optimal'] - 1):.2f} % above the optimum" if "optimal" in d else ""
            best = "optimal" if "optimal" in d else "jmsra"
            lines.append(
                f"{sweep.name} = {fmt(v)}: JMSRA {d['jmsra']:.3f} s, "
                f"{100 * (1 - d['jmsra'] / best_single):.1f} % below the better single medium{ref}; "
                f"{best} sends {100 * share[v][best]:.0f} % of the agents' contexts as KV"
            )
    return lines


def format_sweep_value(sweep: Sweep, v: Any) -> str:
    """A sweep value for people: MHz for bandwidth, m for distance."""
    if sweep.name == "bandwidth":
        return f"{float(v) / 1e6:g} MHz"
    if sweep.name == "distance":
        return f"{float(v):g} m"
    return f"{v}" if sweep.categorical else f"{v:g}"
