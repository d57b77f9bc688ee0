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
from .session_world import SessionReceiver, SessionWorldProcess, max_context_tokens

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


def make_session_vector_env(num_envs: int = 1, *args: Any, backend: str = "numpy", **kwargs: Any):
    """The vector entry point of the session IDs: :class:`JMSRASessionVectorEnv`, or with
    ``backend="torch"`` the torch vector env (:class:`jmsra_env.core.torch_env.TorchVectorEnv`,
    which takes ``device=``, ``dtype=``, ``features=`` and ``action_encoding=``)."""
    if backend == "torch":
        from .core.torch_env import TorchVectorEnv

        kwargs.setdefault("action_form", "dict")
        return TorchVectorEnv(num_envs, *args, **kwargs, **_SESSION_ON)
    if backend != "numpy":
        raise ValueError(f"backend must be 'numpy' or 'torch'; got {backend!r}")
    return JMSRASessionVectorEnv(num_envs, *args, **kwargs)
