"""The session's world and receivers (docs/sessions.md), below the environments.

:class:`SessionWorldProcess` draws the session's exogenous token process (growing contexts);
:class:`SessionReceiver` keeps the receivers' state (:class:`~jmsra_env.session.SessionState`)
through the rounds: the terms of a round come from :func:`jmsra_env.session.session_terms`'s
pieces, the state changes by :func:`jmsra_env.session.transition` after every round. Both work
on any array backend (:mod:`jmsra_env.backend`), as the world process does.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from . import model, session
from .backend import NUMPY
from .config import ScenarioConfig
from .world import _CHUNK_BUDGET, WorldProcess

__all__ = ["SessionWorldProcess", "SessionReceiver", "max_context_tokens"]


def max_context_tokens(cfg: ScenarioConfig) -> int:
    """The longest context a session can reach: ``L_max + episode_rounds x dL_max``."""
    return cfg.workload.context_max_tokens + cfg.episode_rounds * cfg.session.new_tokens_max


def _uniform_tokens(xp, u: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """U{lo..hi} from uniforms ``u`` in [0, 1) (as the single-round context draw)."""
    span = hi - lo + 1
    return lo + xp.minimum(xp.floor(u * span), span - 1)


class SessionWorldProcess(WorldProcess):
    """:class:`~jmsra_env.world.WorldProcess` whose contexts grow: ``L(t) = L(t-1) + dL(t)`` with
    ``dL(0) = L(0) ~ U{L_min..L_max}`` and later ``dL ~ U{new_tokens_min..new_tokens_max}``; the
    chunk also holds ``new_tokens`` (``dL``) and ``nl_ratio`` (``rho``) per round.

    By default a chunk holds a whole episode (``episode_rounds + 1`` rounds) while that stays
    within 4x the world's memory budget, so that the true future of an episode is drawn at reset
    (the clairvoyant expert reads it).
    """

    def __init__(self, cfg: ScenarioConfig, n_envs: int = 1, chunk_rounds: int | None = None, xp=NUMPY):
        if chunk_rounds is None and (cfg.episode_rounds + 1) * n_envs * cfg.n_agents <= 4 * _CHUNK_BUDGET:
            chunk_rounds = cfg.episode_rounds + 1
        super().__init__(cfg, n_envs, chunk_rounds, xp=xp)
        self._context_tokens = xp.zeros((self.n_envs, self.n_agents))  # L of the last drawn round

    def _draw_workload(self, rng, rounds, idx, fresh):
        xp, wl, ss = self.xp, self.cfg.workload, self.cfg.session
        u = xp.random(rng, (2, rounds, xp.numel(idx), self.n_agents))
        new = _uniform_tokens(xp, u[0], ss.new_tokens_min, ss.new_tokens_max)
        if fresh:
            new[0] = _uniform_tokens(xp, u[0, 0], wl.context_min_tokens, wl.context_max_tokens)
            ctx = xp.cumsum(new, axis=0)
        else:
            ctx = self._context_tokens[idx] + xp.cumsum(new, axis=0)
        self._context_tokens[idx] = ctx[-1]
        ratio = wl.nl_ratio_min + (wl.nl_ratio_max - wl.nl_ratio_min) * u[1]
        return {"context_tokens": ctx, "nl_ratio": ratio, "new_tokens": new}

    # -- views for the session's receivers and experts (the one place that reads the chunk) ----

    @property
    def chunk_arrays(self) -> dict[str, np.ndarray]:
        """The chunk's time-major per-round arrays ``(C, M, ...)`` (replaced, never overwritten,
        when rounds are drawn)."""
        return self._rounds

    @property
    def chunk_terms(self) -> model.RoundTerms:
        """The chunk's single-round terms ``(C, M)`` (their ``gain_hz`` is the true channel)."""
        return self._terms

    @property
    def chunk_index(self) -> int:
        """The current round's index in the chunk."""
        return self._t

    @property
    def peak_compute_flops(self) -> np.ndarray:
        """Each sender's peak compute ``(M, N)`` (drawn per episode)."""
        return self.state.compute_flops

    @property
    def peak_mem_bw_bytes_per_s(self) -> np.ndarray:
        """Each sender's peak memory bandwidth ``(M, N)``."""
        return self.state.mem_bw_bytes_per_s

    def current(self, key: str, offset: int = 0) -> np.ndarray:
        """Chunk array ``key`` at round ``t + offset`` of the chunk (a view)."""
        return self._rounds[key][self._t + offset]

    def round_quantities(self, offset: int = 0) -> dict[str, np.ndarray]:
        """The exogenous quantities of round ``t + offset`` of the chunk (``(M, N)`` arrays, views):
        ``snr_db`` (observed), ``load``, ``context_tokens``, ``new_tokens``, ``nl_ratio``,
        ``receiver_load`` (``(M,)``), ``gain_hz`` (true channel) and ``answer_s`` (``(M,)``)."""
        q = {k: self.current(k, offset) for k in ("snr_db", "load", "context_tokens", "new_tokens", "nl_ratio")}
        q["receiver_load"] = self.current("receiver_load", offset)[..., 0]
        t = self._t + offset
        q["gain_hz"] = self._terms.gain_hz[t]
        q["answer_s"] = self._terms.answer_s[t]
        return q

    @property
    def rounds_ahead(self) -> int:
        """Rounds of the chunk after the current one (the drawn future)."""
        return self.chunk_rounds - 1 - self._t


class SessionReceiver:
    """The receivers of ``M`` sessions: their state, the terms they charge and what they show.

    The per-token terms of a whole chunk of rounds (:func:`jmsra_env.session.unit_terms`, which do
    not depend on the actions) are computed once per chunk; a round's terms then take three
    products (:func:`jmsra_env.session.scale_terms`).
    """

    def __init__(self, cfg: ScenarioConfig, n_envs: int, xp=NUMPY):
        self.cfg = cfg
        self.xp = xp
        self.consts = model.model_constants(cfg)
        self.never = session.never_rounds(cfg)
        self._empty = session.initial_state(cfg, (n_envs,), xp=xp)
        self.state = self._empty
        self._pool = xp.full((n_envs, 1), cfg.kv_pool_bytes)
        self._chunk_terms: model.RoundTerms | None = None  # the world's terms they were built from
        self._unit: model.RoundTerms | None = None

    def reset(self, mask: np.ndarray | None = None) -> None:
        self.state = self._empty if mask is None else self.state.where(mask, self._empty)

    def _unit_terms(self, world: SessionWorldProcess) -> model.RoundTerms:
        """The current round's per-token terms (true channel), from the chunk's cache."""
        chunk_terms = world.chunk_terms
        if self._chunk_terms is not chunk_terms:  # a new chunk, or worlds of it drawn anew
            o = world.chunk_arrays
            unit = session.unit_terms(
                self.consts, o["snr_db"], world.peak_compute_flops, world.peak_mem_bw_bytes_per_s, o["load"],
                o["new_tokens"], o["receiver_load"][..., 0],
            )
            self._unit = dataclasses.replace(unit, gain_hz=chunk_terms.gain_hz)
            self._chunk_terms = chunk_terms
        return self._unit[world.chunk_index]

    def _nl_tokens(self, world: SessionWorldProcess) -> np.ndarray:
        return session.session_nl_tokens(world.current("context_tokens"), self.state.seen_tokens, world.current("nl_ratio"))

    def terms(self, world: SessionWorldProcess) -> model.RoundTerms:
        """The terms of the worlds' current round given the receivers' state (true channel)."""
        kv_delta = world.current("context_tokens") - self.state.kv_tokens
        return session.scale_terms(self._unit_terms(world), self._nl_tokens(world), kv_delta)

    def observe(self, world: SessionWorldProcess, round_index, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Add the session keys to the world's observation ``obs`` (``(M, ...)`` arrays)."""
        s = self.state
        obs["nl_tokens"] = self._nl_tokens(world)
        cp = self.xp.copy
        obs["new_tokens"] = cp(world.current("new_tokens"))
        obs["unseen_tokens"] = obs["context_tokens"] - s.seen_tokens
        obs["kv_resident_tokens"] = cp(s.kv_tokens)
        obs["rounds_since_kv"] = session.rounds_since_kv(s, round_index, self.never)
        obs["kv_pool_used_fraction"] = s.pool_used_fraction[:, None]
        obs["kv_pool_bytes"] = cp(self._pool)
        return obs

    def advance(self, world: SessionWorldProcess, media: np.ndarray, round_index, info: dict[str, Any]) -> None:
        """Apply the round's transition; put evictions and pool usage into ``info`` (``(M, ...)``)."""
        self.state, evicted = session.transition(
            self.state, media, world.current("context_tokens"), round_index
        )
        info["evicted"] = evicted
        info["evictions"] = evicted.sum(axis=-1)
        info["kv_pool_used_bytes"] = self.state.pool_used_bytes
        info["kv_pool_used_fraction"] = self.state.pool_used_fraction


