"""jmsra_env: token / KV-cache media selection and bandwidth allocation for LLM agent teams.

Importing the package registers the environments (idempotently):

==================================  ====================================================
``jmsra_env/JMSRA-v0``              N = 4, Dict action
``jmsra_env/JMSRA-N8-v0``           N = 8
``jmsra_env/JMSRA-N16-v0``          N = 16
``jmsra_env/JMSRA-StaleCSI-v0``     N = 4, ``csi_delay = 1``, fading correlation 0.9
``jmsra_env/JMSRA-Box-v1`` ...      the SB3-ready twins (``Box(-1, 1, (2N,))`` actions):
                                    ``JMSRA-Box-v1``, ``JMSRA-N8-Box-v1``, ``JMSRA-N16-Box-v1``,
                                    ``JMSRA-StaleCSI-Box-v1``
``jmsra_env/JMSRA-Session-v0``      sessions (docs/sessions.md): contexts grow, the receiver
                                    keeps KV caches in a pool of N x 160 MiB; also
                                    ``-Session-N8-v0``, ``-Session-TightPool-v0`` (N x 64
                                    MiB), ``-Session-LargePool-v0`` (never binds), each with
                                    a ``-Box-v1`` twin
==================================  ====================================================

The Box IDs are at v1 (log-scale bandwidth weights above the cap floors; the v0 Box IDs raise
``gymnasium.error.DeprecatedEnv``). Every ID, session IDs included, takes ``features=`` and
``action_encoding=`` in ``gym.make`` / ``gym.make_vec`` (:mod:`jmsra_env.wrappers`).
"""

from __future__ import annotations

from .actions import decode_box, decode_dict, encode_box, encode_dict
from .config import (
    DEVICE_CATALOG,
    LLM_CATALOG,
    ChannelConfig,
    DeviceProfile,
    LLMProfile,
    ScenarioConfig,
    SessionConfig,
    WorkloadConfig,
    make_config,
)
from .env import JMSRAEnv
from .registration import ENV_IDS, VARIANTS, register_envs
from .wrappers import BoxActionWrapper

__version__ = "0.1.0"

__all__ = [
    "JMSRAEnv",
    "BoxActionWrapper",
    "ScenarioConfig",
    "ChannelConfig",
    "WorkloadConfig",
    "SessionConfig",
    "LLMProfile",
    "DeviceProfile",
    "LLM_CATALOG",
    "DEVICE_CATALOG",
    "make_config",
    "encode_box",
    "encode_dict",
    "decode_box",
    "decode_dict",
    "ENV_IDS",
    "VARIANTS",
    "register_envs",
]

register_envs()
