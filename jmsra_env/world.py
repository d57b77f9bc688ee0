"""The world process: a seeded, batched generator of collaboration rounds (docs/model.md).

:class:`WorldProcess` holds ``M`` independent worlds (``M = 1`` for the single environment) and
draws their rounds in *chunks* (by default a whole episode, its ``E + 1`` observed rounds, at a
time), with a handful of NumPy calls over time-major arrays ``(rounds, M, N)`` and one generator.
Actions never influence the world, so drawing ahead is exact; it is what makes a step cheap. The
physics it calls lives in :mod:`jmsra_env.model`.

A chunk is drawn in four named steps, each taking its draws from the generator in a fixed order
(the same seed gives the same rounds):

1. :meth:`WorldProcess._initial_state` (new episodes only): each sender's device, the starting
   distance, shadowing, fading and loads;
2. :meth:`WorldProcess._advance`: the random processes round by round — distance (random walk at
   walking speed, folded into ``[d_min, d_max]``), log-normal shadowing (AR(1), Gudmundson),
   Rayleigh fading (Gauss-Markov, Jakes by default), background loads (clipped random walks);
3. :meth:`WorldProcess._channel`: the full-band SNR charged and the one observed, ``csi_delay``
   rounds older (the process is pre-rolled so that those rounds exist at reset);
4. :meth:`WorldProcess._draw_workload`: each round's context length ``L`` and summary ratio
   ``rho`` (a subclass may override it); the summary length is ``K = ceil(rho L)``.

What one chunk hands to the next is a :class:`WorldState`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import model
from .backend import NUMPY
from .config import ScenarioConfig

__all__ = ["WorldProcess", "WorldState", "OBS_KEYS", "SNR_MIN_DB", "SNR_MAX_DB", "fold_distance_m"]

# The full-band SNR is kept in this range (a deep fade of -inf dB would make the observation
# unbounded); the clipped value is the one both observed and charged.
SNR_MIN_DB = -150.0
SNR_MAX_DB = 150.0

# The keys of the environment's observation, in its order (per agent (N,), receiver_load (1,)).
OBS_KEYS = (
    "snr_db",
    "compute_flops",
    "mem_bw_bytes_per_s",
    "load",
    "context_tokens",
    "nl_tokens",
    "receiver_load",
)

# Where each observed array lives: True for the per-episode ones (the senders' devices, held in
# the WorldState under the same name), False for those of the chunk's current round.
_OBS_SOURCES = tuple((key, key in ("compute_flops", "mem_bw_bytes_per_s")) for key in OBS_KEYS)

_SQRT_HALF = math.sqrt(0.5)  # std of each part of a unit-power complex Gaussian
_MAX_CHUNK_ROUNDS = 128
_CHUNK_BUDGET = 1 << 19  # rounds x agents x worlds held per chunk (bounds memory at large M)
_ACCUMULATE_WIDTH = 64  # worlds x agents up to which the distance walk is one add.accumulate (faster
# than a loop there, slower above: its inner loops run along the strided time axis)


def _default_chunk_rounds(episode_rounds: int, width: int) -> int:
    """Equal chunks that cover an episode's ``E + 1`` rounds (its last observation included)
    within the memory budget, so the reset after truncation discards (almost) nothing drawn."""
    cap = max(1, min(_MAX_CHUNK_ROUNDS, _CHUNK_BUDGET // width))
    need = episode_rounds + 1
    pieces = -(-need // cap)
    return -(-need // pieces)


def fold_distance_m(walk: np.ndarray, lo: float, hi: float, xp=NUMPY) -> np.ndarray:
    """An unbounded distance walk (m) folded into ``[lo, hi]`` (reflection at both ends): the
    agent's distance. A reflected symmetric walk keeps the uniform law on ``[lo, hi]``."""
    width = hi - lo
    if width <= 0.0:
        return xp.full_like(walk, lo)
    # position within one period 2w, as a fraction; then the triangle wave w - |y - w|
    y = (walk - lo) * (0.5 / width)
    y -= xp.floor(y)
    y *= 2.0 * width
    y -= width
    xp.abs(y, out=y)
    return (lo + width) - y


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclass
class WorldState:
    """What the last drawn round of each world hands to the next chunk (``M`` worlds, ``N`` agents)."""

    walk_m: np.ndarray  # (M, N) unfolded distance random walk (folded into [d_min, d_max] when used)
    ar: np.ndarray  # (M, 3N) AR(1) processes: [shadowing dB (N) | fading real parts (N) | imag. parts (N)]
    loads: np.ndarray  # (M, N + 1) background loads: the agents', then the receiver's
    snr_tail: np.ndarray  # (csi_delay, M, N) the last csi_delay true SNRs (dB), oldest first
    device_index: np.ndarray  # (M, N) int64 each sender's device in the scenario's sender_profiles
    compute_flops: np.ndarray  # (M, N) peak FLOP/s of each sender's device
    mem_bw_bytes_per_s: np.ndarray  # (M, N) peak memory bandwidth of each sender's device

    @classmethod
    def zeros(cls, n_envs: int, n_agents: int, csi_delay: int, xp=NUMPY) -> WorldState:
        shape = (n_envs, n_agents)
        return cls(
            walk_m=xp.zeros(shape),
            ar=xp.zeros((n_envs, 3 * n_agents)),
            loads=xp.zeros((n_envs, n_agents + 1)),
            snr_tail=xp.zeros((csi_delay, n_envs, n_agents)),
            device_index=xp.zeros(shape, dtype=xp.int64),
            compute_flops=xp.zeros(shape),
            mem_bw_bytes_per_s=xp.zeros(shape),
        )


class WorldProcess:
    """``n_envs`` independent worlds of one scenario, advanced together, a chunk of rounds ahead.

    ``xp`` is the array namespace the worlds live in (:mod:`jmsra_env.backend`): NumPy by default
    (draws from a NumPy ``Generator``), or a torch namespace (draws from a ``torch.Generator`` on
    its device, in its dtype); the code is the same.
    """

    def __init__(self, cfg: ScenarioConfig, n_envs: int = 1, chunk_rounds: int | None = None, xp=NUMPY):
        if not _is_count(n_envs):
            raise ValueError(f"n_envs must be an integer >= 1; got {n_envs!r}")
        self.cfg = cfg
        self.xp = xp
        self.n_envs = n_envs
        self.n_agents = n = cfg.n_agents
        self.consts = model.model_constants(cfg)
        if chunk_rounds is None:
            chunk_rounds = _default_chunk_rounds(cfg.episode_rounds, n_envs * n)
        if not _is_count(chunk_rounds):
            raise ValueError(f"chunk_rounds must be an integer >= 1; got {chunk_rounds!r}")
        self.chunk_rounds = chunk_rounds
        ch = cfg.channel
        devices = cfg.workload.sender_profiles
        self._dev_flops = xp.asarray(np.array([d.peak_flops for d in devices], dtype=np.float64))
        self._dev_mem_bw = xp.asarray(np.array([d.mem_bw_bytes_per_s for d in devices], dtype=np.float64))
        self._step_m = ch.speed_mps * cfg.round_interval_s
        self._noise_dbm_per_hz = ch.noise_psd_dbm_per_hz + ch.noise_figure_db
        self._delay = cfg.csi_delay
        # AR(1) coefficient, innovation std and stationary std of [shadowing | fading re | im]
        rho_s, rho_h = cfg.shadowing_correlation, cfg.fading_correlation
        innov_h = math.sqrt(max(0.0, 1.0 - rho_h**2)) * _SQRT_HALF
        innov_s = math.sqrt(max(0.0, 1.0 - rho_s**2)) * ch.shadowing_sigma_db
        self._ar_coef = xp.asarray(np.repeat([rho_s, rho_h, rho_h], n))
        self._ar_innov = xp.asarray(np.repeat([innov_s, innov_h, innov_h], n))
        self._ar_scale0 = xp.asarray(np.repeat([ch.shadowing_sigma_db, _SQRT_HALF, _SQRT_HALF], n))
        self._all = xp.arange(n_envs)
        self.state = WorldState.zeros(n_envs, n, self._delay, xp)
        # The current chunk: time-major (C, M, ...) arrays; round t of the chunk is index t.
        self._rounds: dict[str, np.ndarray] = {}  # per-round observed arrays, nl_ratio, ...
        self._terms: model.RoundTerms | None = None
        self._t = 0

    @property
    def device_index(self) -> np.ndarray:
        """(M, N) each sender's device (index into the scenario's sender profiles)."""
        return self.state.device_index

    # -- state transitions -------------------------------------------------------------------

    def reset(self, rng: np.random.Generator, mask: np.ndarray | None = None) -> None:
        """Draw a fresh episode for every world (or only those where ``mask`` is true)."""
        xp = self.xp
        if mask is None or self._terms is None:
            self._t = 0
            self._generate(rng, self._all, fresh=True)
            return
        idx = xp.flatnonzero(xp.asarray(mask, dtype=xp.bool_))
        if xp.numel(idx):
            self._generate(rng, idx, fresh=True)

    def step(self, rng: np.random.Generator) -> None:
        """Advance every world by one round."""
        self._t += 1
        if self._t >= self.chunk_rounds:
            self._t = 0
            self._generate(rng, self._all, fresh=False)

    def _generate(self, rng: np.random.Generator, idx: np.ndarray, fresh: bool) -> None:
        """Draw rounds ``t .. C-1`` of the chunk for worlds ``idx`` (a new episode if ``fresh``)."""
        start = self._t
        rounds = self.chunk_rounds - start
        pre = self._delay if fresh else 0  # pre-rolled rounds, whose SNR is only observed later
        if fresh:
            walk, ar, loads = self._initial_state(rng, idx)
            steps = pre + rounds - 1  # the first round is the initial state itself
        else:
            s = self.state
            walk, ar, loads = s.walk_m[idx], s.ar[idx], s.loads[idx]
            steps = rounds
        walk, ar, loads = self._advance(rng, walk, ar, loads, steps)
        if not fresh:  # drop the carried state: it is the previous chunk's last round
            walk, ar, loads = walk[1:], ar[1:], loads[1:]
        self.state.walk_m[idx] = walk[-1]
        self.state.ar[idx] = ar[-1]
        self.state.loads[idx] = loads[-1]
        snr, snr_obs = self._channel(walk, ar, idx, fresh, rounds)
        work = self._draw_workload(rng, rounds, idx, fresh)
        self._store(idx, start, *self._round_arrays(idx, snr, snr_obs, loads[pre:], work))

    def _initial_state(self, rng: np.random.Generator, idx: np.ndarray):
        """A new episode for worlds ``idx``: draws the senders' devices (kept in the state) and
        returns the first round's ``(walk (K, N), ar (K, 3N), loads (K, N + 1))``."""
        xp = self.xp
        k, n = xp.numel(idx), self.n_agents
        ch, wl = self.cfg.channel, self.cfg.workload
        u0 = xp.random(rng, (4, k, n))  # [distance | agents' loads | device | receiver's load (agent 0)]
        z0 = xp.standard_normal(rng, (k, 3 * n))
        walk0 = ch.distance_min_m + (ch.distance_max_m - ch.distance_min_m) * u0[0]
        ar0 = z0 * self._ar_scale0  # stationary start
        loads0 = xp.empty((k, n + 1))
        loads0[:, :n] = wl.load_max * u0[1]
        loads0[:, n] = wl.load_max * u0[3, :, 0]
        n_dev = len(self._dev_flops)
        dev = xp.minimum(xp.astype(u0[2] * n_dev, xp.int64), n_dev - 1)
        self.state.device_index[idx] = dev
        self.state.compute_flops[idx] = self._dev_flops[dev]
        self.state.mem_bw_bytes_per_s[idx] = self._dev_mem_bw[dev]
        return walk0, ar0, loads0

    def _advance(self, rng: np.random.Generator, walk0, ar0, loads0, steps: int):
        """Advance the random processes ``steps`` rounds from ``(walk0, ar0, loads0)``; returns
        the ``steps + 1`` rounds (the start first) of each, time-major."""
        xp = self.xp
        k, n = walk0.shape
        umax = self.cfg.workload.load_max
        # Innovations, each contiguous: distance walk, AR(1) [shadowing | fading re | im], loads.
        walk_steps = xp.standard_normal(rng, (steps, k, n)) * self._step_m
        noise = xp.standard_normal(rng, (steps, k, 3 * n)) * self._ar_innov
        load_noise = xp.standard_normal(rng, (steps, k, n + 1)) * self.cfg.workload.load_step
        walk = xp.empty((steps + 1, k, n))
        ar = xp.empty((steps + 1, k, 3 * n))
        loads = xp.empty((steps + 1, k, n + 1))
        walk[0], ar[0], loads[0] = walk0, ar0, loads0
        coef = self._ar_coef
        walk_in_loop = not xp.is_torch and k * n > _ACCUMULATE_WIDTH
        if xp.is_torch:  # the walk is a cumulative sum; the clipped loads need the loop
            walk[1:] = walk0 + xp.cumsum(walk_steps, axis=0)
        elif not walk_in_loop:  # walk[s + 1] = walk[s] + walk_steps[s], the same adds in one call
            walk[1:] = walk_steps
            np.add.accumulate(walk, axis=0, out=walk)
        for s in range(steps):  # round by round over contiguous (worlds, agents) slices
            if walk_in_loop:
                np.add(walk[s], walk_steps[s], out=walk[s + 1])
            nxt = ar[s + 1]
            xp.multiply(ar[s], coef, out=nxt)
            nxt += noise[s]
            lo = loads[s + 1]
            xp.add(loads[s], load_noise[s], out=lo)
            xp.maximum(lo, 0.0, out=lo)
            xp.minimum(lo, umax, out=lo)
        return walk, ar, loads

    def _channel(self, walk, ar, idx: np.ndarray, fresh: bool, rounds: int):
        """The full-band SNR (dB) charged and observed in the chunk's ``rounds`` rounds.

        ``walk`` and ``ar`` cover the pre-rolled rounds too (``csi_delay`` of them on a fresh
        episode); the observed SNR is ``csi_delay`` rounds older than the charged one.
        """
        xp, n, ch = self.xp, self.n_agents, self.cfg.channel
        fading_re, fading_im = ar[..., n : 2 * n], ar[..., 2 * n :]
        power = xp.maximum(fading_re * fading_re + fading_im * fading_im, 1e-300)
        snr = xp.clip(
            model.full_band_snr_db(
                self._fold(walk), ar[..., :n], power, ch.tx_power_dbm, self._noise_dbm_per_hz,
                ch.bandwidth_hz, ch.pathloss_const_db, ch.pathloss_exponent_db,
            ),
            SNR_MIN_DB,
            SNR_MAX_DB,
        )
        if not self._delay:
            return snr, snr
        history = snr if fresh else xp.concatenate([self.state.snr_tail[:, idx], snr], axis=0)
        self.state.snr_tail[:, idx] = history[-self._delay :]
        return snr[snr.shape[0] - rounds :], history[:rounds]

    def _draw_workload(
        self, rng: np.random.Generator, rounds: int, idx: np.ndarray, fresh: bool
    ) -> dict[str, np.ndarray]:
        """The workload of ``rounds`` rounds of worlds ``idx`` (a new episode if ``fresh``).

        Returns time-major ``(rounds, len(idx), N)`` arrays: ``"context_tokens"`` (``L``, uniform
        integers) and ``"nl_ratio"`` (``rho``, uniform); any further array a subclass returns is
        kept in the chunk too and read back with :meth:`round_arrays`.
        """
        xp, wl = self.xp, self.cfg.workload
        u = xp.random(rng, (2, rounds, xp.numel(idx), self.n_agents))
        span = wl.context_max_tokens - wl.context_min_tokens + 1
        ctx = wl.context_min_tokens + xp.minimum(xp.floor(u[0] * span), span - 1)
        ratio = wl.nl_ratio_min + (wl.nl_ratio_max - wl.nl_ratio_min) * u[1]
        return {"context_tokens": ctx, "nl_ratio": ratio}

    def _round_arrays(self, idx, snr, snr_obs, loads, work):
        """The per-round arrays kept in the chunk and the terms charged, from the drawn pieces."""
        n = self.n_agents
        agent_loads = self.xp.ascontiguousarray(loads[..., :n])
        receiver_loads = self.xp.ascontiguousarray(loads[..., n:])
        ctx = work["context_tokens"]
        nl = model.nl_tokens(ctx, work["nl_ratio"])
        arrays = {
            **work,
            "snr_db": snr_obs,
            "load": agent_loads,
            "nl_tokens": nl,
            "receiver_load": receiver_loads,
        }
        terms = model.round_terms(
            self.consts, snr, self.state.compute_flops[idx], self.state.mem_bw_bytes_per_s[idx],
            agent_loads, ctx, nl, receiver_loads[..., 0],
        )
        return arrays, terms

    def _store(self, idx, start, arrays, terms) -> None:
        """Write generated rounds into the chunk. New arrays, so earlier views stay valid."""
        xp = self.xp
        if start == 0 and xp.numel(idx) == self.n_envs:
            self._rounds = arrays
            self._terms = terms
            return
        for key, value in arrays.items():
            arr = xp.copy(self._rounds[key])
            arr[start:, idx] = value
            self._rounds[key] = arr
        fields = {}
        for name in model.TERM_ARRAY_FIELDS:
            arr = xp.copy(getattr(self._terms, name))
            arr[start:, idx] = getattr(terms, name)
            fields[name] = arr
        self._terms = model.RoundTerms(
            **fields, bandwidth_hz=self._terms.bandwidth_hz, latency_cap_s=self._terms.latency_cap_s
        )

    def _fold(self, walk: np.ndarray) -> np.ndarray:
        """Fold an unbounded walk into [d_min, d_max] (reflection at both ends)."""
        ch = self.cfg.channel
        return fold_distance_m(walk, ch.distance_min_m, ch.distance_max_m, self.xp)

    # -- views -------------------------------------------------------------------------------

    def observation(self) -> dict[str, np.ndarray]:
        """What the decision maker sees this round (fresh arrays, batch axis first), keys
        :data:`OBS_KEYS`."""
        return self.env_observation(slice(None))

    def env_observation(self, env_index) -> dict[str, np.ndarray]:
        """The observation of world(s) ``env_index`` (an index, or ``slice(None)``: all, as
        :meth:`observation`; fresh arrays), each array in one indexing step."""
        t, r, s = self._t, self._rounds, self.state
        cp = self.xp.copy
        return {
            key: cp(getattr(s, key)[env_index] if per_episode else r[key][t, env_index])
            for key, per_episode in _OBS_SOURCES
        }

    def round_arrays(self) -> dict[str, np.ndarray]:
        """Every per-round array of the current round (fresh copies, batch axis first): the
        observed ones and the workload's draws, ``nl_ratio`` included."""
        if self._terms is None:
            raise RuntimeError("call reset() first")
        t, cp = self._t, self.xp.copy
        return {key: cp(value[t]) for key, value in self._rounds.items()}

    def true_terms(self) -> model.RoundTerms:
        """The model terms of the current round with the *current* channel: what is charged.

        Batch shape ``(M,)``; the arrays are views into the chunk, which later steps never overwrite.
        """
        if self._terms is None:
            raise RuntimeError("call reset() first")
        return self._terms[self._t]

    def env_terms(self, env_index: int) -> model.RoundTerms:
        """:meth:`true_terms` of one world (unbatched), in one indexing step."""
        if self._terms is None:
            raise RuntimeError("call reset() first")
        return self._terms[self._t, env_index]
