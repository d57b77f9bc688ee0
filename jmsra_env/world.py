"""The world process: a seeded, batched generator of collaboration rounds (DESIGN.md section 2).

:class:`WorldProcess` holds the state of ``M`` independent worlds (``M = 1`` for the single
environment) as arrays of shape ``(M, N)`` and advances all of them with a handful of NumPy calls
drawing from one generator. The physics it calls lives in :mod:`jmsra_env.model`.

Per world and agent: distance (reflected random walk), log-normal shadowing (AR(1), Gudmundson),
Rayleigh fading (Gauss-Markov, Jakes by default), background load (clipped random walk), the
round's context length ``L`` and NL summary length ``K``; per world the receiver's load and, per
episode, each sender's device. The observed channel may be ``csi_delay`` rounds old.
"""

from __future__ import annotations

import math

import numpy as np

from . import model
from .config import ScenarioConfig

__all__ = ["WorldProcess", "OBS_KEYS", "SNR_MIN_DB", "SNR_MAX_DB"]

# The full-band SNR is kept in this range (a deep fade of -inf dB would make the observation
# unbounded); the clipped value is the one both observed and charged.
SNR_MIN_DB = -150.0
SNR_MAX_DB = 150.0

OBS_KEYS = (
    "snr_db",
    "compute_flops",
    "mem_bw_bytes_per_s",
    "load",
    "context_tokens",
    "nl_tokens",
    "receiver_load",
)

_SQRT_HALF = math.sqrt(0.5)


class WorldProcess:
    """``n_envs`` independent worlds of one scenario, advanced together."""

    def __init__(self, cfg: ScenarioConfig, n_envs: int = 1):
        if not isinstance(n_envs, int) or n_envs < 1:
            raise ValueError(f"n_envs must be an integer >= 1; got {n_envs!r}")
        self.cfg = cfg
        self.n_envs = n_envs
        self.n_agents = n = cfg.n_agents
        ch, wl = cfg.channel, cfg.workload
        devices = wl.sender_profiles
        self._dev_flops = np.array([d.peak_flops for d in devices], dtype=np.float64)
        self._dev_mem_bw = np.array([d.mem_bw_bytes_per_s for d in devices], dtype=np.float64)
        self._rho_h = cfg.fading_correlation
        self._rho_s = cfg.shadowing_correlation
        self._innov_h = math.sqrt(max(0.0, 1.0 - self._rho_h**2))
        self._innov_s = math.sqrt(max(0.0, 1.0 - self._rho_s**2)) * ch.shadowing_sigma_db
        self._step_m = ch.speed_mps * cfg.round_interval_s
        self._noise_dbm_per_hz = ch.noise_psd_dbm_per_hz + ch.noise_figure_db
        self._delay = cfg.csi_delay
        shape = (n_envs, n)
        self.distance_m = np.zeros(shape)
        self.shadowing_db = np.zeros(shape)
        self.fading_re = np.zeros(shape)
        self.fading_im = np.zeros(shape)
        self.load = np.zeros(shape)
        self.receiver_load = np.zeros(n_envs)
        self.device_index = np.zeros(shape, dtype=np.int64)
        self.context_tokens = np.zeros(shape)
        self.nl_tokens = np.zeros(shape)
        self.snr_db = np.zeros(shape)
        # snr_history[:, -1] is the current round, snr_history[:, 0] the one csi_delay rounds ago.
        self.snr_history = np.zeros((n_envs, self._delay + 1, n))

    # -- state transitions -------------------------------------------------------------------

    def reset(self, rng: np.random.Generator, mask: np.ndarray | None = None) -> None:
        """Draw a fresh episode for every world (or those where ``mask`` is true)."""
        idx = slice(None) if mask is None else np.flatnonzero(mask)
        k = self.n_envs if mask is None else idx.size
        if k == 0:
            return
        n, ch, wl = self.n_agents, self.cfg.channel, self.cfg.workload
        u = rng.random((k, 4, n))
        z = rng.standard_normal((k, 3, n))
        self.distance_m[idx] = ch.distance_min_m + (ch.distance_max_m - ch.distance_min_m) * u[:, 0]
        self.shadowing_db[idx] = ch.shadowing_sigma_db * z[:, 0]
        self.fading_re[idx] = _SQRT_HALF * z[:, 1]
        self.fading_im[idx] = _SQRT_HALF * z[:, 2]
        self.load[idx] = wl.load_max * u[:, 1]
        self.device_index[idx] = np.minimum(
            (u[:, 2] * len(self._dev_flops)).astype(np.int64), len(self._dev_flops) - 1
        )
        self.receiver_load[idx] = wl.load_max * rng.random(k)
        self._draw_workload(rng, idx, k)
        snr = self._snr_db(idx)
        self.snr_db[idx] = snr
        self.snr_history[idx] = snr[:, None, :]
        # Pre-roll the channel so that a stale observation is a genuine past value.
        for _ in range(self._delay):
            self._advance(rng, idx, k)

    def step(self, rng: np.random.Generator) -> None:
        """Advance every world by one round."""
        self._advance(rng, slice(None), self.n_envs)

    def _advance(self, rng: np.random.Generator, idx, k: int) -> None:
        n, ch, wl = self.n_agents, self.cfg.channel, self.cfg.workload
        z = rng.standard_normal((k, 5, n))
        zr = rng.standard_normal(k)
        # Distance: random walk at walking speed, reflected into [d_min, d_max].
        lo, hi = ch.distance_min_m, ch.distance_max_m
        width = hi - lo
        d = self.distance_m[idx] + self._step_m * z[:, 0]
        if width > 0.0:
            y = np.mod(d - lo, 2.0 * width)
            d = lo + np.where(y > width, 2.0 * width - y, y)
        else:
            d = np.full_like(d, lo)
        self.distance_m[idx] = d
        # Shadowing AR(1) and Gauss-Markov Rayleigh fading.
        self.shadowing_db[idx] = self._rho_s * self.shadowing_db[idx] + self._innov_s * z[:, 1]
        self.fading_re[idx] = self._rho_h * self.fading_re[idx] + self._innov_h * _SQRT_HALF * z[:, 2]
        self.fading_im[idx] = self._rho_h * self.fading_im[idx] + self._innov_h * _SQRT_HALF * z[:, 3]
        # Background loads: clipped random walks.
        self.load[idx] = np.clip(self.load[idx] + wl.load_step * z[:, 4], 0.0, wl.load_max)
        self.receiver_load[idx] = np.clip(self.receiver_load[idx] + wl.load_step * zr, 0.0, wl.load_max)
        self._draw_workload(rng, idx, k)
        snr = self._snr_db(idx)
        self.snr_db[idx] = snr
        if self._delay:
            hist = self.snr_history[idx]
            hist[:, :-1] = hist[:, 1:]
            hist[:, -1] = snr
            self.snr_history[idx] = hist

    def _draw_workload(self, rng: np.random.Generator, idx, k: int) -> None:
        n, wl = self.n_agents, self.cfg.workload
        u = rng.random((k, 2, n))
        span = wl.context_max_tokens - wl.context_min_tokens + 1
        ctx = wl.context_min_tokens + np.minimum(np.floor(u[:, 0] * span), span - 1)
        ratio = wl.nl_ratio_min + (wl.nl_ratio_max - wl.nl_ratio_min) * u[:, 1]
        self.context_tokens[idx] = ctx
        self.nl_tokens[idx] = model.nl_tokens(ctx, ratio)

    def _snr_db(self, idx) -> np.ndarray:
        ch = self.cfg.channel
        # Floor the fading power so that an exact zero maps to the SNR floor, not to -inf.
        power = np.maximum(self.fading_re[idx] ** 2 + self.fading_im[idx] ** 2, 1e-300)
        snr = model.full_band_snr_db(
            self.distance_m[idx],
            self.shadowing_db[idx],
            power,
            ch.tx_power_dbm,
            self._noise_dbm_per_hz,
            ch.bandwidth_hz,
            ch.pathloss_const_db,
            ch.pathloss_exponent_db,
        )
        return np.clip(snr, SNR_MIN_DB, SNR_MAX_DB)

    # -- views -------------------------------------------------------------------------------

    def observation(self) -> dict[str, np.ndarray]:
        """What the decision maker sees (fresh copies, batch axis first)."""
        dev = self.device_index
        return {
            "snr_db": self.snr_history[:, 0].copy() if self._delay else self.snr_db.copy(),
            "compute_flops": self._dev_flops[dev],
            "mem_bw_bytes_per_s": self._dev_mem_bw[dev],
            "load": self.load.copy(),
            "context_tokens": self.context_tokens.copy(),
            "nl_tokens": self.nl_tokens.copy(),
            "receiver_load": self.receiver_load[:, None].copy(),
        }

    def true_terms(self, consts: model.ModelConstants) -> model.RoundTerms:
        """The model terms of the current round with the *current* channel (what is charged)."""
        dev = self.device_index
        return model.round_terms(
            consts,
            self.snr_db,
            self._dev_flops[dev],
            self._dev_mem_bw[dev],
            self.load,
            self.context_tokens,
            self.nl_tokens,
            self.receiver_load,
        )
