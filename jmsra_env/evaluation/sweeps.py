"""Regime sweeps: latency against one scenario parameter, every value on the same seeds.

Each value of the swept parameter is a scenario (:func:`sweep_configs`); each is evaluated with
:func:`jmsra_env.evaluation.core.evaluate_scenario` (rounds drawn once, or whole episodes rolled
for a session scenario) and :func:`~jmsra_env.evaluation.statistics.summarise` on the same seeds,
so the values are compared on common random numbers too. The ``pool`` sweep (the receiver's KV
pool per agent) needs a session scenario; on one, the default policies are
:data:`SESSION_SWEEP_POLICIES` and the rows add evictions per episode and pool usage.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..config import LLM_CATALOG, ScenarioConfig, make_config
from ..policies import ExpertPolicy
from .core import (
    OPTIMAL_MAX_AGENTS,
    EvaluationError,
    did_you_mean,
    evaluate_scenario,
    expert_names,
    is_session,
    progress_iter,
    session_expert,
)
from .statistics import SESSION_COLUMNS, summarise

__all__ = [
    "Sweep",
    "SWEEPS",
    "SWEEP_COLUMNS",
    "SWEEP_POLICIES",
    "SESSION_SWEEP_POLICIES",
    "sweep_columns",
    "get_sweep",
    "parse_sweep_values",
    "sweep_configs",
    "check_sweep_policies",
    "run_sweep",
    "sweep_findings",
    "format_sweep_value",
]


@dataclass(frozen=True)
class Sweep:
    """A scenario parameter to sweep: its default values and the config overrides of one value."""

    name: str
    parameter: str  # axis label, with unit
    values: tuple[Any, ...]
    overrides: Callable[[Any, ScenarioConfig], dict[str, Any]]  # (value, base scenario) -> overrides
    parse: Callable[[str], Any] = float
    log_x: bool = False
    categorical: bool = False
    description: str = ""
    session_only: bool = False  # needs a session scenario (the default one: DEFAULT_SESSION_ENV_ID)


def _distance(d: float, cfg: ScenarioConfig) -> dict[str, Any]:
    return {"distance_min_m": float(d), "distance_max_m": float(d)}


MIB = 2**20
# Pool per agent (MiB): 64 = TightPool, 160 = the default, 1024 (4 GiB at N = 4) never binds at the
# default workload (a context reaches at most 2048 + 64 x 512 tokens x 16 KiB = 544 MiB).
POOL_MIB_PER_AGENT = (64.0, 128.0, 160.0, 192.0, 256.0, 1024.0)


def _pool(mib_per_agent: float, cfg: ScenarioConfig) -> dict[str, Any]:
    return {"session.kv_pool_bytes": float(mib_per_agent) * MIB * cfg.n_agents}


SWEEPS: dict[str, Sweep] = {
    s.name: s
    for s in (
        Sweep(
            "bandwidth", "total bandwidth B (MHz)", (1e6, 2e6, 5e6, 10e6, 20e6, 50e6, 100e6),
            lambda v, c: {"bandwidth_hz": float(v)}, log_x=True,
            description="channel.bandwidth_hz (--sweep-values in Hz)",
        ),
        Sweep(
            "load", "maximum background load u_max", (0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95),
            lambda v, c: {"load_max": float(v)},
            description="workload.load_max: loads start U[0, u_max] and walk in [0, u_max]",
        ),
        Sweep(
            "distance", "agent distance d (m)", (20.0, 50.0, 100.0, 150.0, 250.0, 400.0, 600.0),
            _distance, log_x=True,
            description="channel.distance_min_m = distance_max_m = d: every agent at distance d",
        ),
        Sweep(
            "agents", "agents N", (1, 2, 3, 4, 6, 8, 12, 16),
            lambda v, c: {"n_agents": int(v)}, parse=int,
            description="n_agents (the optimum only where N <= 12)",
        ),
        Sweep(
            "kv-bits", "KV cache precision q_bits", (2, 4, 8, 16),
            lambda v, c: {"kv_bits": int(v)}, parse=int, log_x=True,
            description="workload.kv_bits",
        ),
        Sweep(
            "model", "LLM", tuple(LLM_CATALOG),
            lambda v, c: {"llm": str(v)}, parse=str, categorical=True,
            description="workload.llm over the LLM catalog",
        ),
        Sweep(
            "pool", "KV pool per agent (MiB)", POOL_MIB_PER_AGENT, _pool, log_x=True, session_only=True,
            description="session.kv_pool_bytes = N x value MiB (session scenarios; default "
            "jmsra_env/JMSRA-Session-v0; 1024 never binds)",
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
# On a session scenario (kv-only, tens of seconds per round there, is left out of the default).
SESSION_SWEEP_POLICIES = ("nl-only", "jmsra", "pool-aware", "lookahead", "clairvoyant")


def sweep_columns(rows: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """The CSV columns of sweep rows: :data:`SWEEP_COLUMNS`, plus evictions per episode and pool
    usage for a session scenario (single-round sweeps are unchanged)."""
    if rows and all(c in rows[0] for c in SESSION_COLUMNS):
        return SWEEP_COLUMNS + SESSION_COLUMNS
    return SWEEP_COLUMNS


def get_sweep(name: str) -> Sweep:
    if name not in SWEEPS:
        raise EvaluationError(f"unknown sweep {name!r}.{did_you_mean(name, SWEEPS)} Sweeps: {list(SWEEPS)}")
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
            out.append(make_config(cfg, **sweep.overrides(v, cfg)))
        except ValueError as exc:
            raise EvaluationError(f"sweep {sweep.name!r} value {v!r}: {exc}") from exc
    return out


def check_sweep_policies(
    policy_names: Sequence[str] | None, sweep: Sweep, cfg: ScenarioConfig, values: Sequence[Any]
) -> list[str]:
    """The experts a sweep runs (None: :data:`SWEEP_POLICIES`, :data:`SESSION_SWEEP_POLICIES` on a
    session scenario); unknown names, an explicit ``optimal`` where the sweep reaches
    ``N > OPTIMAL_MAX_AGENTS`` and a session-only sweep on a single-round scenario are errors."""
    session = is_session(cfg)
    if sweep.session_only and not session:
        raise EvaluationError(
            f"sweep {sweep.name!r} needs a session scenario (e.g. --env-id jmsra_env/JMSRA-Session-v0); "
            "this one has none (session.enabled is false)"
        )
    default = SESSION_SWEEP_POLICIES if session else SWEEP_POLICIES
    names = list(default if policy_names is None else policy_names)
    valid = expert_names(cfg)
    for name in names:
        if name not in valid:
            raise EvaluationError(
                f"unknown policy {name!r}.{did_you_mean(name, valid)} Experts and baselines"
                f"{' of a session scenario' if session else ''}: {list(valid)}"
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
    models: Sequence = (),
    progress: bool | None = False,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Latency against a scenario parameter; rows :data:`SWEEP_COLUMNS`, and notes for the user.

    Every value is evaluated on the same seeds (common random numbers across values too): rounds
    drawn once, or on a session scenario whole episodes rolled per policy
    (:func:`~jmsra_env.evaluation.core.evaluate_scenario`; the rows then add
    :data:`~jmsra_env.evaluation.statistics.SESSION_COLUMNS`). ``optimal`` runs where
    ``N <= OPTIMAL_MAX_AGENTS``; a model where its ``N`` matches.
    """
    names = check_sweep_policies(policy_names, sweep, cfg, values)
    configs = sweep_configs(sweep, cfg, values)
    notes = []
    rows: list[dict[str, Any]] = []
    for value, vcfg in progress_iter(list(zip(values, configs)), progress, desc=f"sweep {sweep.name}", unit="value"):
        if is_session(vcfg):
            pols: list[Any] = [session_expert(n, vcfg) for n in names]
        else:
            pols = [ExpertPolicy(n, vcfg) for n in names if n != "optimal" or vcfg.n_agents <= OPTIMAL_MAX_AGENTS]
        if "optimal" in names and vcfg.n_agents > OPTIMAL_MAX_AGENTS:
            notes.append(f"{sweep.name}={value}: N = {vcfg.n_agents} > {OPTIMAL_MAX_AGENTS}, optimum skipped")
        pols += [m for m in models if m.config.n_agents == vcfg.n_agents]
        results = evaluate_scenario(vcfg, pols, episodes, seed, single_round_budget_s=0.0)
        for row in summarise(results):
            rows.append(
                {
                    "sweep": sweep.name,
                    "value": value,
                    "n_agents": vcfg.n_agents,
                    **{k: row[k] for k in SWEEP_COLUMNS + SESSION_COLUMNS if k in row},
                }
            )
    for m in models:
        if not any(r["policy"] == m.label for r in rows):
            notes.append(f"{m.label} (N = {m.config.n_agents}) fits no scenario of this sweep: not evaluated")
    return rows, notes


def _session_findings(rows: Sequence[Mapping[str, Any]], sweep: Sweep) -> list[str]:
    """Per value: myopic JMSRA against NL-only (where it breaks down) and the best causal expert."""
    by: dict[Any, dict[str, Mapping[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["value"], {})[r["policy"]] = r
    fmt = lambda v: format_sweep_value(sweep, v)  # noqa: E731
    lines = []
    worse = [v for v, d in by.items() if {"jmsra", "nl-only"} <= set(d)
             and d["jmsra"]["mean_latency_s"] >= d["nl-only"]["mean_latency_s"]]
    if any("jmsra" in d and "nl-only" in d for d in by.values()):
        lines.append(
            f"myopic JMSRA is no better than NL-only at {sweep.name} = {', '.join(map(fmt, worse)) or 'none'}"
        )
    for v, d in by.items():
        parts = []
        if "jmsra" in d:
            j = d["jmsra"]
            parts.append(f"myopic JMSRA {j['mean_latency_s']:.3f} s ({j['evictions_per_episode']:.1f} evictions/episode)")
        causal = {p: r for p, r in d.items() if r["kind"] != "bound"}
        if causal:
            best = min(causal, key=lambda p: causal[p]["mean_latency_s"])
            b = causal[best]["mean_latency_s"]
            rel = f", {100 * (1 - b / d['jmsra']['mean_latency_s']):.1f} % below myopic" if "jmsra" in d else ""
            parts.append(f"best causal {best} {b:.3f} s{rel}")
        lines.append(f"{sweep.name} = {fmt(v)}: " + "; ".join(parts))
    return lines


def sweep_findings(rows: Sequence[Mapping[str, Any]], sweep: Sweep) -> list[str]:
    """Plain-language regime findings: where KV-only beats NL-only and how JMSRA compares (on a
    session scenario: where myopic JMSRA breaks down and which expert is best)."""
    if rows and all(c in rows[0] for c in SESSION_COLUMNS):
        return _session_findings(rows, sweep)
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
    if sweep.name == "pool":
        return f"{float(v):g} MiB/agent"
    return f"{v}" if sweep.categorical else f"{v:g}"
