"""How far below JMSRA can a policy that sees a stale channel get? (``JMSRA-StaleCSI-v0``)

    python benchmarks/stale_bound.py                          # the 32 held-out episodes (seeds 20000+)
    python benchmarks/stale_bound.py --episodes 256 --no-history
    python benchmarks/stale_bound.py --quick                  # 2 episodes, few samples: a smoke test

On the rounds ``evaluate.py`` charges (episode ``e`` is ``env.reset(seed=seed + e)``), side by side
and paired per episode against JMSRA:

* ``jmsra``: the myopic optimum on the stale SNR (the environment's reference);
* ``oracle``: the optimum on the true, fresh channel (a bound no causal policy reaches);
* ``stale-aware``: :class:`jmsra_env.stale.StaleAwarePolicy`, the decision with the least expected
  latency given the current observation (``--samples`` channel draws per round): the best a
  memoryless policy can do, to the sample-average approximation;
* ``stale-aware-history``: the same problem with today's channel drawn given *every* observation of
  the episode so far (a particle filter, :meth:`jmsra_env.stale.ChannelPosterior.filter_step`,
  ``--particles`` per agent): what a policy with memory could add.

Two figures per policy: the latency charged on the rounds' true channel (what ``evaluate.py``
reports), and the *posterior-expected* latency, the mean over ``--eval-samples`` fresh draws of
today's channel given the episode's history (independent of the draws the experts decided on). Both
estimate the same expectation; the second removes the noise of the channel draws (only the rounds'
workload varies), so its paired interval is tighter. The stale-aware experts' own sample mean at
their decision (``in-sample``) is biased low (the decision was fitted to those draws): together
with the posterior-expected figure it brackets the best expected latency of the information set
(the sample-average approximation's classical bounds).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from jmsra_env import model
from jmsra_env.evaluation import core, statistics
from jmsra_env.stale import ChannelPosterior, Particles, StaleAwarePolicy, expected_latency, resample, stale_aware

ENV_ID = "jmsra_env/JMSRA-StaleCSI-v0"


def history_draws(post: ChannelPosterior, rng, snr_obs, episodes: int, T: int, draws: tuple[int, ...], particles: int):
    """Draws of today's SNR given each episode's observations so far: one ``(M, k, N)`` array per
    ``k`` in ``draws`` (independent of each other), rounds episode-major like the evaluation's."""
    n = snr_obs.shape[-1]
    y = snr_obs.reshape(episodes, T, n)
    out = [np.empty((episodes, T, k, n)) for k in draws]
    ess = []
    for t in range(T):
        if t == 0:
            p, logw = post.particles(rng, y[:, 0], particles)
        else:
            p, logw = post.filter_step(rng, p, y[:, t])
        w = np.exp(logw - logw.max(axis=-1, keepdims=True))
        ess.append(float(np.mean(w.sum(-1) ** 2 / (w**2).sum(-1))) / particles)
        idx = resample(rng, logw, particles)
        p = Particles(*(np.take_along_axis(a, idx, axis=-1) for a in (p.distance_m, p.shadowing_db, p.fading)))
        for o, k in zip(out, draws):
            j = rng.integers(0, particles, (episodes, n, k))
            pick = Particles(*(np.take_along_axis(a, j, axis=-1) for a in (p.distance_m, p.shadowing_db, p.fading)))
            o[:, t] = np.moveaxis(post.predict_snr_db(rng, pick), -1, -2)
    return [o.reshape(episodes * T, k, n) for o, k in zip(out, draws)], float(np.mean(ess))


def pit_uniformity(draws_db: np.ndarray, true_db: np.ndarray) -> float:
    """Largest deviation from 1/10 of the deciles of the true SNR's rank among the draws (a
    calibrated posterior gives uniform ranks)."""
    k = draws_db.shape[1]
    rank = (draws_db < true_db[:, None, :]).sum(axis=1).reshape(-1)
    counts = np.bincount(rank, minlength=k + 1) / rank.size
    edges = np.linspace(0, k + 1, 11)
    dec = [counts[int(math.ceil(a)): int(math.ceil(b))].sum() for a, b in zip(edges[:-1], edges[1:])]
    return float(np.max(np.abs(np.array(dec) - 0.1)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=32)
    ap.add_argument("--seed", type=int, default=core.HELD_OUT_SEED)
    ap.add_argument("--samples", type=int, default=128, help="channel draws per round the experts decide on")
    ap.add_argument("--eval-samples", type=int, default=512,
                    help="fresh draws per round for the posterior-expected latency")
    ap.add_argument("--particles", type=int, default=2048, help="particles per agent of the history filter")
    ap.add_argument("--no-history", action="store_true", help="skip the expert with history")
    ap.add_argument("--quick", action="store_true", help="2 episodes, 16 samples (a smoke test)")
    args = ap.parse_args(argv)
    if args.quick:
        args.episodes, args.samples, args.eval_samples, args.particles = 2, 16, 32, 256
    cfg, _ = core.scenario_from_env_id(ENV_ID)
    E, T = args.episodes, cfg.episode_rounds
    rounds = core.draw_rounds(cfg, E, args.seed)
    observed = rounds.observed_terms()
    B = cfg.channel.bandwidth_hz
    print(f"{ENV_ID}: {E} episodes x {T} rounds from seed {args.seed}; csi_delay {cfg.csi_delay}, fading "
          f"correlation {cfg.fading_correlation}, shadowing correlation {cfg.shadowing_correlation:.4f}")

    results = core.evaluate_policies(rounds, [core.ExpertPolicy("jmsra", cfg), core.oracle_policy(cfg)],
                                     single_round_budget_s=0)
    media, bw, in_sample = {}, {}, {}
    d = core.ExpertPolicy("jmsra", cfg).decide(rounds.obs)
    media["jmsra"], bw["jmsra"] = np.asarray(d.media), np.asarray(d.bandwidth_hz)
    # the memoryless expert: what StaleAwarePolicy.decide does, in the evaluation's chunks (same draws)
    stale = StaleAwarePolicy(cfg, samples=args.samples)
    stale.reset(cfg, args.seed)
    t0 = time.perf_counter()
    parts = []
    for lo in range(0, rounds.n_rounds, core.CHUNK_ROUNDS):
        sl = slice(lo, lo + core.CHUNK_ROUNDS)
        own = stale.posterior.sample_snr_db(stale.rng, rounds.obs["snr_db"][sl], args.samples)
        parts.append(stale_aware(observed[sl], model.gain_hz_from_snr_db(own, B)))
    spent = time.perf_counter() - t0
    media["stale-aware"] = np.concatenate([p[0].media for p in parts])
    bw["stale-aware"] = np.concatenate([p[0].bandwidth_hz for p in parts])
    in_sample["stale-aware"] = np.concatenate([p[1] for p in parts])
    br = core.charge(rounds.terms, media["stale-aware"], bw["stale-aware"])
    results.append(core.PolicyResult("stale-aware", "expert", E, np.asarray(br.latency_s), np.asarray(br.capped),
                                     np.asarray(br.media), spent / rounds.n_rounds))

    rng = np.random.default_rng([args.seed, 1])
    post = ChannelPosterior(cfg)
    t0 = time.perf_counter()
    (hist_draws, eval_draws), ess = history_draws(
        post, rng, rounds.obs["snr_db"], E, T, (args.samples, args.eval_samples), args.particles
    )
    filter_s = time.perf_counter() - t0
    true_db = model.snr_db_from_gain_hz(rounds.terms.gain_hz, B)
    stale_db = post.sample_snr_db(np.random.default_rng([args.seed, 2]), rounds.obs["snr_db"], args.samples)
    rms = [np.sqrt(np.mean((x - true_db) ** 2)) for x in (np.median(stale_db, 1), np.median(hist_draws, 1),
                                                           rounds.obs["snr_db"])]
    pit = [pit_uniformity(x, true_db) for x in (stale_db, hist_draws)]
    print(f"channel draws: rms error of their median vs the true SNR {rms[0]:.2f} dB (memoryless), "
          f"{rms[1]:.2f} dB (history); the stale SNR itself {rms[2]:.2f} dB. Calibration (max decile deviation "
          f"of the true SNR's rank): {pit[0]:.4f} / {pit[1]:.4f}. Filter: mean ESS {ess:.2f} of the particles, "
          f"{filter_s:.1f} s")
    if not args.no_history:
        t0 = time.perf_counter()
        d, v = stale_aware(observed, model.gain_hz_from_snr_db(hist_draws, B))
        spent = time.perf_counter() - t0
        br = core.charge(rounds.terms, d.media, d.bandwidth_hz)
        results.append(core.PolicyResult("stale-aware-history", "expert", E, np.asarray(br.latency_s),
                                         np.asarray(br.capped), np.asarray(br.media), spent / rounds.n_rounds))
        media["stale-aware-history"], bw["stale-aware-history"] = np.asarray(d.media), np.asarray(d.bandwidth_hz)
        in_sample["stale-aware-history"] = v
    g_eval = model.gain_hz_from_snr_db(eval_draws, B)
    expected = {k: expected_latency(observed, g_eval, media[k][:, None], bw[k][:, None])[:, 0] for k in media}
    ref_ep = expected["jmsra"].reshape(E, -1).mean(1)
    print(f"\n{'policy':22s} {'charged [s]':>12s} {'gap (charged)':>16s} {'posterior-exp. [s]':>19s} "
          f"{'gap (post.-exp.)':>17s} {'in-sample gap':>14s} {'KV':>6s} {'capped':>7s} {'ms/round':>9s}")
    rows = statistics.summarise(results, reference="jmsra")
    for r, res in zip(rows, results):
        label = r["policy"]
        line = f"{label:22s} {r['mean_latency_s']:12.4f} {r['gap_pct']:+8.2f} ± {r['gap_ci95_pct']:5.2f}"
        if label in expected:
            diff = expected[label].reshape(E, -1).mean(1) - ref_ep
            gap, hw = 100 * diff.mean() / ref_ep.mean(), 100 * statistics.t_halfwidth(diff) / ref_ep.mean()
            line += f" {expected[label].mean():19.4f} {gap:+9.2f} ± {hw:5.2f}"
        else:
            line += " " * 37
        if label in in_sample:
            line += f" {100 * (in_sample[label].mean() / ref_ep.mean() - 1):+14.2f}"
        else:
            line += " " * 15
        line += f" {r['kv_share']:6.3f} {r['capped_rate']:7.4f} {1e3 * res.decision_s_per_round:9.3f}"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
