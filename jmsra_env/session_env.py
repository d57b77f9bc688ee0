"""Session environments (docs/sessions.md): the receiver keeps what it was sent, round after round.

:class:`SessionWorldProcess` draws the session's exogenous token process (growing contexts);
:class:`JMSRASessionEnv` and :class:`JMSRASessionVectorEnv` are :class:`~jmsra_env.env.JMSRAEnv`
and :class:`~jmsra_env.vector.JMSRAVectorEnv` with the receiver's state
(:class:`~jmsra_env.session.SessionState`) carried through their round hooks: the terms of a round
come from :func:`jmsra_env.session.session_terms`, the state changes by
:func:`jmsra_env.session.transition` after every round.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


from .config import ScenarioConfig
from .core.torch_env import TorchVectorEnv
from .env import SESSION_OBS_KEYS, JMSRAEnv, make_session_observation_space
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
    arguments; ``session.enabled`` is switched on, and the core keeps the receiver's state);
    what changes is below.
    """

    __doc__ = (__doc__ or "") + _SESSION_DOC

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


class JMSRASessionVectorEnv(JMSRAVectorEnv):
    """``num_envs`` session environments stepped as arrays: the batch twin of
    :class:`JMSRASessionEnv` as :class:`~jmsra_env.vector.JMSRAVectorEnv` is of
    :class:`~jmsra_env.env.JMSRAEnv` (a batch of one reproduces the single env exactly).

    Info adds, per sub-environment, ``evicted`` ``(M, N)``, ``evictions``,
    ``kv_pool_used_bytes`` and ``kv_pool_used_fraction`` ``(M,)``.
    """

    def __init__(self, num_envs: int = 1, config=None, *, base_config=None, **kwargs: Any):
        super().__init__(num_envs, config, base_config=base_config, **kwargs, **_SESSION_ON)


def make_session_vector_env(num_envs: int = 1, *args: Any, backend: str = "numpy", **kwargs: Any):
    """The vector entry point of the session IDs: :class:`JMSRASessionVectorEnv`, or with
    ``backend="torch"`` the torch vector env (:class:`jmsra_env.core.torch_env.TorchVectorEnv`,
    which takes ``device=``, ``dtype=``, ``features=`` and ``action_encoding=``)."""
    if backend == "torch":
        kwargs.setdefault("action_form", "dict")
        return TorchVectorEnv(num_envs, *args, **kwargs, **_SESSION_ON)
    if backend != "numpy":
        raise ValueError(f"backend must be 'numpy' or 'torch'; got {backend!r}")
    return JMSRASessionVectorEnv(num_envs, *args, **kwargs)
