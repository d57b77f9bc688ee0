"""The world process: a seeded, batched generator of collaboration rounds (docs/model.md).

:class:`WorldProcess` holds ``M`` independent worlds (``M = 1`` for the single environment) and
draws their rounds in *chunks* (by default a whole episode, its 65 observed rounds, at a time),
with a handful of NumPy calls over arrays of shape ``(M, rounds, N)`` and one generator. Actions
never influence the world, so drawing ahead is exact; it is what makes a step cheap. The physics it calls lives in
:mod:`jmsra_env.model`.

Per world and agent: distance (random walk at walking speed, folded into ``[d_min, d_max]``),
log-normal shadowing (AR(1), Gudmundson), Rayleigh fading (Gauss-Markov, Jakes by default),
background load (clipped random walk), the round's context length ``L`` and NL summary length
``K``; per world the receiver's load and, per episode, each sender's device. The observed channel
is ``csi_delay`` rounds old (the process is pre-rolled so that those rounds exist at reset).
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
_MAX_CHUNK_ROUNDS = 128
_CHUNK_BUDGET = 1 << 19  # rounds x agents x worlds held per chunk (bounds memory at large M)



def _default_chunk_rounds(episode_rounds: int, width: int) -> int:
    """Equal chunks that cover an episode's ``E + 1`` rounds (its last observation included)
    within the memory budget, so the reset after truncation discards (almost) nothing drawn."""
    cap = max(1, min(_MAX_CHUNK_ROUNDS, _CHUNK_BUDGET // width))
    need = episode_rounds + 1
    pieces = -(-need // cap)
    return -(-need // pieces)


class WorldProcess:
    """``n_envs`` independent worlds of one scenario, advanced together, a chunk of rounds ahead."""

    def __init__(self, cfg: ScenarioConfig, n_envs: int = 1, chunk_rounds: int | None = None):
        if not isinstance(n_envs, int) or n_envs < 1:
            raise ValueError(f"n_envs must be an integer >= 1; got {n_envs!r}")
        self.cfg = cfg
        self.n_envs = n_envs
        self.n_agents = n = cfg.n_agents
        self.consts = model.model_constants(cfg)
        if chunk_rounds is None:
            chunk_rounds = _default_chunk_rounds(cfg.episode_rounds, n_envs * n)
        if not isinstance(chunk_rounds, int) or chunk_rounds < 1:
            raise ValueError(f"chunk_rounds must be an integer >= 1; got {chunk_rounds!r}")
        self.chunk_rounds = chunk_rounds
        ch = cfg.channel
        devices = cfg.workload.sender_profiles
        self._dev_flops = np.array([d.peak_flops for d in devices], dtype=np.float64)
        self._dev_mem_bw = np.array([d.mem_bw_bytes_per_s for d in devices], dtype=np.float64)
        self._rho_h = cfg.fading_correlation
        self._rho_s = cfg.shadowing_correlation
        self._innov_h = math.sqrt(max(0.0, 1.0 - self._rho_h**2)) * _SQRT_HALF
        self._innov_s = math.sqrt(max(0.0, 1.0 - self._rho_s**2)) * ch.shadowing_sigma_db
        self._step_m = ch.speed_mps * cfg.round_interval_s
        self._noise_dbm_per_hz = ch.noise_psd_dbm_per_hz + ch.noise_figure_db
        self._delay = cfg.csi_delay
        # AR(1) coefficients of [shadowing (n) | fading real parts (n) | imaginary parts (n)]
        self._ar_coef = np.repeat([self._rho_s, self._rho_h, self._rho_h], n)
        self._ar_innov = np.repeat([self._innov_s, self._innov_h, self._innov_h], n)
        self._ar_scale0 = np.repeat([ch.shadowing_sigma_db, _SQRT_HALF, _SQRT_HALF], n)  # stationary
        shape = (n_envs, n)
        # State carried from the last generated round to the next chunk.
        self._walk_m = np.zeros(shape)  # unfolded distance random walk
        self._ar = np.zeros((n_envs, 3 * n))  # shadowing, fading real parts, imaginary parts
        self._loads = np.zeros((n_envs, n + 1))  # agents' loads, then the receiver's
        self._snr_tail = np.zeros((self._delay, n_envs, n))  # the last csi_delay true SNRs
        self.device_index = np.zeros(shape, dtype=np.int64)
        self._flops = np.zeros(shape)
        self._mem_bw = np.zeros(shape)
        # The current chunk: time-major (C, M, ...) arrays; round t of the chunk is index t.
        self._obs: dict[str, np.ndarray] = {}
        self._terms: model.RoundTerms | None = None
        self._t = 0

    # -- state transitions -------------------------------------------------------------------

    def reset(self, rng: np.random.Generator, mask: np.ndarray | None = None) -> None:
        """Draw a fresh episode for every world (or only those where ``mask`` is true)."""
        if mask is None or self._terms is None:
            self._t = 0
            self._generate(rng, np.arange(self.n_envs), fresh=True)
            return
        idx = np.flatnonzero(np.asarray(mask, dtype=bool))
        if idx.size:
            self._generate(rng, idx, fresh=True)

    def step(self, rng: np.random.Generator) -> None:
        """Advance every world by one round."""
        self._t += 1
        if self._t >= self.chunk_rounds:
            self._t = 0
            self._generate(rng, np.arange(self.n_envs), fresh=False)

    def _generate(self, rng: np.random.Generator, idx: np.ndarray, fresh: bool) -> None:
        """Draw rounds ``t .. C-1`` of the chunk for worlds ``idx`` (a new episode if ``fresh``).

        Arrays are time-major, ``(rounds, worlds, ...)``, so that one round is a contiguous slice.
        """
        k, n = idx.size, self.n_agents
        ch, wl = self.cfg.channel, self.cfg.workload
        start = self._t
        rounds = self.chunk_rounds - start
        pre = self._delay if fresh else 0
        total = pre + rounds  # rounds whose channel is drawn (pre-roll first)
        if fresh:
            u0 = rng.random((4, k, n))
            z0 = rng.standard_normal((k, 3 * n))
            walk0 = ch.distance_min_m + (ch.distance_max_m - ch.distance_min_m) * u0[0]
            ar0 = z0 * self._ar_scale0  # shadowing (dB), fading real parts, imaginary parts
            loads0 = np.empty((k, n + 1))
            loads0[:, :n] = wl.load_max * u0[1]
            loads0[:, n] = wl.load_max * u0[3, :, 0]
            n_dev = len(self._dev_flops)
            dev = np.minimum((u0[2] * n_dev).astype(np.int64), n_dev - 1)
            self.device_index[idx] = dev
            self._flops[idx] = self._dev_flops[dev]
            self._mem_bw[idx] = self._dev_mem_bw[dev]
            steps = total - 1  # the first round is the initial state itself
        else:
            walk0, ar0, loads0 = self._walk_m[idx], self._ar[idx], self._loads[idx]
            steps = total
        # Innovations, each contiguous: distance walk, AR(1) [shadowing | fading re | im], loads.
        z_walk = rng.standard_normal((steps, k, n))
        z_ar = rng.standard_normal((steps, k, 3 * n))
        z_load = rng.standard_normal((steps, k, n + 1))
        # Distance (an unbounded random walk, folded into [d_min, d_max] below), shadowing AR(1),
        # Gauss-Markov fading and the clipped load walks, round by round over contiguous
        # (worlds, agents) slices.
        walk = np.empty((steps + 1, k, n))
        walk[0] = walk0
        walk_steps = z_walk * self._step_m
        ar = np.empty((steps + 1, k, 3 * n))
        ar[0] = ar0
        noise = z_ar * self._ar_innov
        loads = np.empty((steps + 1, k, n + 1))
        loads[0] = loads0
        load_noise = z_load * wl.load_step
        coef, umax = self._ar_coef, wl.load_max
        for s in range(steps):
            np.add(walk[s], walk_steps[s], out=walk[s + 1])
            nxt = ar[s + 1]
            np.multiply(ar[s], coef, out=nxt)
            nxt += noise[s]
            lo = loads[s + 1]
            np.add(loads[s], load_noise[s], out=lo)
            np.maximum(lo, 0.0, out=lo)
            np.minimum(lo, umax, out=lo)
        if not fresh:  # drop the carried state: it is the previous chunk's last round
            walk, ar, loads = walk[1:], ar[1:], loads[1:]
        self._walk_m[idx] = walk[-1]
        self._ar[idx] = ar[-1]
        self._loads[idx] = loads[-1]
        distance = self._fold(walk)
        fading_re, fading_im = ar[..., n : 2 * n], ar[..., 2 * n :]
        power = np.maximum(fading_re * fading_re + fading_im * fading_im, 1e-300)
        snr = np.clip(
            model.full_band_snr_db(
                distance, ar[..., :n], power, ch.tx_power_dbm, self._noise_dbm_per_hz, ch.bandwidth_hz,
                ch.pathloss_const_db, ch.pathloss_exponent_db,
            ),
            SNR_MIN_DB,
            SNR_MAX_DB,
        )
        if self._delay:
            history = snr if fresh else np.concatenate([self._snr_tail[:, idx], snr], axis=0)
            snr_obs = history[:rounds]
            self._snr_tail[:, idx] = history[-self._delay :]
            snr = snr[pre:]
        else:
            snr_obs = snr
        loads = loads[pre:]
        work = self._draw_workload(rng, rounds, idx, fresh)
        ctx = work["context_tokens"]
        nl = model.nl_tokens(ctx, work["nl_ratio"])
        agent_loads = np.ascontiguousarray(loads[..., :n])
        receiver_loads = np.ascontiguousarray(loads[..., n:])
        obs = {
            **work,
            "snr_db": snr_obs,
            "load": agent_loads,
            "nl_tokens": nl,
            "receiver_load": receiver_loads,
        }
        terms = model.round_terms(
            self.consts, snr, self._flops[idx], self._mem_bw[idx], agent_loads, ctx, nl, receiver_loads[..., 0],
        )
        self._store(idx, start, obs, terms)

    def _draw_workload(self, rng: np.random.Generator, rounds: int, idx: np.ndarray, fresh: bool) -> dict[str, np.ndarray]:
        """Per-round workload of worlds ``idx`` for ``rounds`` rounds, time-major ``(rounds, k, N)``:
        ``context_tokens`` ``L ~ U{L_min..L_max}`` and ``nl_ratio`` ``rho ~ U[rho_min, rho_max]``
        (``fresh``: the first rounds of a new episode)."""
        wl = self.cfg.workload
        u = rng.random((2, rounds, idx.size, self.n_agents))
        span = wl.context_max_tokens - wl.context_min_tokens + 1
        ctx = wl.context_min_tokens + np.minimum(np.floor(u[0] * span), span - 1)
        ratio = wl.nl_ratio_min + (wl.nl_ratio_max - wl.nl_ratio_min) * u[1]
        return {"context_tokens": ctx, "nl_ratio": ratio}

    def _store(self, idx, start, obs, terms) -> None:
        """Write generated rounds into the chunk. New arrays, so earlier views stay valid."""
        if start == 0 and idx.size == self.n_envs:
            self._obs = obs
            self._terms = terms
            return
        for key, value in obs.items():
            arr = self._obs[key].copy()
            arr[start:, idx] = value
            self._obs[key] = arr
        fields = {}
        for name in model.TERM_ARRAY_FIELDS:
            arr = getattr(self._terms, name).copy()
            arr[start:, idx] = getattr(terms, name)
            fields[name] = arr
        self._terms = model.RoundTerms(
            **fields, bandwidth_hz=self._terms.bandwidth_hz, latency_cap_s=self._terms.latency_cap_s
        )

    def _fold(self, walk: np.ndarray) -> np.ndarray:
        """Fold an unbounded walk into [d_min, d_max] (reflection at both ends)."""
        ch = self.cfg.channel
        lo, width = ch.distance_min_m, ch.distance_max_m - ch.distance_min_m
        if width <= 0.0:
            return np.full_like(walk, lo)
        # position within one period 2w, as a fraction; then the triangle wave w - |y - w|
        y = (walk - lo) * (0.5 / width)
        y -= np.floor(y)
        y *= 2.0 * width
        y -= width
        np.abs(y, out=y)
        return (lo + width) - y

    # -- views -------------------------------------------------------------------------------

    def observation(self) -> dict[str, np.ndarray]:
        """What the decision maker sees this round (fresh arrays, batch axis first)."""
        t, o = self._t, self._obs
        return {
            "snr_db": o["snr_db"][t].copy(),
            "compute_flops": self._flops.copy(),
            "mem_bw_bytes_per_s": self._mem_bw.copy(),
            "load": o["load"][t].copy(),
            "context_tokens": o["context_tokens"][t].copy(),
            "nl_tokens": o["nl_tokens"][t].copy(),
            "receiver_load": o["receiver_load"][t].copy(),
        }

    def true_terms(self, consts: model.ModelConstants | None = None) -> model.RoundTerms:
        """The model terms of the current round with the *current* channel: what is charged.

        Batch shape ``(M,)``; the arrays are read-only views that later steps never overwrite.
        """
        if self._terms is None:
            raise RuntimeError("call reset() first")
        return self._terms[self._t]

    def env_terms(self, env_index: int) -> model.RoundTerms:
        """:meth:`true_terms` of one world (unbatched), in one indexing step."""
        if self._terms is None:
            raise RuntimeError("call reset() first")
        return self._terms[self._t, env_index]
