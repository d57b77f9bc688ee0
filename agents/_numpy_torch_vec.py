"""TEMPORARY stand-in for the torch backend of the functional core (issue 17), until it lands.

``make_torch_vec_env`` gives the interface the core's ``gym.make_vec(..., backend="torch")`` will
have (observations ``(M, F)`` physics features, actions ``(M, 2N)`` deadline-encoded in [-1, 1],
rewards ``-latency_s``, ``SameStep`` autoreset, ``info["latency_s"]`` and on sessions
``info["evictions"]``, all torch tensors) over the existing NumPy batched environment, converting
at the boundary. Delete this module when ``jmsra_env`` has the torch backend; only
:mod:`agents.torch_ppo` imports it.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from jmsra_env import model
from jmsra_env.encoding import VectorEncodedAction
from jmsra_env.features import n_features, observation_features

__all__ = ["NumpyTorchVecEnv"]


class NumpyTorchVecEnv:
    """The NumPy vector env of ``env_id`` behind torch tensors (temporary; see the module docstring)."""

    def __init__(self, env_id: str, num_envs: int, config, *, device, dtype, features: str, action_encoding: str):
        import torch

        self.torch = torch
        base = gym.make_vec(env_id, num_envs=int(num_envs), vectorization_mode="vector_entry_point",
                            autoreset_mode="SameStep", config=config)
        self.env = VectorEncodedAction(base, action_encoding) if action_encoding != "box" else base
        self.config = config
        self.num_envs = int(num_envs)
        self.device, self.dtype = torch.device(device), dtype
        self.features = features
        self.consts = model.model_constants(config)
        self.session = bool(config.session.enabled)
        self.n_features = n_features(config.n_agents, features, session=self.session)
        self.n_actions = 2 * config.n_agents

    def _obs(self, obs):
        return self.torch.as_tensor(observation_features(obs, self.consts, self.features), device=self.device,
                                    dtype=self.dtype)

    def reset(self, seed: int | None = None):
        obs, _ = self.env.reset(seed=seed)
        return self._obs(obs), {}

    def step(self, actions):
        t = self.torch
        a = actions.detach().to("cpu", t.float64).numpy()
        obs, reward, terminated, truncated, info = self.env.step(a)
        out = {"latency_s": t.as_tensor(-np.asarray(reward), device=self.device, dtype=self.dtype)}
        if self.session:  # SameStep moves a finished row's info into final_info
            ev = np.zeros(self.num_envs)
            for src in (info, info.get("final_info") or {}):
                if "evictions" in src:
                    mask = src.get("_evictions", np.ones(self.num_envs, bool))
                    ev[mask] = np.asarray(src["evictions"], dtype=np.float64)[mask]
            out["evictions"] = t.as_tensor(ev, device=self.device, dtype=self.dtype)
        return (self._obs(obs), t.as_tensor(np.asarray(reward), device=self.device, dtype=self.dtype),
                t.as_tensor(terminated, device=self.device), t.as_tensor(truncated, device=self.device), out)

    def close(self) -> None:
        self.env.close()
