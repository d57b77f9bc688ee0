"""Evaluation of policies on common random rounds: one core for evaluate.py and training.

=========================================  ==============================================================
:mod:`jmsra_env.evaluation.core`           seeds, rounds drawn once, the policy protocol, charging,
                                           rolling whole episodes in a vector env
:mod:`jmsra_env.evaluation.statistics`     the statistics (:func:`summarise`): mean, CI, p50/p95, paired
                                           gap, KV share, capped rate
:mod:`jmsra_env.evaluation.sweeps`         regime sweeps over one scenario parameter
:mod:`jmsra_env.evaluation.report`         tables, CSV / JSON / Markdown, figures, atomic writes
=========================================  ==============================================================

Trained models plug in through the policy protocol from ``jmsra_agents.evaluation``; this package never
imports ``agents``. See docs/evaluation.md.
"""

from __future__ import annotations

from . import core, statistics, sweeps
from .core import *  # noqa: F403
from .statistics import *  # noqa: F403
from .sweeps import *  # noqa: F403

__all__ = [*core.__all__, *statistics.__all__, *sweeps.__all__]
