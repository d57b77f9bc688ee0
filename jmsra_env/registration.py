"""Registered scenario variants: each a few overrides of the default scenario."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

__all__ = [
    "VARIANTS",
    "FORM_VERSIONS",
    "ENV_IDS",
    "SESSION_VARIANTS",
    "SESSION_ENV_IDS",
    "register_envs",
    "env_id",
    "variant_of",
    "is_session_id",
]

NAMESPACE = "jmsra_env"

# name -> overrides of the default ScenarioConfig
VARIANTS: dict[str, dict[str, Any]] = {
    "JMSRA": {},
    "JMSRA-N8": {"n_agents": 8},
    "JMSRA-N16": {"n_agents": 16},
    "JMSRA-StaleCSI": {"csi_delay": 1, "fading_correlation": 0.9},
}

_MIB = 1 << 20
# Sessions (docs/sessions.md): the receiver keeps the KV caches it was sent in a pool of limited
# size. name -> overrides (the pool defaults to N x 160 MiB).
SESSION_VARIANTS: dict[str, dict[str, Any]] = {
    "JMSRA-Session": {"session.enabled": True},
    "JMSRA-Session-N8": {"session.enabled": True, "n_agents": 8},
    # N x 64 MiB: the pool binds early and a myopic expert thrashes
    "JMSRA-Session-TightPool": {"session.enabled": True, "session.kv_pool_bytes": 4 * 64 * _MIB},
    # 4 GiB never binds: 4 agents x (2048 + 64 x 512) tokens x 16 KiB = 2.125 GiB at most
    "JMSRA-Session-LargePool": {"session.enabled": True, "session.kv_pool_bytes": 4 * 1024 * _MIB},
}


# Version of each action form's IDs (Gymnasium's convention: a behaviour change bumps it). Box v1:
# log-scale weights above the cap floors replaced v0's linear shares, where -1 was zero bandwidth.
# The v0 Box IDs are not registered: gym.make on one raises gymnasium.error.DeprecatedEnv naming v1.
FORM_VERSIONS = {"dict": 0, "box": 1}


def env_id(variant: str, action_form: str = "dict") -> str:
    """The registered ID of a variant in an action form, e.g. ``jmsra_env/JMSRA-N8-Box-v1``."""
    suffix = "-Box" if action_form == "box" else ""
    return f"{NAMESPACE}/{variant}{suffix}-v{FORM_VERSIONS[action_form]}"


ENV_IDS: tuple[str, ...] = tuple(env_id(v, f) for v in VARIANTS for f in ("dict", "box"))
SESSION_ENV_IDS: tuple[str, ...] = tuple(env_id(v, f) for v in SESSION_VARIANTS for f in ("dict", "box"))


def variant_of(id_: str) -> tuple[str, str]:
    """``(variant, action_form)`` of a registered ID, single-round or session (``module:`` prefix
    allowed); ``ValueError`` else."""
    id_ = id_.split(":", 1)[-1]
    for v in (*VARIANTS, *SESSION_VARIANTS):
        for f in ("dict", "box"):
            if env_id(v, f) == id_:
                return v, f
    raise ValueError(f"unknown environment id {id_!r}; registered: {list(ENV_IDS + SESSION_ENV_IDS)}")


def is_session_id(id_: str) -> bool:
    """Whether a registered ID is a session variant."""
    return variant_of(id_)[0] in SESSION_VARIANTS


def register_envs() -> None:
    """Register every variant in both action forms (idempotent)."""
    kinds = (
        (VARIANTS, "jmsra_env.wrappers:make_env", "jmsra_env.wrappers:make_vector_env"),
        (SESSION_VARIANTS, "jmsra_env.wrappers:make_session_env", "jmsra_env.wrappers:make_session_vector_env"),
    )
    for variants, entry, vector_entry in kinds:
        for variant, overrides in variants.items():
            for form in ("dict", "box"):
                id_ = env_id(variant, form)
                if id_ in gym.registry:
                    continue
                gym.register(
                    id=id_,
                    entry_point=entry,
                    vector_entry_point=vector_entry,
                    kwargs={"base_config": dict(overrides), "action_form": form},
                )
