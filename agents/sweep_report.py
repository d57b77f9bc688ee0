"""The report of a sweep: per scenario, IQM latency over seeds with stratified-bootstrap intervals.

**Scores.** A trial's score is the mean E2E latency per round of its final model on the held-out
rounds (lower is better). Per scenario and variant (recipe + hyperparameters) the seeds' scores form
rliable's ``(runs, tasks)`` matrix with one task.

**Statistics** (Agarwal et al., 2021, "Deep RL at the edge of the statistical precipice"):

- the interquartile mean over seeds (:func:`rliable.metrics.aggregate_iqm`, a 25 % trimmed mean);
- its 95 % interval from the stratified bootstrap with the percentile method: runs are resampled with
  replacement within each task, as rliable's ``StratifiedBootstrap`` does. The resampling is done here
  with a seeded :class:`numpy.random.Generator` (one stream per scenario and variant) rather than
  with ``rliable.library.get_interval_estimates``, because that function draws from NumPy's global
  generator (its ``random_state`` does not reach the resampling) and rliable 1.2's bootstrap breaks
  with arch >= 8 (``random_state`` was removed) while arch < 8 does not import with pandas >= 3;
- the gap to JMSRA, ``IQM / JMSRA - 1`` in %, with the interval mapped the same way (a trimmed mean
  commutes with a positive affine map, so this is the IQM of the per-seed gaps);
- the probability of improvement over JMSRA (:func:`rliable.metrics.probability_of_improvement`,
  on negated latencies since lower is better): the Mann-Whitney probability that a seed's latency is
  below JMSRA's, ties counting one half.

The experts (JMSRA, NL-only, KV-only) are deterministic given the rounds: each is evaluated once per
scenario, on the very held-out rounds the trials were evaluated on, so they have no seed interval.

Learning curves: the mean over seeds of a TensorBoard scalar (default ``rounds/gap_to_jmsra_pct``,
the training rollouts' gap to JMSRA) with a 95 % bootstrap interval of that mean, on the steps all
seeds logged.

Files (rendered in memory, then written into a temporary folder renamed over ``report/``):
``summary.md``, ``report.json``, ``trials.csv``, and per scenario ``<scenario>.csv``, ``.md``,
``.png``, ``<scenario>_curves.csv`` and ``_curves.png``.
"""

from __future__ import annotations

import math
import os
import shutil
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jmsra_env import evaluation as ev
from jmsra_env.evaluation import report as rep

__all__ = [
    "EXPERTS",
    "REPORT_COLUMNS",
    "stratified_bootstrap_ci",
    "expert_latencies",
    "aggregate_scenario",
    "aggregate_across_scenarios",
    "learning_curve",
    "build_report",
    "write_report",
    "terminal_summary",
]

EXPERTS = ("jmsra", "nl-only", "kv-only")
REFERENCE = "jmsra"
CONFIDENCE = 0.95
CURVE_TAG = "rounds/gap_to_jmsra_pct"
CURVE_REPS = 2_000  # bootstrap resamples per curve (over all steps at once)
REPORT_COLUMNS = (
    "scenario",
    "policy",
    "kind",
    "seeds",
    "iqm_latency_s",
    "ci95_low_s",
    "ci95_high_s",
    "mean_latency_s",
    "gap_to_jmsra_pct",
    "gap_ci95_low_pct",
    "gap_ci95_high_pct",
    "p_improvement_over_jmsra",
)
TRIAL_COLUMNS = ("name", "scenario", "variant", "seed", "mean_latency_s", "kv_share", "capped_rate",
                 "num_timesteps", "train_wall_s", "eval_wall_s", "run_dir")


def _rng(seed: int, *keys: str) -> np.random.Generator:
    """One bootstrap stream per (seed, scenario, variant): a row never depends on the other rows."""
    return np.random.default_rng([seed, *(zlib.crc32(k.encode()) for k in keys)])


def stratified_bootstrap_ci(
    scores: np.ndarray,
    func: Callable[[np.ndarray], float],
    *,
    reps: int,
    rng: np.random.Generator,
    size: float = CONFIDENCE,
) -> tuple[float, float]:
    """Percentile interval of ``func(scores)`` under the stratified bootstrap.

    ``scores`` is ``(runs, tasks)``; each resample draws, for every task independently, ``runs``
    runs with replacement (rliable's ``StratifiedBootstrap`` with ``task_bootstrap=False``).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] < 1:
        raise ValueError(f"scores must be (runs, tasks) with runs >= 1; got shape {scores.shape}")
    runs, tasks = scores.shape
    cols = np.arange(tasks)
    stats = np.empty(reps)
    for i in range(reps):
        idx = rng.integers(0, runs, size=(runs, tasks))
        stats[i] = func(scores[idx, cols])
    tail = 100.0 * (1.0 - size) / 2.0
    lo, hi = np.percentile(stats, [tail, 100.0 - tail])
    return float(lo), float(hi)


def expert_latencies(env_id: str, episodes: int, seed: int) -> dict[str, float]:
    """Mean latency per round of each expert on the held-out rounds the trials were evaluated on."""
    cfg, _ = ev.scenario_from_env_id(env_id)
    experts, _ = ev.resolve_experts(list(EXPERTS), cfg)
    # the one evaluation path: rounds drawn once, or whole episodes for a session scenario
    results = ev.evaluate_scenario(cfg, experts, episodes, seed, single_round_budget_s=0.0)
    return {r.label: float(r.latency_s.mean()) for r in results}


def aggregate_scenario(
    scenario: str,
    scores: Mapping[str, Sequence[float]],
    experts: Mapping[str, float],
    *,
    reps: int,
    seed: int,
) -> list[dict[str, Any]]:
    """Report rows of one scenario: each variant's per-seed scores aggregated, then the experts."""
    from rliable import metrics

    ref = experts[REFERENCE]

    def gap(v: float) -> float:
        return 100.0 * (v / ref - 1.0)

    rows = []
    for variant, values in scores.items():
        x = np.asarray(values, dtype=np.float64).reshape(-1, 1)
        iqm = float(metrics.aggregate_iqm(x))
        lo, hi = stratified_bootstrap_ci(x, metrics.aggregate_iqm, reps=reps, rng=_rng(seed, scenario, variant))
        poi = float(metrics.probability_of_improvement(-x, -np.array([[ref]])))
        rows.append({
            "scenario": scenario, "policy": variant, "kind": "learned", "seeds": x.shape[0],
            "iqm_latency_s": iqm, "ci95_low_s": lo, "ci95_high_s": hi, "mean_latency_s": float(x.mean()),
            "gap_to_jmsra_pct": gap(iqm), "gap_ci95_low_pct": gap(lo), "gap_ci95_high_pct": gap(hi),
            "p_improvement_over_jmsra": poi,
        })
    for label, value in experts.items():
        rows.append({
            "scenario": scenario, "policy": label, "kind": "expert", "seeds": "", "iqm_latency_s": value,
            "ci95_low_s": math.nan, "ci95_high_s": math.nan, "mean_latency_s": value,
            "gap_to_jmsra_pct": gap(value), "gap_ci95_low_pct": math.nan, "gap_ci95_high_pct": math.nan,
            "p_improvement_over_jmsra": math.nan,
        })
    return rows


ACROSS_COLUMNS = ("policy", "seeds", "scenarios", "iqm_gap_to_jmsra_pct", "ci95_low_pct", "ci95_high_pct",
                  "mean_gap_to_jmsra_pct", "p_improvement_over_jmsra")


def aggregate_across_scenarios(
    gaps: Mapping[str, Mapping[str, Mapping[int, float]]], *, reps: int, seed: int
) -> list[dict[str, Any]]:
    """One row per variant over all scenarios: rliable's multi-task aggregate.

    ``gaps``: variant -> scenario -> training seed -> gap to JMSRA in % (a normalised score, lower
    is better). The scores form a ``(seeds, scenarios)`` matrix over the seeds every scenario has;
    IQM over all its entries, stratified bootstrap (seeds resampled within each scenario), and the
    probability of improvement over JMSRA (gap 0) averaged over scenarios.
    """
    from rliable import metrics

    rows = []
    for variant, by_scenario in gaps.items():
        scenarios = sorted(by_scenario)
        seeds = sorted(set.intersection(*(set(by_scenario[sc]) for sc in scenarios)))
        if not seeds:
            continue
        x = np.array([[by_scenario[sc][s] for sc in scenarios] for s in seeds], dtype=np.float64)
        lo, hi = stratified_bootstrap_ci(x, metrics.aggregate_iqm, reps=reps, rng=_rng(seed, "all", variant))
        rows.append({
            "policy": variant, "seeds": len(seeds), "scenarios": len(scenarios),
            "iqm_gap_to_jmsra_pct": float(metrics.aggregate_iqm(x)), "ci95_low_pct": lo, "ci95_high_pct": hi,
            "mean_gap_to_jmsra_pct": float(x.mean()),
            "p_improvement_over_jmsra": float(metrics.probability_of_improvement(-x, np.zeros((1, x.shape[1])))),
        })
    return rows


def learning_curve(
    curves: Sequence[Sequence[tuple[int, float]]], *, reps: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(steps, mean, low, high)`` over seeds on the steps every seed logged (95 % bootstrap of the mean)."""
    tables = [dict(c) for c in curves if c]
    if not tables:
        empty = np.empty(0)
        return empty, empty, empty, empty
    steps = np.array(sorted(set.intersection(*(set(t) for t in tables))), dtype=np.int64)
    values = np.array([[t[s] for s in steps] for t in tables], dtype=np.float64)  # (seeds, steps)
    mean = values.mean(axis=0)
    idx = rng.integers(0, values.shape[0], size=(reps, values.shape[0]))
    boot = values[idx].mean(axis=1)  # (reps, steps)
    tail = 100.0 * (1.0 - CONFIDENCE) / 2.0
    lo, hi = np.percentile(boot, [tail, 100.0 - tail], axis=0) if steps.size else (mean, mean)
    return steps, mean, lo, hi


def _md_table(rows: Sequence[Mapping[str, Any]]) -> str:
    def num(v, fmt):
        return "-" if isinstance(v, float) and not math.isfinite(v) else format(v, fmt)

    lines = ["| policy | seeds | IQM latency [s] | 95% CI [s] | gap to JMSRA [%] | gap 95% CI [%] | P(better than JMSRA) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ci = "-" if not math.isfinite(r["ci95_low_s"]) else f"[{r['ci95_low_s']:.4f}, {r['ci95_high_s']:.4f}]"
        gci = ("-" if not math.isfinite(r["gap_ci95_low_pct"])
               else f"[{r['gap_ci95_low_pct']:+.2f}, {r['gap_ci95_high_pct']:+.2f}]")
        gap = "ref" if r["policy"] == REFERENCE else num(r["gap_to_jmsra_pct"], "+.2f")
        lines.append(f"| {r['policy']} | {r['seeds'] or '-'} | {r['iqm_latency_s']:.4f} | {ci} | {gap} | {gci} | "
                     f"{num(r['p_improvement_over_jmsra'], '.2f')} |")
    return "\n".join(lines) + "\n"


def _bars_png(rows: Sequence[Mapping[str, Any]], title: str) -> bytes:
    plt = rep._figure()
    labels = [r["policy"] for r in rows]
    iqm = np.array([r["iqm_latency_s"] for r in rows])
    lo = np.array([r["ci95_low_s"] for r in rows])
    hi = np.array([r["ci95_high_s"] for r in rows])
    err = np.nan_to_num(np.vstack([iqm - lo, hi - iqm]), nan=0.0)
    colors = ["tab:purple" if r["kind"] == "learned" else "tab:green" for r in rows]
    fig, ax = plt.subplots(figsize=(7.0, 0.5 * len(rows) + 1.8))
    y = np.arange(len(rows))[::-1]
    ax.barh(y, iqm, xerr=err, capsize=4, color=colors)
    ax.set_yticks(y, labels)
    ax.set_xlabel("IQM over seeds of the mean E2E latency per round [s] (95% stratified-bootstrap CI)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    return rep._png(fig)


def _curves_png(curves: Mapping[str, tuple], title: str, ylabel: str) -> bytes:
    plt = rep._figure()
    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    for label, (steps, mean, lo, hi) in curves.items():
        if steps.size == 0:
            continue
        (line,) = ax.plot(steps, mean, label=label)
        ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.25, lw=0)
    ax.axhline(0.0, color="tab:green", lw=1, ls="--", label="JMSRA")
    ax.set_xlabel("environment steps")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return rep._png(fig)


def build_report(
    cells: Sequence[Any],
    results: Mapping[str, Any],
    *,
    experts: Mapping[str, Mapping[str, float]] | None = None,
    reps: int = 10_000,
    seed: int = 0,
    plots: bool = True,
    curve_tag: str = CURVE_TAG,
) -> dict[str, bytes | str]:
    """All report files by name. ``cells``: the grid's :class:`~jmsra_agents.sweep.TrialCell` list;
    ``results``: :class:`~jmsra_agents.sweep.TrialResult` by trial name (missing trials are listed);
    ``experts``: scenario -> expert -> latency (evaluated here when not given). Same inputs, same bytes.
    """
    scenarios: dict[str, Any] = {}
    for c in cells:
        scenarios.setdefault(c.scenario, c)
    files: dict[str, bytes | str] = {}
    all_rows: list[dict[str, Any]] = []
    md = ["# Sweep report", ""]
    missing = [c.name for c in cells if c.name not in results]
    info: dict[str, Any] = {"scenarios": {}, "missing_trials": missing, "bootstrap": {"reps": reps, "seed": seed},
                            "statistics": "IQM over seeds; 95% stratified-bootstrap percentile CI; "
                            "probability of improvement over JMSRA (Mann-Whitney, lower latency is better)"}
    gaps: dict[str, dict[str, dict[int, float]]] = {}
    for scenario, first in scenarios.items():
        ex = dict(experts[scenario]) if experts is not None else expert_latencies(
            first.env_id, first.eval_episodes, first.eval_seed)
        scores: dict[str, list[float]] = {}
        curve_points: dict[str, list] = {}
        for c in cells:
            if c.scenario != scenario or c.name not in results:
                continue
            r = results[c.name]
            scores.setdefault(c.variant, []).append(r.mean_latency_s)
            gaps.setdefault(c.variant, {}).setdefault(scenario, {})[c.seed] = 100.0 * (
                r.mean_latency_s / ex[REFERENCE] - 1.0)
            curve_points.setdefault(c.variant, []).append(r.curves.get(curve_tag, ()))
        rows = aggregate_scenario(scenario, scores, ex, reps=reps, seed=seed)
        all_rows += rows
        title = (f"{first.env_id}: {first.eval_episodes} held-out episodes from seed {first.eval_seed}, "
                 f"{first.total_timesteps:,} steps per trial")
        files[f"{scenario}.csv"] = rep.csv_text(rows, REPORT_COLUMNS)
        table = _md_table(rows)
        files[f"{scenario}.md"] = f"## {scenario}\n\n{title}\n\n{table}"
        md += [f"## {scenario}", "", title, "", table]
        curves = {v: learning_curve(pts, reps=CURVE_REPS, rng=_rng(seed, scenario, v, curve_tag))
                  for v, pts in curve_points.items()}
        curve_rows = [{"variant": v, "step": int(s), "mean": m, "ci95_low": lo, "ci95_high": hi,
                       "seeds": len(curve_points[v])}
                      for v, (st, mean, low, high) in curves.items() for s, m, lo, hi in zip(st, mean, low, high)]
        files[f"{scenario}_curves.csv"] = rep.csv_text(curve_rows, ("variant", "step", "mean", "ci95_low", "ci95_high", "seeds"))
        if plots:
            files[f"{scenario}.png"] = _bars_png(rows, title)
            files[f"{scenario}_curves.png"] = _curves_png(
                curves, f"{scenario}: {curve_tag} (mean over seeds, 95% bootstrap CI)", f"{curve_tag} [%]")
        info["scenarios"][scenario] = {"env_id": first.env_id, "eval_episodes": first.eval_episodes,
                                       "eval_seed": first.eval_seed, "experts": ex, "rows": rows}
    if len(scenarios) > 1:
        across = aggregate_across_scenarios(gaps, reps=reps, seed=seed)
        files["all_scenarios.csv"] = rep.csv_text(across, ACROSS_COLUMNS)
        table = ["| policy | seeds x scenarios | IQM gap to JMSRA [%] | 95% CI [%] | P(better than JMSRA) |",
                 "|---|---:|---:|---:|---:|"]
        table += [f"| {r['policy']} | {r['seeds']} x {r['scenarios']} | {r['iqm_gap_to_jmsra_pct']:+.2f} | "
                  f"[{r['ci95_low_pct']:+.2f}, {r['ci95_high_pct']:+.2f}] | {r['p_improvement_over_jmsra']:.2f} |"
                  for r in across]
        md += ["## All scenarios", "", "The gap to JMSRA as a normalised score: IQM over seeds x scenarios, "
               "stratified bootstrap over seeds within each scenario.", "", "\n".join(table), ""]
        info["all_scenarios"] = across
    md.append("IQM: interquartile mean over seeds of each trial's mean E2E latency per round on the held-out "
              "rounds; CI: 95 % stratified bootstrap (percentile); gap = IQM / JMSRA - 1; P(better than JMSRA): "
              "probability of improvement (rliable). Experts are deterministic on these rounds (no CI).")
    if missing:
        md += ["", f"Missing trials ({len(missing)}): " + ", ".join(missing)]
    files["summary.md"] = "\n".join(md) + "\n"
    files["report.json"] = rep.json_text(info)
    trial_rows = [results[c.name].to_dict() for c in cells if c.name in results]
    files["trials.csv"] = rep.csv_text(trial_rows, TRIAL_COLUMNS)
    return files


def write_report(folder: str | os.PathLike, files: Mapping[str, bytes | str]) -> None:
    """Write ``files`` into a temporary sibling folder, then rename it over ``folder``."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    for p in (tmp, old):
        if p.exists():
            shutil.rmtree(p)
    try:
        tmp.mkdir()
        for name, data in files.items():
            raw = data.encode("utf-8") if isinstance(data, str) else data
            with open(tmp / name, "wb") as fh:
                fh.write(raw)
                fh.flush()
                os.fsync(fh.fileno())
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    if old.exists():
        shutil.rmtree(old)


def terminal_summary(files: Mapping[str, bytes | str]) -> str:
    """The Markdown summary, for the terminal."""
    text = files["summary.md"]
    return text if isinstance(text, str) else text.decode()
