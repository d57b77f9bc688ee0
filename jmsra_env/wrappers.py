"""Wrappers: the SB3-ready Box action form over a Dict-action environment."""

from __future__ import annotations

import gymnasium as gym

from . import actions
from .env import make_action_space

__all__ = ["BoxActionWrapper"]


class BoxActionWrapper(gym.ActionWrapper):
    """Expose a Dict-action :class:`~jmsra_env.JMSRAEnv` with the ``Box(-1, 1, (2N,))`` action form.

    ``a[:N] > 0`` selects KV; ``a[N:]`` are log-scale weights above the cap floors
    (:mod:`jmsra_env.actions`), decoded on the round the last observation shows. Use
    :func:`jmsra_env.encode_box` to turn an expert's decision into such an action.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        base = env.unwrapped
        if getattr(base, "action_form", None) != "dict":
            raise ValueError("BoxActionWrapper wraps a JMSRAEnv with action_form='dict'")
        self.action_space = make_action_space(base.config, "box")

    def action(self, action):
        media, bandwidth_hz = actions.decode_box(action, self.env.unwrapped.observed_terms())
        return actions.encode_dict(media, bandwidth_hz)
