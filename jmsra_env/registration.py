"""Registered scenario variants: each a few overrides of the default scenario."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

__all__ = ["VARIANTS", "FORM_VERSIONS", "ENV_IDS", "register_envs", "env_id", "variant_of"]

NAMESPACE = "jmsra_env"

# name -> overrides of the default ScenarioConfig
VARIANTS: dict[str, dict[str, Any]] = {
    "JMSRA": {},
    "JMSRA-N8": {"n_agents": 8},
    "JMSRA-N16": {"n_agents": 16},
    "JMSRA-StaleCSI": {"csi_delay": 1, "fading_correlation": 0.9},
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


def variant_of(id_: str) -> tuple[str, str]:
    """``(variant, action_form)`` of a registered ID (``module:`` prefix allowed); ``ValueError`` else."""
    id_ = id_.split(":", 1)[-1]
    for v in VARIANTS:
        for f in ("dict", "box"):
            if env_id(v, f) == id_:
                return v, f
    raise ValueError(f"unknown environment id {id_!r}; registered: {list(ENV_IDS)}")


def register_envs() -> None:
    """Register every variant in both action forms (idempotent)."""
    for variant, overrides in VARIANTS.items():
        for form in ("dict", "box"):
            id_ = env_id(variant, form)
            if id_ in gym.registry:
                continue
            gym.register(
                id=id_,
                entry_point="jmsra_env.wrappers:make_env",  # JMSRAEnv, + features / action_encoding
                vector_entry_point="jmsra_env.wrappers:make_vector_env",
                kwargs={"base_config": dict(overrides), "action_form": form},
            )
