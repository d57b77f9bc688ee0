"""The functional core: one batched round, on NumPy or torch, that every view of the env runs.

A :class:`Core` holds ``M`` worlds of one scenario (its *params*, the frozen
:class:`~jmsra_env.config.ScenarioConfig`) and their explicit state (:class:`CoreState`: the
world process's state and drawn rounds, the receivers' :class:`~jmsra_env.session.SessionState`
for a session scenario, the round counters). The round is written here once:

* :meth:`Core.reset` draws new episodes (all worlds, or those of a mask);
* :meth:`Core.observe` is what the decision maker sees (a Dict of ``(M, ...)`` arrays);
* :meth:`Core.charge` is the latency of a decision on the round's true terms
  (:func:`jmsra_env.model.latency`);
* :meth:`Core.advance` applies the receivers' transition (sessions), moves the worlds on one
  round and counts it.

Whether the scenario is a session is a property of the params (``config.session.enabled``), never
of an observation's keys. The arrays live in the namespace ``xp`` (:mod:`jmsra_env.backend`):
NumPy (the reference, the default; the same draws in the same order as every release, so every
registered ID is bit-identical) or torch on a device (draws from a ``torch.Generator`` there).

Views are thin adapters over it: the Gymnasium env (a batch of one), the NumPy vector env, the
torch vector env (:mod:`jmsra_env.core.torch_env`), the TorchRL env
(:mod:`jmsra_env.core.torchrl_env`) and the PettingZoo view.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .. import model, session
from ..backend import NUMPY
from ..config import ScenarioConfig
from ..session_world import SessionReceiver, SessionWorldProcess
from ..world import WorldProcess, WorldState

__all__ = ["Core", "CoreState"]


@dataclass(frozen=True)
class CoreState:
    """The explicit state of ``M`` environments: a value (:meth:`Core.snapshot` copies what the
    core would change in place; the drawn chunk is shared, it is never overwritten)."""

    world: WorldState  # distance walks, AR(1) channel processes, loads, devices, CSI history
    receiver: session.SessionState | None  # sessions only: seen / resident KV / last KV round (M, N)
    round: Any  # (M,) int64 rounds played in the current episode
    chunk_index: int  # the current round's index in the drawn chunk of rounds
    chunk_arrays: dict[str, Any]  # the drawn rounds' observed arrays, time-major (C, M, ...)
    chunk_terms: model.RoundTerms | None  # the drawn rounds' terms (true channel), (C, M)
    context_tokens: Any = None  # sessions: each context's length in the chunk's last drawn round


class Core:
    """``num_envs`` environments of one scenario, stepped together (see the module docstring)."""

    def __init__(self, config: ScenarioConfig, num_envs: int = 1, xp=NUMPY):
        self.params = config
        self.xp = xp
        self.num_envs = num_envs
        self.session = bool(config.session.enabled)
        self.consts = model.model_constants(config)
        world_class = SessionWorldProcess if self.session else WorldProcess
        self.world = world_class(config, num_envs, xp=xp)
        self.receiver = SessionReceiver(config, num_envs, xp) if self.session else None
        self.round = xp.zeros(num_envs, dtype=xp.int64)
        self._terms: model.RoundTerms | None = None
        self._terms_stale = False  # the worlds moved since _terms: compute them when read

    @property
    def terms(self) -> model.RoundTerms | None:
        """The current round's terms (true channel), batch shape ``(M,)``; None before a reset.
        Computed when first read after a change (the single env reads one world's instead)."""
        if self._terms_stale:
            self._terms = self._true_terms()
            self._terms_stale = False
        return self._terms

    @terms.setter
    def terms(self, value: model.RoundTerms | None) -> None:
        self._terms, self._terms_stale = value, False

    @property
    def state(self) -> CoreState:
        """The current state, as a value (:meth:`snapshot`)."""
        return self.snapshot()

    def snapshot(self) -> CoreState:
        """A copy of the state that later steps of this core leave untouched."""
        w, cp = self.world, self.xp.copy
        ws = w.state
        world = WorldState(**{f.name: cp(getattr(ws, f.name)) for f in dataclasses.fields(ws)})
        return CoreState(
            world=world,
            receiver=None if self.receiver is None else self.receiver.state,  # a value already
            round=cp(self.round),
            chunk_index=w._t,
            chunk_arrays=dict(w._rounds),
            chunk_terms=w._terms,
            context_tokens=cp(w._context_tokens) if self.session else None,
        )

    def load(self, state: CoreState) -> None:
        """Continue from ``state`` (a :meth:`snapshot` of a core of the same params and size; it
        is copied, never changed)."""
        w, cp = self.world, self.xp.copy
        if tuple(state.round.shape) != (self.num_envs,):
            raise ValueError(f"the state holds {tuple(state.round.shape)} envs; this core {self.num_envs}")
        if (state.receiver is None) == self.session:
            raise ValueError("the state's session-ness does not match the params (config.session.enabled)")
        ws = state.world
        w.state = WorldState(**{f.name: cp(getattr(ws, f.name)) for f in dataclasses.fields(ws)})
        w._rounds = dict(state.chunk_arrays)
        w._terms = state.chunk_terms
        w._t = state.chunk_index
        if self.session:
            w._context_tokens = cp(state.context_tokens)
            self.receiver.state = state.receiver
        self.round = cp(state.round)
        self._terms, self._terms_stale = None, state.chunk_terms is not None

    def reset(self, rng, mask=None) -> None:
        """New episodes in every world (``mask`` None) or in those of ``mask``."""
        self.world.reset(rng, mask)
        if self.receiver is not None:
            self.receiver.reset(mask)
        if mask is None:
            self.round[...] = 0
        else:
            self.round[self.xp.asarray(mask)] = 0
        self._terms, self._terms_stale = None, True

    def observe(self) -> dict[str, Any]:
        """The observation of the current round (fresh arrays, batch axis first)."""
        obs = self.world.observation()
        if self.receiver is not None:
            obs = self.receiver.observe(self.world, self.round, obs)
        return obs

    def charge(self, media, bandwidth_hz) -> model.LatencyBreakdown:
        """The latency of a decision on the current round (true channel)."""
        if self.terms is None:
            raise RuntimeError("call reset() before step()")
        return model.latency(self.terms, media, bandwidth_hz)

    def charge_info(self, br: model.LatencyBreakdown) -> dict[str, Any]:
        """The batched ``info`` of a charged round (before :meth:`advance` adds the session's)."""
        return {
            "latency_s": br.latency_s,
            "uncapped_latency_s": br.uncapped_latency_s,
            "capped": br.capped,
            "media": br.media,
            "bandwidth_hz": br.bandwidth_hz,
            "finish_s": br.finish_s,
            "round": self.xp.copy(self.round),
        }

    def advance(self, rng, media, info: dict[str, Any]) -> None:
        """After a round was charged with ``media``: the receivers' transition (sessions: its
        evictions and pool usage go into ``info``), then every world moves on one round."""
        if self.receiver is not None:
            self.receiver.advance(self.world, media, self.round, info)
        self.world.step(rng)
        self.round += 1
        self._terms, self._terms_stale = None, True

    def env_terms(self, index: int) -> model.RoundTerms:
        """``terms[index]``: one world's current terms (unbatched); without a session, in one
        indexing step of the drawn chunk."""
        if self._terms_stale and self.receiver is None:
            return self.world.env_terms(index)
        return self.terms[index]

    def env_observation(self, index: int) -> dict[str, Any]:
        """``{k: v[index] for k, v in observe().items()}``: one world's observation (fresh arrays)."""
        if self.receiver is None:
            return self.world.env_observation(index)
        return {k: v[index] for k, v in self.observe().items()}

    def observed_terms(self, obs) -> model.RoundTerms:
        """The terms a policy rebuilds from ``obs`` (the current ones when ``csi_delay = 0``)."""
        if self.params.csi_delay == 0:
            return self.terms
        return model.terms_from_observation(self.consts, obs)

    def _true_terms(self) -> model.RoundTerms:
        if self.receiver is not None:
            return self.receiver.terms(self.world)
        return self.world.true_terms()
