"""Action encodings: moved to :mod:`jmsra_env.encoding` (no torch or SB3 needed) and re-exported
here, plus :class:`EncodedActionVecEnv`, the encoding under a Stable-Baselines3 ``VecEnv``."""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from jmsra_env import model
from jmsra_env import encoding as _encoding
from jmsra_env.encoding import *  # noqa: F401,F403 - the re-export is the point
from jmsra_env.encoding import DEFAULT_ENCODING, check_encoding, to_env_action

__all__ = [*_encoding.__all__, "EncodedActionVecEnv"]


class EncodedActionVecEnv(VecEnvWrapper):
    """Decode the policy's actions with an encoding, using each sub-env's last raw observation
    (validated: :func:`jmsra_env.encoding.policy_action`)."""

    jmsra_view = "action_encoding"  # how jmsra_env.policies.make_policy finds the encoding

    def __init__(self, venv: VecEnv, config, encoding: str = DEFAULT_ENCODING):
        check_encoding(encoding)
        super().__init__(venv)
        self.encoding = encoding
        self.consts = model.model_constants(config)
        self._last_obs = None

    def reset(self):
        obs = self.venv.reset()
        self._last_obs = {k: np.array(v, copy=True) for k, v in obs.items()}
        return obs

    def step_async(self, actions_) -> None:
        self.venv.step_async(to_env_action(self.encoding, actions_, self._last_obs, self.consts))

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        self._last_obs = {k: np.array(v, copy=True) for k, v in obs.items()}
        return obs, rewards, dones, infos
