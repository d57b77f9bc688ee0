"""The evaluation statistics, computed in one place (:func:`summarise`) for every caller.

The 95 % confidence interval of a mean is a Student t interval over the per-episode means
(episodes are independent; rounds within an episode are not). The gap to the reference (the
optimum, else JMSRA, unless one is named) is ``mean / mean_ref - 1`` with a paired t interval over
the per-episode differences (common random numbers make it tight). p50 and p95 pool all rounds; KV
share is the fraction of agent-rounds sent as KV cache, capped rate the fraction of rounds at
``latency_cap_s``. Rollouts of a session scenario add :data:`SESSION_COLUMNS`: evictions per
episode (the environment's ``info["evictions"]`` summed over an episode, averaged over episodes)
and the mean pool usage (``info["kv_pool_used_fraction"]`` after each round, averaged over rounds).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .core import EXPERTS, EvaluationError, PolicyResult

__all__ = ["SUMMARY_COLUMNS", "SESSION_COLUMNS", "summary_columns", "TIMING_COLUMNS", "reference_label", "summarise", "timing_rows", "t_halfwidth"]

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
# Added by summarise when every result comes from a session rollout (PolicyResult.session).
SESSION_COLUMNS = ("evictions_per_episode", "pool_used_fraction")
TIMING_COLUMNS = ("policy", "decision_ms_per_round", "single_round_decision_ms")


def summary_columns(rows: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """The CSV columns of summary rows: :data:`SUMMARY_COLUMNS`, plus :data:`SESSION_COLUMNS`
    when the rows have them (session rollouts); single-round summaries are unchanged."""
    if rows and all(c in rows[0] for c in SESSION_COLUMNS):
        return SUMMARY_COLUMNS + SESSION_COLUMNS
    return SUMMARY_COLUMNS


def t_halfwidth(samples: np.ndarray) -> float:
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
    for ref in EXPERTS:
        if ref in labels:
            return ref
    return None


def _per_episode_means(r: PolicyResult) -> np.ndarray:
    return r.latency_s.reshape(r.episodes, -1).mean(axis=1)


def summarise(results: Sequence[PolicyResult], reference: str | None = None) -> list[dict[str, Any]]:
    """One summary row per policy (columns :data:`SUMMARY_COLUMNS`, and :data:`SESSION_COLUMNS`
    for session rollouts), gaps paired per episode.

    ``reference`` names the gap reference (default :func:`reference_label`). Every result must
    cover the same episodes (the same rounds, for the paired gap).
    """
    ref = reference if reference is not None else reference_label(results)
    by_label = {r.label: r for r in results}
    if ref is not None and ref not in by_label:
        raise EvaluationError(f"gap reference {ref!r} is not among the policies {list(by_label)}")
    shapes = {(r.episodes, r.latency_s.size) for r in results}
    if len(shapes) > 1:
        raise EvaluationError(f"results cover different rounds (episodes, rounds): {sorted(shapes)}")
    ref_ep = _per_episode_means(by_label[ref]) if ref is not None else None
    session = bool(results) and all(r.session for r in results)  # the scenario's config says so
    rows = []
    for r in results:
        ep = _per_episode_means(r)
        mean = float(r.latency_s.mean())
        hw = t_halfwidth(ep)
        gap = gap_hw = float("nan")
        if ref_ep is not None:
            ref_mean = float(ref_ep.mean())
            diff = ep - ref_ep  # paired: common random numbers
            gap = 100.0 * float(diff.mean()) / ref_mean
            gap_hw = 100.0 * t_halfwidth(diff) / ref_mean
        rows.append(
            {
                "policy": r.label,
                "kind": r.kind,
                "episodes": r.episodes,
                "rounds": int(r.latency_s.size),
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
        if session:
            rows[-1]["evictions_per_episode"] = float(np.sum(r.info["evictions"])) / r.episodes
            rows[-1]["pool_used_fraction"] = float(np.mean(r.info["kv_pool_used_fraction"]))
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
