"""Trained models as evaluation policies, and the comparison with the experts that training prints.

The evaluation itself is :mod:`jmsra_env.evaluation` (rounds drawn once, charging, statistics);
this module plugs trained PPO models into it through its policy protocol, so that the environment
package never imports the training package:

* :class:`TrainedModelPolicy` wraps anything with ``predict(obs, deterministic=True) -> (Box
  action, state)`` on raw observations: a saved run (:func:`load_model_policy`, through
  :func:`jmsra_agents.checkpoint.load_trained_policy`) or a model being trained (:func:`live_model_policy`).
* :func:`compare_with_experts` is training's periodic evaluation and final comparison: the
  policies and experts on the same rounds, with the statistics of ``evaluate.py``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jmsra_env import actions, evaluation as ev, model
from jmsra_env.config import ScenarioConfig
from jmsra_env.encoding import to_env_action
from jmsra_env.evaluation.report import plain_table
from jmsra_env.features import observation_features

from . import checkpoint

__all__ = [
    "DEFAULT_EXPERTS",
    "TrainedModelPolicy",
    "load_model_policy",
    "live_model_policy",
    "Comparison",
    "compare_with_experts",
    "format_table",
    "final_comparison",
    "LivePredictor",
]

DEFAULT_EXPERTS = ("jmsra", "nl-only", "kv-only")


class TrainedModelPolicy:
    """A trained model as an evaluation policy (:class:`jmsra_env.evaluation.Policy`).

    ``predictor.predict(obs, deterministic=True)`` maps raw Dict observations (one or a batch) to
    the env's Box actions; they are decoded with the *evaluated* scenario's bandwidth, exactly as
    the environment decodes them. ``config`` is the scenario trained on (checked against the
    evaluated one by :func:`jmsra_env.evaluation.check_policy_fits`).
    """

    def __init__(
        self,
        predictor,
        config: ScenarioConfig,
        label: str = "ppo",
        *,
        path: str = "<memory>",
        env_id: str | None = None,
        kind: str = "ppo",
    ):
        self.predictor = predictor
        self.config = config
        self.label = label
        self.path = path
        self.env_id = env_id
        self.kind = kind
        self.notes: list[str] = []
        self._scenario = config

    @property
    def trained(self):
        """The wrapped predictor (an ``jmsra_agents.checkpoint.TrainedPolicy`` for a saved run)."""
        return self.predictor

    def reset(self, config: ScenarioConfig, seed: int | None = None) -> None:
        self._scenario = config

    def decide(self, obs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        action, _ = self.predictor.predict(obs, deterministic=True)
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        terms = model.terms_from_observation(model.model_constants(self._scenario), obs)
        return actions.decode_box(action, terms, action.shape[:-1])


def _model_label(path: Path, algorithm: str = "ppo") -> str:
    p = path.resolve()
    if p.is_dir():
        return f"{algorithm}:{p.name}"
    stem = p.name[: -len(".zip")] if p.name.endswith(".zip") else p.name
    parent = p.parent.name
    return f"{algorithm}:{parent}" if stem == "model" else f"{algorithm}:{parent}/{stem}"


def load_model_policy(
    path: str | os.PathLike,
    *,
    label: str | None = None,
    device: str = "cpu",
    trust_pickle: bool = False,
) -> TrainedModelPolicy:
    """Load a trained model (run dir, model.zip or checkpoint dir) as an evaluation policy.

    Only the safe format (safetensors + JSON) is read unless ``trust_pickle`` (see
    :func:`jmsra_agents.checkpoint.load_trained_policy`).
    Any failure is an :class:`jmsra_env.evaluation.EvaluationError` naming the path.
    """
    p = Path(path)
    if not p.exists():
        raise ev.EvaluationError(f"model path {str(path)!r} does not exist")
    try:
        trained = checkpoint.load_trained_policy(p, device=device, trust_pickle=trust_pickle)
    except Exception as exc:  # noqa: BLE001 - any failure to load is reported with the path
        raise ev.EvaluationError(f"cannot load model {str(path)!r}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(getattr(trained, "config", None), ScenarioConfig):
        raise ev.EvaluationError(
            f"model {str(path)!r} carries no scenario config (run.json); cannot check that it fits"
        )
    team = getattr(trained, "action_form", "box") == "team"  # decentralised agents (jmsra_agents.torch_marl)
    algorithm = str(trained.run_info.get("algorithm", "ppo")) if team else "ppo"
    return TrainedModelPolicy(
        trained, trained.config, label or _model_label(p, algorithm), path=str(path),
        env_id=getattr(trained, "env_id", None), kind="marl" if team else "ppo",
    )


class LivePredictor:
    """``predict`` of a model being trained, with its live observation normalisation (``session``:
    the scenario's ``config.session.enabled``, whether the features have the session block)."""

    def __init__(self, model_, vecnormalize, consts, features: str, encoding: str, session: bool | None = None):
        self.model, self.vecnormalize, self.consts = model_, vecnormalize, consts
        self.features, self.encoding, self.session = features, encoding, session

    def predict(self, obs, deterministic: bool = True):
        x = observation_features(obs, self.consts, self.features, self.session)
        if self.vecnormalize is not None:
            x = self.vecnormalize.normalize_obs(x)
        return to_env_action(self.encoding, self.model.predict(x, deterministic=True)[0], obs, self.consts), None


def live_model_policy(
    model_, vecnormalize, config: ScenarioConfig, features: str, encoding: str, label: str = "ppo"
) -> TrainedModelPolicy:
    """A model being trained (SB3 PPO and its live ``VecNormalize``) as an evaluation policy."""
    predictor = LivePredictor(
        model_, vecnormalize, model.model_constants(config), features, encoding, bool(config.session.enabled)
    )
    return TrainedModelPolicy(predictor, config, label)


@dataclass
class Comparison:
    """Policies and experts charged on the same rounds; ``rows`` are :func:`jmsra_env.evaluation.summarise`'s."""

    rounds: ev.Rounds
    results: list[ev.PolicyResult]
    rows: list[dict[str, Any]]

    def row(self, label: str) -> dict[str, Any]:
        return next(r for r in self.rows if r["policy"] == label)

    def mean(self, label: str) -> float:
        return float(self.row(label)["mean_latency_s"])


def compare_with_experts(
    env_id: str,
    overrides: Mapping[str, Any] | None,
    policies: Sequence,
    *,
    experts: Sequence[str] = DEFAULT_EXPERTS,
    episodes: int,
    seed: int = ev.HELD_OUT_SEED,
    reference: str | None = None,
    expert_results: Sequence[ev.PolicyResult] | None = None,
) -> Comparison:
    """Charge ``policies`` and ``experts`` on ``episodes`` episodes from ``seed`` (common rounds).

    ``env_id`` may carry either action form (the scenario is what counts). ``expert_results`` from
    an earlier call on the same rounds are reused instead of solving again (the periodic
    evaluation's rounds never change). The reference is JMSRA when evaluated, else the optimum, else
    the first policy. A session scenario is rolled episode by episode (:func:`ev.evaluate_scenario`;
    ``rounds`` then records the episodes only: no observations, no terms).
    """
    cfg, _ = ev.scenario_from_env_id(env_id, overrides)
    if ev.is_session(cfg):
        rounds = ev.Rounds(cfg, seed, episodes, cfg.episode_rounds, {}, None)

        def charge(pols):
            return ev.evaluate_scenario(cfg, pols, episodes, seed, single_round_budget_s=0.0)
    else:
        rounds = ev.draw_rounds(cfg, episodes, seed)

        def charge(pols):
            return ev.evaluate_policies(rounds, pols, single_round_budget_s=0.0)
    results = charge(list(policies))
    if expert_results is None:
        expert_policies, _ = ev.resolve_experts(
            [e for e in experts if e not in {r.label for r in results}], cfg
        )
        expert_results = charge(expert_policies)
    results += list(expert_results)
    labels = [r.label for r in results]
    if reference is None:
        reference = next((x for x in ("jmsra", "optimal") if x in labels), labels[0])
    return Comparison(rounds, results, ev.summarise(results, reference))


def format_table(comparison: Comparison, title: str | None = None) -> str:
    """The comparison as a plain-text table (the statistics of ``evaluate.py``)."""
    r = comparison.rounds
    foot = (
        f"({r.n_rounds} rounds: {r.episodes} episodes x {r.rounds_per_episode} from seeds "
        f"{r.seed}..{r.seed + r.episodes - 1}; 95% CI: t over episodes, gap paired)"
    )
    return plain_table(comparison.rows, title=title, footer=foot)


def final_comparison(
    model_, vecnormalize, env_id: str, overrides: Mapping[str, Any] | None, config: ScenarioConfig,
    features: str, encoding: str, episodes: int, *, seed: int = ev.HELD_OUT_SEED,
) -> str:
    """train.py's closing table: the trained model against JMSRA, NL-only and KV-only on held-out
    episodes (seeds :data:`jmsra_env.evaluation.HELD_OUT_SEED` +)."""
    policy = live_model_policy(model_, vecnormalize, config, features, encoding, label="ppo")
    res = compare_with_experts(env_id, overrides, [policy], episodes=episodes, seed=seed)
    return format_table(res, title=f"Held-out comparison ({env_id}, {episodes} episodes):")
