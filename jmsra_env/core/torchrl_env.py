"""A TorchRL environment over the core: ``M`` JMSRA environments as one ``EnvBase`` on a device.

:class:`JMSRATorchRLEnv` serves TorchRL's collectors, objectives and transforms directly from the
torch backend (no Gymnasium round trip, no host copies)::

    from jmsra_env.core.torchrl_env import JMSRATorchRLEnv
    env = JMSRATorchRLEnv("jmsra_env/JMSRA-Session-Box-v1", num_envs=1024, device="cpu",
                          features="physics", action_encoding="deadline")
    td = env.rollout(64)       # TensorDict [1024, 64]: observation, action, next/reward, ...

Keys: ``observation`` (``(M, F)`` float32 features), ``action`` (``(M, 2N)`` in [-1, 1], the Box
form under ``action_encoding``), ``reward`` (``(M, 1)``, ``-latency_s``), ``done`` /
``terminated`` / ``truncated`` (``(M, 1)`` bool) and ``latency_s`` (``(M, 1)``). Episodes end
together after ``episode_rounds`` rounds; TorchRL resets the finished ones through ``_reset``
(partial resets included). The round is :class:`jmsra_env.core.Core`'s, through
:class:`~jmsra_env.core.torch_env.TorchVectorEnv` with autoreset disabled.
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

from ..features import DEFAULT_FEATURES
from ..registration import variant_of
from .torch_env import TorchVectorEnv

__all__ = ["JMSRATorchRLEnv"]


class JMSRATorchRLEnv(EnvBase):
    """A batched TorchRL env of a registered Box ID (see the module docstring).

    ``JMSRATorchRLEnv(env_id, num_envs=1, device="cpu", dtype=torch.float32, features="physics",
    action_encoding="deadline", seed=None, **overrides)``.
    """

    def __init__(
        self,
        env_id: str = "jmsra_env/JMSRA-Box-v1",
        num_envs: int = 1,
        device: Any = "cpu",
        dtype: Any = None,
        features: str = DEFAULT_FEATURES,
        action_encoding: str | None = "deadline",
        seed: int | None = None,
        **overrides: Any,
    ):
        import gymnasium as gym

        variant, form = variant_of(env_id)
        if form != "box":
            raise ValueError(f"JMSRATorchRLEnv takes a Box ID (e.g. jmsra_env/JMSRA-Box-v1); got {env_id!r}")
        if features is None:
            raise ValueError("JMSRATorchRLEnv needs features= ('log' or 'physics'): its observation is a tensor")
        spec = gym.spec(env_id)
        base = {**spec.kwargs.get("base_config", {})}
        self._venv = TorchVectorEnv(
            num_envs, base_config=base, action_form="box", device=device, dtype=dtype, features=features,
            action_encoding=action_encoding, autoreset_mode="Disabled", **overrides,
        )
        super().__init__(device=self._venv.device, batch_size=torch.Size([num_envs]))
        m, f = num_envs, self._venv.single_observation_space.shape[0]
        a = self._venv.single_action_space.shape[0]
        self.num_envs = m
        self.observation_spec = Composite(
            observation=Unbounded((m, f), dtype=torch.float32, device=self.device),
            latency_s=Unbounded((m, 1), dtype=self._venv.dtype, device=self.device),
            shape=(m,),
        )
        self.action_spec = Bounded(-1.0, 1.0, (m, a), dtype=torch.float32, device=self.device)
        self.reward_spec = Unbounded((m, 1), dtype=torch.float32, device=self.device)
        self.done_spec = Composite(
            done=Categorical(2, (m, 1), dtype=torch.bool, device=self.device),
            terminated=Categorical(2, (m, 1), dtype=torch.bool, device=self.device),
            truncated=Categorical(2, (m, 1), dtype=torch.bool, device=self.device),
            shape=(m,),
        )
        self._obs = None
        self._latency = torch.zeros((m, 1), dtype=self._venv.dtype, device=self.device)
        if seed is not None:
            self.set_seed(seed)

    @property
    def vector_env(self) -> TorchVectorEnv:
        """The torch vector env underneath (its ``core`` holds the state)."""
        return self._venv

    def _set_seed(self, seed: int | None):
        self._seed = seed
        self._venv.reset(seed=seed)
        self._obs = None  # the next _reset starts from this seed's first episode
        return seed

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        mask = None
        if tensordict is not None and "_reset" in tensordict.keys():
            mask = tensordict.get("_reset").reshape(self.num_envs).to(self.device)
        if self._obs is None or mask is None:
            if self._obs is None and self._venv.core.terms is not None:
                obs = self._venv._observe()  # seeded by _set_seed: its first observation
            else:
                obs, _ = self._venv.reset()
        else:
            obs, _ = self._venv.reset(options={"reset_mask": mask})
        self._obs = obs
        false = torch.zeros((self.num_envs, 1), dtype=torch.bool, device=self.device)
        return TensorDict(
            {"observation": obs, "latency_s": torch.zeros_like(self._latency), "done": false,
             "terminated": false.clone(), "truncated": false.clone()},
            batch_size=self.batch_size, device=self.device,
        )

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = tensordict.get("action")
        obs, reward, terminated, truncated, info = self._venv.step(action)
        self._obs = obs
        return TensorDict(
            {
                "observation": obs,
                "reward": reward.to(torch.float32).reshape(self.num_envs, 1),
                "latency_s": info["latency_s"].reshape(self.num_envs, 1),
                "done": (terminated | truncated).reshape(self.num_envs, 1),
                "terminated": terminated.reshape(self.num_envs, 1),
                "truncated": truncated.reshape(self.num_envs, 1),
            },
            batch_size=self.batch_size, device=self.device,
        )
