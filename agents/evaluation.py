"""Evaluate policies against the experts on the same seeded rounds (common random numbers).

The rounds of a JMSRA environment do not depend on the actions taken, so one pass over fixed seeds
yields a set of rounds on which every policy is charged. The first learned policy drives the real
environments (its reward is the charged latency); every other policy's decision on the same
observation is charged on the same *true* round terms with :func:`jmsra_env.model.latency`, the
function the environment itself charges with. With ``csi_delay > 0`` the experts decide on the
stale observation and are charged on the true channel, exactly as in the environment.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from jmsra_env import actions, model

from .envs import box_env_id, scenario_config

__all__ = ["EvalResult", "collect_rounds", "evaluate_policies", "format_table", "DEFAULT_EXPERTS"]

DEFAULT_EXPERTS = ("jmsra", "nl-only", "kv-only")

PredictFn = Callable[[Mapping[str, np.ndarray]], np.ndarray]


@dataclass
class EvalResult:
    """Per-policy latencies on the same rounds; ``rows()`` gives the summary table."""

    latency_s: dict[str, np.ndarray]
    capped: dict[str, np.ndarray]
    kv_share: dict[str, np.ndarray]
    n_rounds: int
    seeds: list[int]
    reference: str = "jmsra"
    charged_latency_s: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def mean(self, name: str) -> float:
        return float(np.mean(self.latency_s[name]))

    def gap_pct(self, name: str, reference: str | None = None) -> float:
        """``100 (mean latency / reference mean latency - 1)`` on the same rounds."""
        ref = self.mean(reference or self.reference)
        return 100.0 * (self.mean(name) / ref - 1.0)

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for name, lat in self.latency_s.items():
            out.append(
                {
                    "policy": name,
                    "mean_latency_s": float(np.mean(lat)),
                    "p95_latency_s": float(np.percentile(lat, 95)),
                    f"gap_to_{self.reference}_pct": self.gap_pct(name),
                    "kv_share": float(np.mean(self.kv_share[name])),
                    "capped_rate": float(np.mean(self.capped[name])),
                }
            )
        return out


def collect_rounds(
    env_id: str,
    config: Mapping[str, Any] | None,
    seeds: Sequence[int],
    n_rounds: int,
    driver: PredictFn | None = None,
    learned: Mapping[str, PredictFn] | None = None,
):
    """Step one raw env per seed for ``n_rounds`` rounds; return observations, true terms, actions.

    ``driver`` picks the actions that step the envs (default: equal split, all NL); its charged
    latencies come back as ``charged``. ``learned`` policies also decide on every observation.
    """
    box_id = box_env_id(env_id)
    envs = [gym.make(box_id, config=dict(config or {})) for _ in seeds]
    obs_list = [env.reset(seed=int(s))[0] for env, s in zip(envs, seeds)]
    n = envs[0].unwrapped.config.n_agents
    all_obs, all_terms, charged = [], [], []
    learned = dict(learned or {})
    acts: dict[str, list[np.ndarray]] = {k: [] for k in learned}
    for _ in range(n_rounds):
        obs = {k: np.stack([o[k] for o in obs_list]) for k in obs_list[0]}
        terms = model.concat_terms([env.unwrapped.current_terms()[None] for env in envs])
        for name, fn in learned.items():
            acts[name].append(np.asarray(fn(obs), dtype=np.float64).reshape(len(envs), 2 * n))
        step_action = np.asarray(driver(obs)) if driver is not None else -np.ones((len(envs), 2 * n))
        # float64: the exact decision (a float32 cast would move the latency by up to ~4e-7)
        step_action = step_action.astype(np.float64).reshape(len(envs), 2 * n)
        lat = []
        for i, env in enumerate(envs):
            o, r, term, trunc, info = env.step(step_action[i])
            lat.append(info["latency_s"])
            if term or trunc:
                o, _ = env.reset()
            obs_list[i] = o
        all_obs.append(obs)
        all_terms.append(terms)
        charged.append(np.array(lat))
    for env in envs:
        env.close()
    obs = {k: np.concatenate([o[k] for o in all_obs]) for k in all_obs[0]}
    terms = model.RoundTerms(
        *(np.concatenate([getattr(t, f) for t in all_terms]) for f in
          ("prefill_s", "extra_compute_s", "payload_bits", "receiver_s", "answer_s", "gain_hz")),
        all_terms[0].bandwidth_hz,
        all_terms[0].latency_cap_s,
    )
    actions_ = {k: np.concatenate(v) for k, v in acts.items()}
    return obs, terms, actions_, np.concatenate(charged)


def evaluate_policies(
    env_id: str,
    config: Mapping[str, Any] | None,
    learned: Mapping[str, PredictFn],
    *,
    experts: Sequence[str] = DEFAULT_EXPERTS,
    seeds: Sequence[int] = tuple(range(10_000, 10_008)),
    n_rounds: int | None = None,
    reference: str = "jmsra",
) -> EvalResult:
    """Charge every learned policy and expert on the same rounds of ``len(seeds)`` episodes.

    ``learned`` maps names to ``predict(batched raw obs) -> Box actions``; the first one drives
    the environments. ``n_rounds`` per seed defaults to one episode.
    """
    from jmsra_env.solvers import solve

    cfg = scenario_config(box_env_id(env_id), config)
    consts = model.model_constants(cfg)
    n_rounds = cfg.episode_rounds if n_rounds is None else int(n_rounds)
    names = list(learned)
    driver = learned[names[0]] if names else None
    obs, terms, acts, charged = collect_rounds(env_id, config, seeds, n_rounds, driver, learned)
    lat, capped, kv = {}, {}, {}
    for name in names:
        media, bw = actions.decode_box(np.clip(acts[name], -1.0, 1.0), model.terms_from_observation(consts, obs))
        br = model.latency(terms, media, bw)
        lat[name], capped[name], kv[name] = br.latency_s, br.capped, media.mean(axis=-1)
    observed = model.terms_from_observation(consts, obs)
    for name in experts:
        if name in lat:
            continue
        d = solve(name, observed)
        br = model.latency(terms, d.media, d.bandwidth_hz)
        lat[name], capped[name], kv[name] = br.latency_s, br.capped, np.asarray(d.media).mean(axis=-1)
    if reference not in lat:
        reference = next(iter(lat))
    return EvalResult(lat, capped, kv, n_rounds=len(charged), seeds=list(seeds), reference=reference,
                      charged_latency_s=charged if names else None)


def format_table(result: EvalResult, title: str | None = None) -> str:
    """A plain-text table of :meth:`EvalResult.rows`."""
    ref = result.reference
    head = f"{'policy':<22}{'mean latency (s)':>18}{'p95 (s)':>10}{'gap to ' + ref:>16}{'KV share':>10}{'capped':>8}"
    lines = [title] if title else []
    lines += [head, "-" * len(head)]
    for r in result.rows():
        lines.append(
            f"{r['policy']:<22}{r['mean_latency_s']:>18.4f}{r['p95_latency_s']:>10.3f}"
            f"{r[f'gap_to_{ref}_pct']:>15.2f}%{r['kv_share']:>10.2f}{r['capped_rate']:>8.3f}"
        )
    lines.append(f"({result.n_rounds} rounds from seeds {result.seeds[0]}..{result.seeds[-1]})")
    return "\n".join(lines)
