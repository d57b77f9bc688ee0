"""The core as pure functions of an explicit state (gymnax / Jumanji style).

Every function takes the state as a value and returns a new one; the input state is never
changed, so a state can be kept, compared, pickled or branched from (a lookahead that tries several
decisions from the same round, a search tree, a replay from a saved state)::

    import numpy as np
    from jmsra_env import ScenarioConfig
    from jmsra_env.core import functional as F

    params = ScenarioConfig()                      # the scenario: frozen, hashable
    rng = np.random.default_rng(0)                 # NumPy Generator (torch: a torch.Generator)
    state = F.reset(rng, params, num_envs=8)       # a CoreState of 8 envs
    obs = F.observe(state, params)                 # Dict observation, (8, ...) arrays
    media = np.zeros((8, 4), np.int8)              # the decision: media (0 NL, 1 KV) ...
    b = np.full((8, 4), params.channel.bandwidth_hz / 4)   # ... and bandwidth in Hz
    state2, obs2, reward, terminated, truncated, info = F.step(rng, state, (media, b), params)

The action of :func:`step` is the *decision* ``(media, bandwidth_hz)``; the action forms and
encodings of the Gymnasium views are decoders in front of it (:func:`jmsra_env.actions.decode_dict`,
:func:`jmsra_env.actions.decode_box`, :func:`jmsra_env.encoding.decode_deadline`). Auto-reset is
the caller's: ``F.reset(rng, params, state=state, mask=truncated)`` starts the ended envs over.

These functions run the same :class:`~jmsra_env.core.Core` as every environment view (one per
``(params, num_envs, namespace)``, loaded from the state and snapshotted after), so a sequence of
``step`` calls with a generator seeded like the env's gives the env's own rounds: the NumPy vector
env's bit for bit. The random draws consume the generator (a NumPy ``Generator`` or a
``torch.Generator``), as the environments' do; branch from a state with a generator of its own.
"""

from __future__ import annotations

from typing import Any

from .. import model
from ..backend import NUMPY, namespace
from ..config import ScenarioConfig
from . import Core, CoreState

__all__ = ["reset", "observe", "charge", "step", "CoreState"]

_CORES: dict[tuple, Core] = {}  # one working core per (params, num_envs, namespace)


def _core(params: ScenarioConfig, num_envs: int, xp) -> Core:
    if not isinstance(params, ScenarioConfig):
        raise ValueError(f"params must be a jmsra_env.ScenarioConfig; got {type(params).__name__}")
    key = (params, num_envs, id(xp))  # the namespaces are cached singletons
    core = _CORES.get(key)
    if core is None:
        if len(_CORES) >= 32:
            _CORES.pop(next(iter(_CORES)))
        core = _CORES[key] = Core(params, num_envs, xp)
    return core


def _state_core(state: CoreState, params: ScenarioConfig) -> Core:
    if not isinstance(state, CoreState):
        raise ValueError(f"state must be a jmsra_env.core.CoreState; got {type(state).__name__}")
    xp = namespace(state.world.walk_m)  # the state's float arrays carry its backend and dtype
    core = _core(params, int(state.round.shape[0]), xp)
    core.load(state)
    return core


def reset(rng, params: ScenarioConfig, num_envs: int = 1, xp=NUMPY, *, state: CoreState | None = None,
          mask=None) -> CoreState:
    """A new state: ``num_envs`` fresh episodes on the namespace ``xp``; or, given ``state``, that
    state with fresh episodes where ``mask`` ((M,) bool) is true (every env when ``mask`` is None)."""
    if state is None:
        if mask is not None:
            raise ValueError("mask applies to an existing state: pass state=")
        core = _core(params, int(num_envs), xp)
        core.reset(rng, None)
    else:
        core = _state_core(state, params)
        if mask is not None:
            mask = core.xp.asarray(mask)
            if tuple(mask.shape) != (core.num_envs,) or mask.dtype != core.xp.bool_:
                raise ValueError(f"mask must be a bool array of shape ({core.num_envs},); got {mask.dtype} {tuple(mask.shape)}")
            if bool(mask.all()):  # every env: a full reset, as the vector envs do
                mask = None
        core.reset(rng, mask)
    return core.snapshot()


def observe(state: CoreState, params: ScenarioConfig) -> dict[str, Any]:
    """The Dict observation of the state's current round (fresh ``(M, ...)`` arrays)."""
    return _state_core(state, params).observe()


def charge(state: CoreState, media, bandwidth_hz, params: ScenarioConfig) -> model.LatencyBreakdown:
    """The latency breakdown of a decision on the state's current round (true channel)."""
    return _state_core(state, params).charge(media, bandwidth_hz)


def step(rng, state: CoreState, action, params: ScenarioConfig):
    """One round from ``state`` with the decision ``action = (media, bandwidth_hz)`` (``(M, N)``
    each): returns ``(new_state, obs, reward, terminated, truncated, info)``.

    ``reward`` is ``-latency_s``; ``truncated`` is true where the episode has played
    ``params.episode_rounds`` rounds (no auto-reset: see the module docstring); ``info`` holds the
    charge (``latency_s``, ``uncapped_latency_s``, ``capped``, ``media``, ``bandwidth_hz``,
    ``finish_s``, ``round``) and, on sessions, ``evicted``, ``evictions``, ``kv_pool_used_bytes``
    and ``kv_pool_used_fraction``.
    """
    try:
        media, bandwidth_hz = action
    except (TypeError, ValueError):
        raise ValueError("action must be the decision (media, bandwidth_hz), two (M, N) arrays") from None
    core = _state_core(state, params)
    xp = core.xp
    media = xp.asarray(media)
    bandwidth_hz = xp.as_float(bandwidth_hz)
    shape = (core.num_envs, params.n_agents)
    for name, value in (("media", media), ("bandwidth_hz", bandwidth_hz)):
        if tuple(value.shape) != shape:
            raise ValueError(f"action field '{name}' must have shape {shape}; got {tuple(value.shape)}")
    br = core.charge(media, bandwidth_hz)
    info = core.charge_info(br)
    core.advance(rng, media, info)
    new_state = core.snapshot()
    truncated = new_state.round >= params.episode_rounds
    terminated = xp.zeros(core.num_envs, dtype=xp.bool_)
    return new_state, core.observe(), -br.latency_s, terminated, truncated, info
