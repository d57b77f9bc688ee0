"""SB3 callbacks: round metrics in raw units, periodic evaluation against JMSRA, atomic checkpoints.

TensorBoard tags (all in raw units):

=============================  ================================================================
``rounds/latency_s``           mean E2E latency per training round of the last rollout (s)
``rounds/jmsra_latency_s``     JMSRA's mean latency on the same rounds (s), solved in one batch
``rounds/gap_to_jmsra_pct``    ``100 (latency / JMSRA latency - 1)`` over the rollout
``rounds/kv_share``            share of agents sent as KV cache
``rounds/capped_rate``         share of rounds whose latency hit ``latency_cap_s``
``rounds/evictions``           sessions: mean caches evicted per round (``info["evictions"]``)
``rounds/evictions_per_episode``  sessions: the same times the episode's rounds
``rounds/kv_pool_used_fraction``  sessions: mean pool usage after the round
``eval/latency_s`` ...         the same for the deterministic policy on the fixed evaluation
                               seeds, plus ``eval/best_gap_to_jmsra_pct`` and the baselines'
                               ``eval/<expert>_latency_s``
=============================  ================================================================

With ``csi_delay > 0`` the training-round JMSRA figure is what JMSRA predicts from the (stale)
observation; the evaluation charges every policy on the true channel.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from jmsra_env import model
from jmsra_env.evaluation import SELECTION_SEED
from jmsra_env.solvers import solve

from . import checkpoint
from .envs import RoundRecorder, find_wrapper
from .evaluation import DEFAULT_EXPERTS, Comparison, LivePredictor, compare_with_experts, live_model_policy

__all__ = ["RoundMetricsCallback", "JMSRAEvalCallback", "AtomicCheckpointCallback", "policy_predict_fn"]


class RoundMetricsCallback(BaseCallback):
    """Log the training rounds' latency, gap to JMSRA, KV share and capped rate each rollout."""

    def __init__(self, config, verbose: int = 0):
        super().__init__(verbose)
        self.consts = model.model_constants(config)
        self.episode_rounds = int(config.episode_rounds)
        self.session = bool(config.session.enabled)
        self.history: list[dict[str, float]] = []
        self._recorder: RoundRecorder | None = None

    def _init_callback(self) -> None:
        self._recorder = find_wrapper(self.training_env, RoundRecorder)
        if self._recorder is None:
            raise ValueError("RoundMetricsCallback needs a training env built by jmsra_agents.envs.make_train_env")
        self._recorder.pop()  # forget rounds from before training

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        data = self._recorder.pop()
        if data is None:
            return
        t0 = time.perf_counter()
        jmsra = solve("jmsra", model.terms_from_observation(self.consts, data["obs"])).latency_s
        solve_s = time.perf_counter() - t0
        lat = float(np.mean(data["latency_s"]))
        ref = float(np.mean(jmsra))
        row = {
            "timesteps": int(self.num_timesteps),
            "latency_s": lat,
            "jmsra_latency_s": ref,
            "gap_to_jmsra_pct": 100.0 * (lat / ref - 1.0),
            "kv_share": float(np.nanmean(data["kv_share"])),
            "capped_rate": float(np.mean(data["capped"])),
        }
        if self.session:  # the recorder keeps the session's info on a session scenario
            row["evictions"] = float(np.mean(data["evictions"]))
            row["evictions_per_episode"] = row["evictions"] * self.episode_rounds
            row["kv_pool_used_fraction"] = float(np.mean(data["kv_pool_used_fraction"]))
        self.history.append(row)
        for key in row:
            if key != "timesteps":
                self.logger.record(f"rounds/{key}", row[key])
        self.logger.record("time/jmsra_batch_solve_s", solve_s)


def policy_predict_fn(
    model_, vecnormalize, consts, features: str, encoding: str, session: bool | None = None
) -> Callable:
    """``predict(raw batched obs) -> env Box actions`` for a model and its (live) normalisation
    (``session``: the scenario's ``config.session.enabled``)."""
    predictor = LivePredictor(model_, vecnormalize, consts, features, encoding, session)
    return lambda obs: predictor.predict(obs)[0]


class JMSRAEvalCallback(BaseCallback):
    """Every ``eval_freq`` steps, charge the deterministic policy and the experts on fixed seeds.

    The evaluation is :func:`jmsra_agents.evaluation.compare_with_experts` (the core and statistics of
    ``evaluate.py``) on the episodes ``seeds`` (consecutive, default
    :data:`jmsra_env.evaluation.SELECTION_SEED` +). Keeps ``best_model.zip`` + ``best_vecnormalize.pkl``
    (lowest mean latency) in ``run_dir`` and the learning curve in ``evaluations.json``. The
    experts are solved once (the rounds are the same every time).
    """

    def __init__(
        self,
        env_id: str,
        config_overrides: Mapping[str, Any] | None,
        config,
        features: str,
        encoding: str,
        eval_freq: int,
        run_dir: str | Path | None,
        seeds: Sequence[int] = tuple(range(SELECTION_SEED, SELECTION_SEED + 8)),
        experts: Sequence[str] = DEFAULT_EXPERTS,
        verbose: int = 0,
        print_fn: Callable[[str], None] | None = None,
    ):
        super().__init__(verbose)
        seeds = [int(s) for s in seeds]
        if not seeds or seeds != list(range(seeds[0], seeds[0] + len(seeds))):
            raise ValueError(f"seeds must be consecutive episode seeds (one or more); got {seeds}")
        self.env_id = env_id
        self.config_overrides = dict(config_overrides or {})
        self.config = config
        self.features = features
        self.encoding = encoding
        self.eval_freq = int(eval_freq)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.seeds = seeds
        self.experts = list(experts)
        self.print_fn = print_fn
        self.history: list[dict[str, float]] = []
        self.best_latency_s = np.inf
        self._expert_results: list | None = None
        self._last_bucket = 0
        self._load_history()

    def _load_history(self) -> None:
        """A resumed run keeps its learning curve and only replaces a best model that is beaten."""
        path = self.run_dir / "evaluations.json" if self.run_dir is not None else None
        if path is None or not path.is_file():
            return
        try:
            rows = json.loads(path.read_text()).get("evaluations", [])
        except (OSError, ValueError):
            return
        self.history = [r for r in rows if isinstance(r, dict) and "latency_s" in r]
        if self.history and (self.run_dir / checkpoint.BEST_MODEL_FILE).is_file():
            self.best_latency_s = min(float(r["latency_s"]) for r in self.history)

    def _init_callback(self) -> None:
        steps = self.model.num_timesteps  # (self.num_timesteps is only updated on the first step)
        self._last_bucket = steps // self.eval_freq if self.eval_freq > 0 else 0
        # resumed from an earlier checkpoint: the curve continues from there
        self.history = [r for r in self.history if r.get("timesteps", 0) <= steps]

    def _on_step(self) -> bool:
        if self.eval_freq > 0 and self.num_timesteps // self.eval_freq > self._last_bucket:
            self._last_bucket = self.num_timesteps // self.eval_freq
            self.evaluate()
        return True

    def evaluate(self) -> Comparison:
        vn = self.model.get_vec_normalize_env()
        policy = live_model_policy(self.model, vn, self.config, self.features, self.encoding, label="ppo")
        res = compare_with_experts(
            self.env_id, self.config_overrides, [policy], experts=self.experts,
            episodes=len(self.seeds), seed=self.seeds[0], expert_results=self._expert_results,
        )
        self._expert_results = [r for r in res.results if r.label != "ppo"]
        ppo = res.row("ppo")
        lat = float(ppo["mean_latency_s"])
        row = {
            "timesteps": int(self.num_timesteps),
            "latency_s": lat,
            "gap_to_jmsra_pct": float(ppo["gap_pct"]),
            "kv_share": float(ppo["kv_share"]),
            "capped_rate": float(ppo["capped_rate"]),
        }
        for k in self.experts:
            row[f"{k}_latency_s"] = res.mean(k)
        improved = lat < self.best_latency_s
        if improved:
            self.best_latency_s = lat
            if self.run_dir is not None:
                checkpoint.save_model_files(
                    self.run_dir, self.model, vn, None,
                    model_file=checkpoint.BEST_MODEL_FILE, vecnorm_file=checkpoint.BEST_VECNORM_FILE,
                )
        row["best"] = bool(improved)
        self.history.append(row)
        for key in ("latency_s", "gap_to_jmsra_pct", "kv_share", "capped_rate"):
            self.logger.record(f"eval/{key}", row[key])
        ref = res.mean(ppo["reference"])
        self.logger.record("eval/best_gap_to_jmsra_pct", 100.0 * (self.best_latency_s / ref - 1.0))
        for k in self.experts:
            self.logger.record(f"eval/{k.replace('-', '_')}_latency_s", row[f"{k}_latency_s"])
        if self.run_dir is not None:
            checkpoint.atomic_write_bytes(
                self.run_dir / "evaluations.json", checkpoint._json_bytes({"evaluations": self.history})
            )
        if self.print_fn is not None:
            self.print_fn(
                f"[eval @ {self.num_timesteps:>9,d} steps] latency {lat:.4f} s, "
                f"gap to JMSRA {row['gap_to_jmsra_pct']:+.2f} %{' (best)' if improved else ''}"
            )
        return res


class AtomicCheckpointCallback(BaseCallback):
    """Every ``save_freq`` steps write ``checkpoints/ckpt_<steps>_steps/`` (see :mod:`jmsra_agents.checkpoint`)."""

    def __init__(self, run_dir: str | Path, save_freq: int, run_info_fn: Callable[[str], dict], verbose: int = 0):
        super().__init__(verbose)
        self.run_dir = Path(run_dir)
        self.save_freq = int(save_freq)
        self.run_info_fn = run_info_fn
        self.saved: list[Path] = []
        self._last_bucket = 0

    def _init_callback(self) -> None:
        steps = self.model.num_timesteps
        self._last_bucket = steps // self.save_freq if self.save_freq > 0 else 0

    def _on_step(self) -> bool:
        if self.save_freq > 0 and self.num_timesteps // self.save_freq > self._last_bucket:
            self._last_bucket = self.num_timesteps // self.save_freq
            vn = self.model.get_vec_normalize_env()
            path = checkpoint.save_checkpoint(self.run_dir, self.model, vn, self.run_info_fn("checkpoint"))
            self.saved.append(path)
        return True
