"""Wrappers: the SB3-ready Box action form over a Dict-action environment."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from . import actions
from .env import make_action_space

__all__ = ["BoxActionWrapper"]


class BoxActionWrapper(gym.ActionWrapper):
    """Expose a Dict-action :class:`~jmsra_env.JMSRAEnv` with the ``Box(-1, 1, (2N,))`` action form.

    ``a[:N] > 0`` selects KV; ``(a[N:] + 1) / 2`` are the bandwidth shares. Use
    :func:`jmsra_env.encode_box` to turn an expert's decision into such an action exactly.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        base = env.unwrapped
        if getattr(base, "action_form", None) != "dict":
            raise ValueError("BoxActionWrapper wraps a JMSRAEnv with action_form='dict'")
        self._n = base.config.n_agents
        self._total_hz = base.consts.bandwidth_hz
        self.action_space = make_action_space(base.config, "box")

    def action(self, action):
        media, bandwidth_hz = actions.decode_box(action, self._n, self._total_hz)
        peak = bandwidth_hz.max()
        return {"media": media, "bandwidth": bandwidth_hz / peak if peak > 0 else np.zeros(self._n)}
