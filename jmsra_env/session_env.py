"""Session environments (docs/sessions.md): the receiver keeps what it was sent, round after round.

:class:`SessionWorldProcess` draws the session's exogenous token process (growing contexts);
:class:`JMSRASessionEnv` and :class:`JMSRASessionVectorEnv` are :class:`~jmsra_env.env.JMSRAEnv`
and :class:`~jmsra_env.vector.JMSRAVectorEnv` with the receiver's state
(:class:`~jmsra_env.session.SessionState`) carried through their round hooks: the terms of a round
come from :func:`jmsra_env.session.session_terms`, the state changes by
:func:`jmsra_env.session.transition` after every round.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import batch_space

from . import model, session
from .config import ScenarioConfig
from .env import JMSRAEnv, make_observation_space
from .vector import JMSRAVectorEnv
from .world import _CHUNK_BUDGET, WorldProcess

__all__ = [
    "SessionWorldProcess",
    "SessionReceiver",
    "JMSRASessionEnv",
    "JMSRASessionVectorEnv",
    "SESSION_OBS_KEYS",
    "make_session_observation_space",
    "max_context_tokens",
]

SESSION_OBS_KEYS = (
    "new_tokens",
    "unseen_tokens",
    "kv_resident_tokens",
    "rounds_since_kv",
    "kv_pool_used_fraction",
    "kv_pool_bytes",
)


def max_context_tokens(cfg: ScenarioConfig) -> int:
    """The longest context a session can reach: ``L_max + episode_rounds x dL_max``."""
    return cfg.workload.context_max_tokens + cfg.episode_rounds * cfg.session.new_tokens_max


def _uniform_tokens(u: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """U{lo..hi} from uniforms ``u`` in [0, 1) (as the single-round context draw)."""
    span = hi - lo + 1
    return lo + np.minimum(np.floor(u * span), span - 1)


class SessionWorldProcess(WorldProcess):
    """:class:`~jmsra_env.world.WorldProcess` whose contexts grow: ``L(t) = L(t-1) + dL(t)`` with
    ``dL(0) = L(0) ~ U{L_min..L_max}`` and later ``dL ~ U{new_tokens_min..new_tokens_max}``; the
    chunk also holds ``new_tokens`` (``dL``) and ``nl_ratio`` (``rho``) per round.

    By default a chunk holds a whole episode (``episode_rounds + 1`` rounds) while that stays
    within 4x the world's memory budget, so that the true future of an episode is drawn at reset
    (the clairvoyant expert reads it).
    """

    def __init__(self, cfg: ScenarioConfig, n_envs: int = 1, chunk_rounds: int | None = None):
        if chunk_rounds is None and (cfg.episode_rounds + 1) * n_envs * cfg.n_agents <= 4 * _CHUNK_BUDGET:
            chunk_rounds = cfg.episode_rounds + 1
        super().__init__(cfg, n_envs, chunk_rounds)
        self._context_tokens = np.zeros((self.n_envs, self.n_agents))  # L of the last drawn round

    def _draw_workload(self, rng, rounds, idx, fresh):
        wl, ss = self.cfg.workload, self.cfg.session
        u = rng.random((2, rounds, idx.size, self.n_agents))
        new = _uniform_tokens(u[0], ss.new_tokens_min, ss.new_tokens_max)
        if fresh:
            new[0] = _uniform_tokens(u[0, 0], wl.context_min_tokens, wl.context_max_tokens)
            ctx = np.cumsum(new, axis=0)
        else:
            ctx = self._context_tokens[idx] + np.cumsum(new, axis=0)
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

    def __init__(self, cfg: ScenarioConfig, n_envs: int):
        self.cfg = cfg
        self.consts = model.model_constants(cfg)
        self.never = session.never_rounds(cfg)
        self._empty = session.initial_state(cfg, (n_envs,))
        self.state = self._empty
        self._pool = np.full((n_envs, 1), cfg.kv_pool_bytes)
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
        obs["new_tokens"] = world.current("new_tokens").copy()
        obs["unseen_tokens"] = obs["context_tokens"] - s.seen_tokens
        obs["kv_resident_tokens"] = s.kv_tokens.copy()
        obs["rounds_since_kv"] = session.rounds_since_kv(s, round_index, self.never)
        obs["kv_pool_used_fraction"] = s.pool_used_fraction[:, None]
        obs["kv_pool_bytes"] = self._pool.copy()
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


def make_session_observation_space(cfg: ScenarioConfig) -> spaces.Dict:
    """The Dict observation space of a session scenario: the single-round keys (with contexts up
    to :func:`max_context_tokens`) and :data:`SESSION_OBS_KEYS`."""
    n = cfg.n_agents
    top = float(max_context_tokens(cfg))

    def box(lo, hi, shape=(n,)):
        return spaces.Box(low=float(lo), high=float(hi), shape=shape, dtype=np.float64)

    base = dict(make_observation_space(cfg).spaces)
    base["context_tokens"] = box(cfg.workload.context_min_tokens, top)
    base["nl_tokens"] = box(0.0, top)
    base["new_tokens"] = box(
        min(cfg.session.new_tokens_min, cfg.workload.context_min_tokens),
        max(cfg.session.new_tokens_max, cfg.workload.context_max_tokens),
    )
    base["unseen_tokens"] = box(0.0, top)
    base["kv_resident_tokens"] = box(0.0, top)
    base["rounds_since_kv"] = box(0.0, session.never_rounds(cfg))
    base["kv_pool_used_fraction"] = box(0.0, 1.0, (1,))
    base["kv_pool_bytes"] = box(0.0, cfg.kv_pool_bytes, (1,))
    return spaces.Dict(base)


# A session env is a session whatever its config says (applied after every other override).
_SESSION_ON = {"session.enabled": True}


_SESSION_DOC = """

    ## Sessions (docs/sessions.md)

    The same agents report round after round: agent ``i``'s context grows by ``new_tokens``
    ``dL_i`` per round (``L_i(0) ~ U{L_min..L_max}``, then ``dL ~ U{new_tokens_min..new_tokens_max}``)
    and the receiver keeps what it was sent: ``seen_i`` tokens known, the KV cache of a prefix of
    ``kv_i`` tokens in a pool of ``kv_pool_bytes`` bytes (default ``N x 160 MiB``). A round costs:
    sender prefill of ``dL_i`` only; NL a summary of ``K_i = ceil(rho_i (L_i - seen_i))`` tokens;
    KV the ``L_i - kv_i`` tokens the receiver lacks. After the round every agent is seen,
    a KV sender resident; while the pool overflows, the cache sent longest ago is evicted (ties:
    lowest index) and its agent forgotten (``kv = seen = 0``).

    Observation: the single-round keys (``context_tokens = L_i``, ``nl_tokens = K_i`` as above) and

    | key                     | meaning                                           | unit   | bounds          |
    |-------------------------|---------------------------------------------------|--------|-----------------|
    | `new_tokens`            | ``dL_i``, tokens new this round                   | tokens | [0, L_max]      |
    | `unseen_tokens`         | ``L_i - seen_i``                                  | tokens | [0, L_top]      |
    | `kv_resident_tokens`    | ``kv_i``, the receiver's cached prefix            | tokens | [0, L_top]      |
    | `rounds_since_kv`       | rounds since the last KV message; never: ``E+1``  | rounds | [0, E + 1]      |
    | `kv_pool_used_fraction` | ``sum_i kv_i kappa / 8 / M`` (shape ``(1,)``)     | 1      | [0, 1]          |
    | `kv_pool_bytes`         | the pool's size ``M`` (shape ``(1,)``)            | byte   | [0, M]          |

    (``L_top = L_max + E x dL_max``.) It is a sufficient statistic with ``csi_delay = 0``: the
    reward comes from :func:`jmsra_env.model.terms_from_observation` and the next receiver state
    from :func:`jmsra_env.session.state_from_observation` and :func:`jmsra_env.session.transition`.

    Info adds ``evicted`` (per agent, bool), ``evictions`` (count), ``kv_pool_used_bytes`` and
    ``kv_pool_used_fraction`` after the round.
"""


class JMSRASessionEnv(JMSRAEnv):
    """The JMSRA environment as a session: the receiver's memory links the rounds.

    Everything of :class:`~jmsra_env.env.JMSRAEnv` holds (actions, reward ``-T``, info, seeding,
    arguments; ``session.enabled`` is switched on); what changes is below.
    """

    __doc__ = (__doc__ or "") + _SESSION_DOC
    _world_class = SessionWorldProcess

    def __init__(
        self,
        config: ScenarioConfig | Mapping[str, Any] | None = None,
        *,
        base_config: ScenarioConfig | Mapping[str, Any] | None = None,
        action_form: str = "dict",
        render_mode: str | None = None,
        **overrides: Any,
    ):
        super().__init__(
            config, base_config=base_config, action_form=action_form, render_mode=render_mode,
            **overrides, **_SESSION_ON,
        )
        self.observation_space = make_session_observation_space(self.config)
        self._receiver = SessionReceiver(self.config, 1)

    @property
    def receiver_state(self) -> session.SessionState:
        """The receiver's state (batch of one) before the next step."""
        return self._receiver.state

    def _on_reset(self) -> None:
        self._receiver.reset()

    def _next_terms(self) -> model.RoundTerms:
        return self._receiver.terms(self._world)[0]

    def _after_round(self, media, info) -> None:
        batch: dict[str, Any] = {}
        self._receiver.advance(self._world, media[None], self._round, batch)
        info["evicted"] = batch["evicted"][0]
        info["evictions"] = int(batch["evictions"][0])
        info["kv_pool_used_bytes"] = float(batch["kv_pool_used_bytes"][0])
        info["kv_pool_used_fraction"] = float(batch["kv_pool_used_fraction"][0])

    def _observation(self) -> dict[str, np.ndarray]:
        obs = self._receiver.observe(self._world, self._round, self._world.observation())
        obs = {k: v[0] for k, v in obs.items()}
        self._last_obs = obs
        return obs


class JMSRASessionVectorEnv(JMSRAVectorEnv):
    """``num_envs`` session environments stepped as arrays: the batch twin of
    :class:`JMSRASessionEnv` as :class:`~jmsra_env.vector.JMSRAVectorEnv` is of
    :class:`~jmsra_env.env.JMSRAEnv` (a batch of one reproduces the single env exactly).

    Info adds, per sub-environment, ``evicted`` ``(M, N)``, ``evictions``,
    ``kv_pool_used_bytes`` and ``kv_pool_used_fraction`` ``(M,)``.
    """

    _world_class = SessionWorldProcess

    def __init__(self, num_envs: int = 1, config=None, *, base_config=None, **kwargs: Any):
        super().__init__(num_envs, config, base_config=base_config, **kwargs, **_SESSION_ON)
        self.single_observation_space = make_session_observation_space(self.config)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self._receiver = SessionReceiver(self.config, self.num_envs)

    @property
    def receiver_state(self) -> session.SessionState:
        """The receivers' state (batch ``(M,)``) before the next step."""
        return self._receiver.state

    def _observe(self) -> dict[str, np.ndarray]:
        return self._receiver.observe(self._world, self._round, self._world.observation())

    def _reset_worlds(self, rng, mask) -> None:
        self._world.reset(rng, mask)
        self._receiver.reset(mask)

    def _next_terms(self) -> model.RoundTerms:
        return self._receiver.terms(self._world)

    def _after_round(self, media, info) -> None:
        self._receiver.advance(self._world, media, self._round, info)
