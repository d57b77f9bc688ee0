"""Evaluation of policies on common random rounds: one core for evaluate.py and training.

=========================================  ==============================================================
:mod:`jmsra_env.evaluation.core`           seeds, rounds drawn once, the policy protocol, charging,
                                           rolling whole episodes in a vector env
:mod:`jmsra_env.evaluation.statistics`     the statistics (:func:`summarise`): mean, CI, p50/p95, paired
                                           gap, KV share, capped rate
:mod:`jmsra_env.evaluation.sweeps`         regime sweeps over one scenario parameter
:mod:`jmsra_env.evaluation.report`         tables, CSV / JSON / Markdown, figures, atomic writes
=========================================  ==============================================================

Trained models plug in through the policy protocol from ``agents.evaluation``; this package never
imports ``agents``. See docs/evaluation.md.
"""

from __future__ import annotations

from .core import (
    DEFAULT_ENV_ID,
    DEFAULT_SEED,
    HELD_OUT_SEED,
    OPTIMAL_MAX_AGENTS,
    SELECTION_SEED,
    TRAIN_SEED,
    EvaluationError,
    Policy,
    PolicyResult,
    Rounds,
    charge,
    check_policy_fits,
    draw_rounds,
    evaluate_policies,
    expert_names,
    oracle_policy,
    resolve_experts,
    rollout_episodes,
    scenario_from_env_id,
)
from .statistics import SUMMARY_COLUMNS, TIMING_COLUMNS, reference_label, summarise, timing_rows
from .sweeps import (
    SWEEP_COLUMNS,
    SWEEP_POLICIES,
    SWEEPS,
    Sweep,
    check_sweep_policies,
    format_sweep_value,
    get_sweep,
    parse_sweep_values,
    run_sweep,
    sweep_configs,
    sweep_findings,
)

__all__ = [
    "EvaluationError",
    "OPTIMAL_MAX_AGENTS",
    "DEFAULT_ENV_ID",
    "TRAIN_SEED",
    "SELECTION_SEED",
    "HELD_OUT_SEED",
    "DEFAULT_SEED",
    "Policy",
    "Rounds",
    "PolicyResult",
    "draw_rounds",
    "charge",
    "evaluate_policies",
    "rollout_episodes",
    "expert_names",
    "resolve_experts",
    "oracle_policy",
    "check_policy_fits",
    "scenario_from_env_id",
    "SUMMARY_COLUMNS",
    "TIMING_COLUMNS",
    "reference_label",
    "summarise",
    "timing_rows",
    "Sweep",
    "SWEEPS",
    "SWEEP_COLUMNS",
    "SWEEP_POLICIES",
    "get_sweep",
    "parse_sweep_values",
    "sweep_configs",
    "check_sweep_policies",
    "run_sweep",
    "sweep_findings",
    "format_sweep_value",
]
