"""The stale-aware expert: the decision with the least *expected* latency given a stale channel.

With ``csi_delay = k > 0`` a policy sees each agent's full-band SNR of ``k`` rounds ago and is
charged on today's. That SNR mixes three hidden processes of the world (:mod:`jmsra_env.world`):
the path loss of a distance that walks, the shadowing (AR(1) in dB) and the Rayleigh fading
(Gauss-Markov); everything else the observation shows (devices, loads, context and summary
lengths) is exact. Given the observation, today's SNR is a random variable, and the policy that
minimises the round's expected latency is the best any policy deciding on that observation can
do (the world does not depend on the decisions, so the best policy is myopic).

:class:`ChannelPosterior` draws today's SNR given what was seen: particles of the hidden state
behind an observed SNR (the stationary laws of the three processes, weighted by the shadowing
that the observation then implies), advanced ``k`` rounds by the world's own transitions. Every
agent's channel is independent of the others'. :meth:`ChannelPosterior.filter_step` extends the
particles by one more observation, for a policy that keeps the history of an episode
(benchmarks/stale_bound.py measures what that adds).

:func:`stale_aware` then solves the sample-average problem: for every media vector (all ``2^N``
up to :data:`MAX_ENUMERATED_AGENTS` agents, else JMSRA's media on the certainty-equivalent
channels) the (P2) split on certainty-equivalent channels (per-agent quantiles of the samples, and
the observed channel itself), scored by the mean latency over the samples (:func:`expected_latency`,
i.e. :func:`jmsra_env.model.latency`, capped as the environment charges); the best few media are
then refined by a pattern search that moves bandwidth between pairs of agents. The split hedges: an
agent whose channel may have faded gets more than (P2) on the stale SNR gives it.

:class:`StaleAwarePolicy` is the policy (``make_policy("stale-aware", env)``); with
``csi_delay = 0`` it is the exact optimum.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from . import model
from .bandwidth import optimal_bandwidth
from .config import ScenarioConfig
from .expert_policy import ExpertPolicy
from .solvers import Decision, jmsra, solve
from .world import SNR_MAX_DB, SNR_MIN_DB, fold_distance_m

__all__ = [
    "STALE_AWARE",
    "MAX_ENUMERATED_AGENTS",
    "ChannelPosterior",
    "Particles",
    "resample",
    "expected_latency",
    "stale_aware",
    "StaleAwarePolicy",
]

STALE_AWARE = "stale-aware"
# Up to this N every media vector is scored; above, JMSRA's media on the certainty-equivalent rounds.
MAX_ENUMERATED_AGENTS = 6
DEFAULT_SAMPLES = 128  # draws of today's channel per round (posterior-expected gap: see docs/experts.md)
_PARTICLES_PER_SAMPLE = 8  # weighted particles behind an observation per draw kept
_QUANTILES = (0.02, 0.05, 0.1, 0.2, 0.35, 0.5)  # certainty-equivalent channels of the first stage
_KEEP_MEDIA = 3  # media vectors refined by the pattern search
_START_STEP = 0.05  # first move of the pattern search, as a share of the band
_STOP_STEP = 1e-5  # ... and the smallest one
_BLOCK_ELEMENTS = 1 << 20  # rows x candidates x samples x agents per latency evaluation
_SQRT_HALF = math.sqrt(0.5)


@dataclass
class Particles:
    """Hypotheses of one agent's hidden channel state (arrays of one shape)."""

    distance_m: np.ndarray
    shadowing_db: np.ndarray
    fading: np.ndarray  # complex, unit mean power


class ChannelPosterior:
    """Today's full-band SNR given stale observations, for a scenario's channel."""

    def __init__(self, cfg: ScenarioConfig):
        ch = cfg.channel
        self.delay = cfg.csi_delay
        self.distance_min_m, self.distance_max_m = ch.distance_min_m, ch.distance_max_m
        self.step_m = ch.speed_mps * cfg.round_interval_s
        self.shadowing_sigma_db = ch.shadowing_sigma_db
        self.rho_s, self.rho_h = cfg.shadowing_correlation, cfg.fading_correlation
        self.innov_s = math.sqrt(max(0.0, 1.0 - self.rho_s**2)) * ch.shadowing_sigma_db
        self.innov_h = math.sqrt(max(0.0, 1.0 - self.rho_h**2)) * _SQRT_HALF
        self._snr_args = (
            ch.tx_power_dbm, ch.noise_psd_dbm_per_hz + ch.noise_figure_db, ch.bandwidth_hz,
            ch.pathloss_const_db, ch.pathloss_exponent_db,
        )

    def snr_db(self, p: Particles) -> np.ndarray:
        """The full-band SNR (dB) of particles, as the world computes and clips it."""
        power = np.maximum(p.fading.real**2 + p.fading.imag**2, 1e-300)
        snr = model.full_band_snr_db(p.distance_m, p.shadowing_db, power, *self._snr_args)
        return np.clip(snr, SNR_MIN_DB, SNR_MAX_DB)

    def _implied_shadowing_db(self, distance_m, fading, snr_obs_db) -> np.ndarray:
        """The shadowing that makes ``snr_db`` equal the observed SNR (dB enters linearly)."""
        power = np.maximum(fading.real**2 + fading.imag**2, 1e-300)
        return model.full_band_snr_db(distance_m, 0.0, power, *self._snr_args) - snr_obs_db

    def _fading_step(self, rng, fading):
        noise = rng.standard_normal((2, *fading.shape)) * self.innov_h
        return self.rho_h * fading + (noise[0] + 1j * noise[1])

    def _distance_step(self, rng, distance_m):
        walk = distance_m + self.step_m * rng.standard_normal(distance_m.shape)
        return fold_distance_m(walk, self.distance_min_m, self.distance_max_m)

    def particles(self, rng: np.random.Generator, snr_obs_db, n: int) -> tuple[Particles, np.ndarray]:
        """``n`` weighted particles of the state behind each observed SNR (``(...,)`` -> ``(..., n)``)
        and their log weights: distance and fading from their stationary laws (uniform, CN(0, 1)),
        the shadowing the observation then implies, weighted by its N(0, sigma^2) density."""
        y = np.asarray(snr_obs_db, dtype=np.float64)[..., None]
        shape = (*y.shape[:-1], n)
        d = self.distance_min_m + (self.distance_max_m - self.distance_min_m) * rng.random(shape)
        z = rng.standard_normal((2, *shape)) * _SQRT_HALF
        h = z[0] + 1j * z[1]
        x = self._implied_shadowing_db(d, h, y)
        return Particles(d, x, h), -0.5 * (x / self.shadowing_sigma_db) ** 2

    def advance(self, rng: np.random.Generator, p: Particles) -> Particles:
        """One round of the world's processes (distance walk, shadowing AR(1), fading Gauss-Markov)."""
        x = self.rho_s * p.shadowing_db + self.innov_s * rng.standard_normal(p.shadowing_db.shape)
        return Particles(self._distance_step(rng, p.distance_m), x, self._fading_step(rng, p.fading))

    def filter_step(self, rng: np.random.Generator, p: Particles, snr_obs_db) -> tuple[Particles, np.ndarray]:
        """Particles (equally weighted, ``(..., n)``) of the last observed round moved to the next
        observation: distance and fading advanced, the shadowing implied by the observation, weighted
        by its AR(1) transition density from the particle's previous shadowing."""
        d = self._distance_step(rng, p.distance_m)
        h = self._fading_step(rng, p.fading)
        x = self._implied_shadowing_db(d, h, np.asarray(snr_obs_db, dtype=np.float64)[..., None])
        if self.innov_s > 0.0:
            logw = -0.5 * ((x - self.rho_s * p.shadowing_db) / self.innov_s) ** 2
        else:  # a frozen shadowing: only the particles that keep it (to rounding) survive
            logw = np.where(np.abs(x - p.shadowing_db) <= 1e-9 * (1.0 + np.abs(x)), 0.0, -np.inf)
        return Particles(d, x, h), logw

    def predict_snr_db(self, rng: np.random.Generator, p: Particles) -> np.ndarray:
        """Today's SNR of particles of the last observed round (``csi_delay`` rounds on)."""
        for _ in range(self.delay):
            p = self.advance(rng, p)
        return self.snr_db(p)

    def sample_snr_db(self, rng: np.random.Generator, snr_obs_db, n_samples: int) -> np.ndarray:
        """``n_samples`` draws of today's SNR given only the observed one: ``(..., N)`` ->
        ``(..., n_samples, N)``."""
        y = np.asarray(snr_obs_db, dtype=np.float64)
        p, logw = self.particles(rng, y, _PARTICLES_PER_SAMPLE * n_samples)
        idx = resample(rng, logw, n_samples)
        kept = Particles(*(np.take_along_axis(a, idx, axis=-1) for a in (p.distance_m, p.shadowing_db, p.fading)))
        return np.moveaxis(self.predict_snr_db(rng, kept), -1, -2)


def resample(rng: np.random.Generator, logw, n: int) -> np.ndarray:
    """Systematic resampling: ``n`` indices per row of log weights ``(..., P)`` -> ``(..., n)``,
    in random order."""
    logw = np.asarray(logw, dtype=np.float64)
    shape, P = logw.shape[:-1], logw.shape[-1]
    w = np.exp(logw.reshape(-1, P) - logw.reshape(-1, P).max(axis=1, keepdims=True))
    c = np.cumsum(w, axis=1)
    c /= c[:, -1:]
    rows = c.shape[0]
    off = 2.0 * np.arange(rows)[:, None]  # rows side by side on one sorted axis
    u = (rng.random((rows, 1)) + np.arange(n)) / n
    idx = np.searchsorted((c + off).ravel(), (u + off).ravel()).reshape(rows, n) - (P * np.arange(rows))[:, None]
    idx = np.clip(idx, 0, P - 1)
    idx = np.take_along_axis(idx, rng.permuted(np.broadcast_to(np.arange(n), (rows, n)), axis=1), axis=1)
    return idx.reshape(*shape, n)


# ---------------------------------------------------------------------------------------------
# The sample-average problem


def expected_latency(terms: model.RoundTerms, gain_samples_hz, media, bandwidth_hz) -> np.ndarray:
    """Mean charged latency of candidate decisions over channel samples.

    ``terms``: rounds ``(R, N)`` (their ``gain_hz`` is not used); ``gain_samples_hz``: ``(R, K, N)``;
    ``media``, ``bandwidth_hz``: ``(R, C, N)`` candidates per round. Returns ``(R, C)``: the mean over
    the ``K`` samples of :func:`jmsra_env.model.latency` (capped), in blocks of bounded memory.
    """
    g = np.asarray(gain_samples_hz, dtype=np.float64)
    media = np.asarray(media)
    b = np.asarray(bandwidth_hz, dtype=np.float64)
    R, K, N = g.shape
    C = media.shape[1]
    out = np.empty((R, C))
    step = max(1, _BLOCK_ELEMENTS // max(1, C * K * N))
    for lo in range(0, R, step):
        sl = slice(lo, lo + step)
        t = terms[sl]

        def ex(a):
            return np.asarray(a)[:, None, None]

        sample_terms = model.RoundTerms(
            ex(t.prefill_s), ex(t.extra_compute_s), ex(t.payload_bits), ex(t.receiver_s), ex(t.answer_s),
            g[sl, None], t.bandwidth_hz, t.latency_cap_s,
        )
        out[sl] = model.latency(sample_terms, media[sl, :, None], b[sl, :, None]).latency_s.mean(axis=-1)
    return out


def _all_media(n: int) -> np.ndarray:
    return ((np.arange(1 << n)[:, None] >> np.arange(n)) & 1).astype(np.int8)


def _with_gain(terms: model.RoundTerms, gain_hz, copies: int) -> model.RoundTerms:
    """``terms`` (R, N) with channel ``gain_hz`` (R, N), repeated ``copies`` times: (R, copies, N)."""

    def rep(a):
        a = np.asarray(a)
        return np.broadcast_to(a[:, None], (a.shape[0], copies, *a.shape[1:]))

    return model.RoundTerms(
        rep(terms.prefill_s), rep(terms.extra_compute_s), rep(terms.payload_bits), rep(terms.receiver_s),
        rep(terms.answer_s), rep(gain_hz), terms.bandwidth_hz, terms.latency_cap_s,
    )


def _candidate_media(terms: model.RoundTerms, quantile_gains: list[np.ndarray]) -> np.ndarray:
    """``(R, C, N)`` media vectors to score: all of them up to MAX_ENUMERATED_AGENTS agents, else
    JMSRA's on each certainty-equivalent round."""
    R, n = terms.prefill_s.shape
    if n <= MAX_ENUMERATED_AGENTS:
        return np.broadcast_to(_all_media(n), (R, 1 << n, n))
    picks = [jmsra(_with_gain(terms, g, 1)[:, 0]).media for g in quantile_gains]
    return np.stack(picks, axis=1).astype(np.int8)


def _pattern_search(terms, g, media, b, value):
    """Refine splits ``b`` (S, N) of fixed ``media`` (S, N) on rows of ``terms`` / samples ``g``:
    move a share of the band from one agent to another while that lowers the expected latency,
    halving the move when none does."""
    S, N = b.shape
    B = terms.bandwidth_hz
    pairs = [(i, j) for i in range(N) for j in range(N) if i != j]
    step = np.full(S, _START_STEP)
    active = np.arange(S)
    while active.size:
        ba = b[active]
        cands = np.repeat(ba[:, None], len(pairs), axis=1)
        for p, (i, j) in enumerate(pairs):
            move = np.minimum(step[active] * B, 0.5 * ba[:, j])
            cands[:, p, i] += move
            cands[:, p, j] -= move
        mx = np.broadcast_to(media[active, None], cands.shape)
        cv = expected_latency(terms[active], g[active], mx, cands)
        k = np.argmin(cv, axis=1)
        best = cv[np.arange(active.size), k]
        better = best < value[active] * (1.0 - 1e-12)
        up = active[better]
        b[up] = cands[better, k[better]]
        value[up] = best[better]
        step[active[~better]] *= 0.5
        active = active[step[active] >= _STOP_STEP]
    return b, value


def stale_aware(terms: model.RoundTerms, gain_samples_hz, *, keep: int = _KEEP_MEDIA) -> tuple[Decision, np.ndarray]:
    """The decision with the least mean latency over channel samples, for a batch of rounds.

    ``terms``: the observed rounds ``(M, N)``; ``gain_samples_hz``: ``(M, K, N)`` draws of today's
    channel gain (Hz). Among the candidates are the (P2) splits on the observed channel, so the
    decision's mean over the samples is never above that of JMSRA's (up to
    :data:`MAX_ENUMERATED_AGENTS` agents, the optimum's) decision on the observed round. Returns
    the :class:`~jmsra_env.solvers.Decision` (its ``latency_s`` is the mean over the samples, the
    expected latency the expert predicts) and that expected latency again as an array ``(M,)``.
    """
    g = np.asarray(gain_samples_hz, dtype=np.float64)
    M, K, N = g.shape
    B = terms.bandwidth_hz
    # the observed channel too: JMSRA's (and up to MAX_ENUMERATED_AGENTS the optimum's) decision on
    # the stale round is a candidate
    quantile_gains = [*np.quantile(g, _QUANTILES, axis=1), np.asarray(terms.gain_hz, dtype=np.float64)]
    media = _candidate_media(terms, quantile_gains)
    C = media.shape[1]
    best_v = np.full((M, C), np.inf)
    best_b = np.broadcast_to(np.full(N, B / N), (M, C, N)).copy()
    for gq in quantile_gains:
        b, _ = optimal_bandwidth(_with_gain(terms, gq, C), media)
        v = expected_latency(terms, g, media, b)
        better = v < best_v
        best_v = np.where(better, v, best_v)
        best_b = np.where(better[..., None], b, best_b)
    keep = min(keep, C)
    order = np.argsort(best_v, axis=1, kind="stable")[:, :keep]
    rows = np.repeat(np.arange(M), keep)
    x = np.take_along_axis(media, order[..., None], axis=1).reshape(M * keep, N)
    b = np.take_along_axis(best_b, order[..., None], axis=1).reshape(M * keep, N)
    v = np.take_along_axis(best_v, order, axis=1).reshape(M * keep)
    b, v = _pattern_search(terms[rows], g[rows], x, b, v)
    j = np.argmin(v.reshape(M, keep), axis=1)
    pick = np.arange(M) * keep + j
    bw = b[pick]
    bw *= B / bw.sum(axis=-1, keepdims=True)
    return Decision(x[pick], bw, v[pick]), v[pick]


# ---------------------------------------------------------------------------------------------
# The policy


class StaleAwarePolicy(ExpertPolicy):
    """The stale-aware expert as a policy (``make_policy("stale-aware", env)``).

    Each round it draws ``samples`` channels from :class:`ChannelPosterior` given the observation
    (with its own generator: ``seed``, and ``reset(config, seed)`` before an evaluation) and
    returns :func:`stale_aware`'s decision. Memoryless: it decides on the current observation only,
    like the other experts. With ``csi_delay = 0`` it is the exact optimum (``optimal``).
    """

    def __init__(
        self,
        config: ScenarioConfig,
        action_form: str = "dict",
        seed: int | None = None,
        *,
        samples: int = DEFAULT_SAMPLES,
        action_encoding: str | None = None,
    ):
        if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
            raise ValueError(f"samples must be an integer >= 1; got {samples!r}")
        super().__init__("jmsra", config, action_form, seed, action_encoding=action_encoding)
        self.name = STALE_AWARE
        self.samples = int(samples)
        self.posterior = ChannelPosterior(config)

    def __repr__(self) -> str:
        cfg = self.config
        return f"StaleAwarePolicy(n_agents={cfg.n_agents}, csi_delay={cfg.csi_delay}, samples={self.samples})"

    @property
    def kind(self) -> str:
        return "expert"

    def reset(self, config: ScenarioConfig | None = None, seed: int | None = None) -> None:
        if config is not None and config != self.config:
            self.posterior = ChannelPosterior(config)
        super().reset(config, seed)

    def decide(self, obs: Mapping, true_terms: model.RoundTerms | None = None) -> Decision:
        terms = self.observed_terms(obs)
        if self.config.csi_delay == 0:
            return solve("optimal", terms)
        single = terms.batch_shape == ()
        if single:
            terms = terms[None]
        elif len(terms.batch_shape) != 1:
            raise ValueError(f"obs must be one observation or a batch (M, N); got batch shape {terms.batch_shape}")
        snr = np.asarray(obs["snr_db"], dtype=np.float64).reshape(-1, self.config.n_agents)
        samples = self.posterior.sample_snr_db(self.rng, snr, self.samples)
        d, _ = stale_aware(terms, model.gain_hz_from_snr_db(samples, self.config.channel.bandwidth_hz))
        if single:
            return Decision(d.media[0], d.bandwidth_hz[0], d.latency_s[0])
        return d
