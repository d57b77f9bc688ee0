"""A Stable-Baselines3 ``VecEnv`` over the batched :class:`~jmsra_env.vector.JMSRAVectorEnv`.

SB3's ``DummyVecEnv`` steps ``n`` Python environments one after the other; :class:`NativeVecEnv`
steps all of them with one call of the NumPy-batched environment and only translates the result
into SB3's conventions::

    from jmsra_agents.native_vec_env import make_native_vec_env
    venv = make_native_vec_env("jmsra_env/JMSRA-Box-v1", n_envs=16, seed=0)
    model = PPO("MultiInputPolicy", venv)

SB3 semantics: ``reset()`` returns the observations only (seeded by a preceding ``seed(s)``);
``step`` auto-resets finished sub-environments in the same step (the batched env's
``AutoresetMode.SAME_STEP``), returns ``dones = terminated | truncated``, float32 rewards and a
list of one info dict per sub-environment, with ``terminal_observation`` and
``TimeLimit.truncated`` for those that finished.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.vec_env import VecEnv, VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn

import jmsra_env  # noqa: F401  (registers the environments)
from jmsra_env import model

__all__ = ["NativeVecEnv", "make_native_vec_env", "DEFAULT_INFO_KEYS"]

# The per-round scalars copied into each sub-environment's info dict (cheap; the per-agent
# breakdown arrays can be asked for with ``info_keys``). Keys absent from the step are skipped.
DEFAULT_INFO_KEYS = ("latency_s", "uncapped_latency_s", "capped", "kv_share", "round", "jmsra_latency_s",
                     "evictions", "kv_pool_used_fraction")  # (the last two: sessions)


class NativeVecEnv(VecEnv):
    """SB3 ``VecEnv`` adapter over a Gymnasium vector env with ``SAME_STEP`` autoreset.

    ``venv``: a :class:`~jmsra_env.vector.JMSRAVectorEnv` with ``autoreset_mode="SameStep"``
    (``gymnasium.make_vec(id, num_envs=M, vectorization_mode="vector_entry_point",
    autoreset_mode="SameStep")``). ``info_keys``: which of its info keys
    go into each sub-environment's info dict (default :data:`DEFAULT_INFO_KEYS`; per-agent keys
    such as ``"bandwidth_hz"`` give that row).

    The sub-environments share one generator: ``seed(s)`` seeds the whole batch with ``s`` at the
    next ``reset()`` (SB3 hands out ``s, s+1, ...``; the first one is used). Attributes are those
    of the batched env, identical for every index (``get_attr("config")`` gives the scenario
    config once per sub-environment); ``set_attr`` therefore applies to all sub-environments.
    ``env_method`` calls the batched env's method once and returns its result per index, split
    by sub-environment when it is a batched :class:`~jmsra_env.model.RoundTerms`
    (e.g. ``env_method("current_terms")``).
    """

    def __init__(self, venv: gym.vector.VectorEnv, info_keys: Sequence[str] | None = None):
        mode = venv.metadata.get("autoreset_mode")
        if mode != AutoresetMode.SAME_STEP:
            raise ValueError(
                "NativeVecEnv needs a vector env with autoreset_mode SAME_STEP (make it with "
                f"autoreset_mode='SameStep'); got {mode!r}"
            )
        self.venv = venv
        self.info_keys = tuple(DEFAULT_INFO_KEYS if info_keys is None else info_keys)
        self._actions: Any = None
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)

    # -- the SB3 VecEnv API ------------------------------------------------------------------

    def reset(self):
        seed = self._seeds[0]
        options = self._options[0] or None
        obs, info = self.venv.reset(seed=seed, options=options)
        self.reset_infos = self._split_info(info, ("round",))
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, terminated, truncated, info = self.venv.step(self._actions)
        self._actions = None
        dones = terminated | truncated
        infos = self._split_info(info, self.info_keys)
        if dones.any():
            final_obs = info["final_obs"]
            finals = self._split_info(info["final_info"], self.info_keys)  # the round that ended it
            time_limit = truncated & ~terminated
            for i in np.flatnonzero(dones):
                infos[i] = finals[i]
                infos[i]["terminal_observation"] = final_obs[i]
                infos[i]["TimeLimit.truncated"] = bool(time_limit[i])
        return obs, rewards.astype(np.float32), dones, infos

    def close(self) -> None:
        self.venv.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self.venv, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(
        self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs
    ) -> list[Any]:
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        idx = list(self._get_indices(indices))
        if isinstance(result, model.RoundTerms) and result.batch_shape == (self.num_envs,):
            return [result[i] for i in idx]
        return [result for _ in idx]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        if self.render_mode != "rgb_array":
            return [None for _ in range(self.num_envs)]
        return list(self.venv.render())

    # -- helpers -----------------------------------------------------------------------------

    def _split_info(self, info: dict[str, Any], keys: Sequence[str]) -> list[dict[str, Any]]:
        """One dict per sub-environment from Gymnasium's dict of arrays (the chosen keys)."""
        present = [k for k in keys if k in info]
        columns = [info[k].tolist() if info[k].ndim == 1 else list(info[k]) for k in present]
        if not columns:
            return [{} for _ in range(self.num_envs)]
        return [dict(zip(present, row)) for row in zip(*columns)]


def make_native_vec_env(
    env_id: str,
    n_envs: int,
    seed: int | None = None,
    config: Any = None,
    *,
    monitor: bool = True,
    info_keys: Sequence[str] | None = None,
) -> VecEnv:
    """``n_envs`` copies of a registered JMSRA environment as one batched SB3 ``VecEnv``.

    The SB3 counterpart of ``make_vec_env(env_id, n_envs, seed=seed, env_kwargs={"config":
    config})``: ``config`` (a ``ScenarioConfig`` or a mapping of overrides) is applied over the
    registered variant; ``seed`` seeds the first ``reset()`` and the action space; with
    ``monitor`` (default, like ``make_vec_env``'s ``Monitor``) the result is wrapped in
    ``VecMonitor`` so that SB3 logs episode returns. Use a ``-Box-`` ID for SB3's algorithms.
    """
    kwargs = {} if config is None else {"config": config}
    venv = gym.make_vec(
        env_id, num_envs=n_envs, vectorization_mode="vector_entry_point",
        autoreset_mode=AutoresetMode.SAME_STEP, **kwargs,
    )
    vec: VecEnv = NativeVecEnv(venv, info_keys=info_keys)
    if seed is not None:
        vec.seed(seed)
        vec.action_space.seed(seed)
    if monitor:
        vec = VecMonitor(vec)
    return vec
