"""The batched environment: ``M`` JMSRA environments stepped together as NumPy arrays.

:class:`JMSRAVectorEnv` is to :class:`~jmsra_env.env.JMSRAEnv` what Gymnasium's
``CartPoleVectorEnv`` is to ``CartPoleEnv``: the same world process (:class:`WorldProcess` with
``M`` worlds instead of one) and the same latency model (:func:`jmsra_env.model.latency` over a
batch of :class:`~jmsra_env.model.RoundTerms`), advanced with a handful of array operations per
step and no Python loop over environments. Get one with::

    envs = gymnasium.make_vec("jmsra_env/JMSRA-Box-v1", num_envs=1024,
                              vectorization_mode="vector_entry_point")
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from . import actions, model, render
from .config import ScenarioConfig
from .core import Core
from .env import check_env_arguments, make_action_space, observation_space_of, resolve_env_config
from .solvers import solve

__all__ = ["JMSRAVectorEnv", "batch_breakdown_info", "vector_arguments"]

# Per-round scalars and per-agent arrays of a LatencyBreakdown, by info key.
_SCALAR_KEYS = ("latency_s", "uncapped_latency_s", "capped", "answer_s")
_FINAL_KEYS = ("final_obs", "final_info")
_AGENT_KEYS = ("media", "bandwidth_hz", "rate_bps", "compute_s", "transmission_s", "finish_s", "receiver_s")


def vector_arguments(num_envs, autoreset_mode, max_episode_steps, cfg: ScenarioConfig):
    """``(num_envs, AutoresetMode, config)`` of a vector env's arguments, validated (every view's
    vector env takes them): ``max_episode_steps`` (``gym.make_vec(id, max_episode_steps=K)``)
    replaces ``episode_rounds``; ``None`` or -1 keep it."""
    try:
        mode = AutoresetMode(autoreset_mode)
    except ValueError:
        raise ValueError(
            f"autoreset_mode must be an AutoresetMode or one of {[m.value for m in AutoresetMode]}; "
            f"got {autoreset_mode!r}"
        ) from None
    if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
        raise ValueError(f"num_envs must be an integer >= 1; got {num_envs!r}")
    if max_episode_steps is not None and max_episode_steps != -1:  # -1: no limit but our own
        if isinstance(max_episode_steps, bool) or not isinstance(max_episode_steps, (int, np.integer)):
            raise ValueError(f"max_episode_steps must be an integer >= 1 or None; got {max_episode_steps!r}")
        cfg = cfg.with_overrides(episode_rounds=int(max_episode_steps))
    return int(num_envs), mode, cfg


def batch_breakdown_info(br: model.LatencyBreakdown) -> dict[str, np.ndarray]:
    """The batched twin of :func:`jmsra_env.env.breakdown_info`: one array per key, env axis first.

    Row ``i`` of every array equals what ``breakdown_info`` gives for round ``i`` alone.
    """
    info = {key: getattr(br, key) for key in _SCALAR_KEYS + _AGENT_KEYS}
    info["kv_share"] = br.media.mean(axis=-1)
    return info


class JMSRAVectorEnv(VectorEnv):
    """``num_envs`` independent JMSRA environments of one scenario, stepped as arrays.

    ## Description

    The batch twin of :class:`~jmsra_env.env.JMSRAEnv` (see its docstring for the problem, the
    spaces of one environment, the reward and the info keys). All ``M`` sub-environments share one
    :class:`~jmsra_env.world.WorldProcess` of ``M`` worlds and one generator, ``self.np_random``,
    seeded by ``reset(seed=...)``; every step is a fixed number of NumPy calls whatever ``M``.

    A batch of one reproduces ``JMSRAEnv`` exactly: the single environment *is* a
    ``WorldProcess`` of one world drawing from its generator in the same order (reset, one draw per
    step, the reset after truncation), so ``JMSRAVectorEnv(num_envs=1)`` reset with the same seed
    gives bit-identical observations, rewards and infos over any number of episodes. For ``M > 1``
    the sub-environments are independent draws from the same distributions.

    ## Spaces

    ``single_observation_space`` / ``single_action_space`` are those of ``JMSRAEnv``;
    ``observation_space`` / ``action_space`` batch them with ``gymnasium.vector.utils.batch_space``:
    a Dict of ``(M, N)`` arrays (``receiver_load``: ``(M, 1)``); actions either
    ``Dict(media=(M, N), bandwidth=(M, N))`` or ``Box(-1, 1, (M, 2N))``. A bad action raises
    ``ValueError`` naming the field (``media``, ``bandwidth`` or ``action``); the batch is unchanged.

    ## Autoreset

    Every episode has the same length and none terminates, so all sub-environments truncate
    together after ``episode_rounds`` rounds (unless ``reset(options={"reset_mask": ...})`` put
    some out of step). ``metadata["autoreset_mode"]`` says which of Gymnasium's three modes is used:

    * ``AutoresetMode.NEXT_STEP`` (default, as ``SyncVectorEnv`` and ``CartPoleVectorEnv``; the
      mode Gymnasium's vector observation wrappers require): the step that truncates returns the
      episode's final observation; the *next* ``step`` resets that sub-environment, ignores its
      action and returns its first observation with reward 0, ``terminated = truncated = False``
      and its reset info (``round`` 0; the breakdown keys are masked out).
    * ``AutoresetMode.SAME_STEP`` (``autoreset_mode="SameStep"``; what Stable-Baselines3 expects,
      used by :class:`jmsra_agents.native_vec_env.NativeVecEnv`): the step that truncates resets the
      sub-environment at once and returns the first observation of its next episode, with the
      reward of the last round; ``infos["final_obs"]`` (object array: the final observation dict
      of each finished sub-environment, ``None`` elsewhere; mask ``_final_obs``) and
      ``infos["final_info"]`` (the step's info; mask ``_final_info``) keep what it ended with;
      the top level holds its reset info, as ``SyncVectorEnv``'s. Every step is a real round (no
      step with reward 0 between episodes).
    * ``AutoresetMode.DISABLED`` (``autoreset_mode="Disabled"``; what TorchRL prefers): nothing is
      reset automatically. The step that truncates returns the final observation; reset the
      finished sub-environments with ``reset(options={"reset_mask": mask})`` (the others keep
      their episode). Stepping while a sub-environment has ended and was not reset raises
      ``RuntimeError`` (Gymnasium: it fails) and changes nothing.

    ## Info (dict of arrays, Gymnasium's vector convention)

    Every step, for every sub-environment that played a round (mask ``_key``): the breakdown of
    the round just played, row ``i`` equal to the single environment's info — ``latency_s``,
    ``uncapped_latency_s``, ``capped``, ``answer_s``, ``kv_share``, ``round`` (shape ``(M,)``) and
    ``media``, ``bandwidth_hz``, ``rate_bps``, ``compute_s``, ``transmission_s``, ``finish_s``,
    ``receiver_s`` (``(M, N)``); with ``jmsra_in_info`` also ``jmsra_latency_s``. With
    ``SAME_STEP`` the round that ended an episode is in ``final_info`` (the layout of
    ``SyncVectorEnv``).

    ## Arguments

    ``JMSRAVectorEnv(num_envs=1, config=None, *, base_config=None, action_form="dict",
    render_mode=None, autoreset_mode="NextStep", max_episode_steps=None, **overrides)``: as
    ``JMSRAEnv``, plus ``num_envs``, ``autoreset_mode`` (an ``AutoresetMode`` or its value) and
    ``max_episode_steps`` (what ``gym.make_vec(id, max_episode_steps=K)`` passes; replaces
    ``episode_rounds``; ``None`` or -1: ``episode_rounds``). ``render()`` returns a
    tuple with one frame per sub-environment (``"ansi"`` tables or ``"rgb_array"`` figures).

    ## Version History

    * v0: initial release.
    """

    metadata = {
        "render_modes": ["ansi", "rgb_array"],
        "render_fps": 4,
        "autoreset_mode": AutoresetMode.NEXT_STEP,  # per instance: see ``autoreset_mode``
    }

    def __init__(
        self,
        num_envs: int = 1,
        config: ScenarioConfig | Mapping[str, Any] | None = None,
        *,
        base_config: ScenarioConfig | Mapping[str, Any] | None = None,
        action_form: str = "dict",
        render_mode: str | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        max_episode_steps: int | None = None,
        **overrides: Any,
    ):
        num_envs, mode, cfg = vector_arguments(
            num_envs, autoreset_mode, max_episode_steps, resolve_env_config(config, base_config, overrides)
        )
        check_env_arguments(action_form, render_mode, self.metadata["render_modes"])
        self.metadata = {**type(self).metadata, "autoreset_mode": mode}
        self.autoreset_mode = mode
        self._same_step = mode == AutoresetMode.SAME_STEP
        self.num_envs = num_envs
        self.config = cfg
        self.action_form = action_form
        self.render_mode = render_mode
        self.consts = model.model_constants(cfg)
        self.single_observation_space = observation_space_of(cfg)
        self.single_action_space = make_action_space(cfg, action_form)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._batch_shape = (num_envs,)
        self.core = Core(cfg, num_envs)  # the batched round: world, receivers (sessions), counters
        self._autoreset: np.ndarray | None = None  # NEXT_STEP: who resets at the next step
        self._ended: np.ndarray | None = None  # DISABLED: who ended and awaits reset(reset_mask)
        self._last_info: dict[str, Any] | None = None
        self._last_obs: dict[str, np.ndarray] | None = None

    # -- Gymnasium API -----------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Reset every sub-environment (or those in ``options["reset_mask"]``).

        ``seed`` (an int) seeds the one generator of the batch; sub-environments differ because
        they take different draws from it, not different seeds.
        """
        if seed is not None and not isinstance(seed, (int, np.integer)):
            raise ValueError(
                f"seed must be an int or None (one generator serves the whole batch); got {seed!r}"
            )
        super().reset(seed=None if seed is None else int(seed))
        mask = None if options is None else options.get("reset_mask")
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != self._batch_shape or mask.dtype != np.bool_:
                raise ValueError(
                    f"options['reset_mask'] must be a bool array of shape {self._batch_shape}; "
                    f"got {mask.dtype} {mask.shape}"
                )
        if mask is not None and mask.all():  # a full reset (as the single env's: same draws)
            mask = None
        self.core.reset(self.np_random, mask)
        if mask is None:
            self._autoreset = self._ended = None
        else:
            self._autoreset = _clear(self._autoreset, mask)
            self._ended = _clear(self._ended, mask)
        self._last_info = None
        obs = self._observation()
        flags = np.ones(self.num_envs, dtype=np.bool_) if mask is None else mask.copy()
        return obs, {"round": self.core.round.copy(), "_round": flags}

    def step(self, actions):
        core = self.core
        if core.terms is None:
            raise RuntimeError("call reset() before step()")
        if self._ended is not None:  # DISABLED: as Gymnasium documents, this fails
            raise RuntimeError(
                f"sub-environments {np.flatnonzero(self._ended).tolist()} ended and autoreset_mode is "
                "DISABLED: reset them with reset(options={'reset_mask': mask}) before stepping"
            )
        media, bandwidth_hz = self.decode_action(actions)
        resetting = self._autoreset  # NEXT_STEP: sub-environments that ended at the last step
        if resetting is not None and resetting.all():
            return self._reset_step()
        br = core.charge(media, bandwidth_hz)
        info = batch_breakdown_info(br)
        info["round"] = core.round.copy()
        if self.config.jmsra_in_info:
            info["jmsra_latency_s"] = np.asarray(solve("jmsra", core.terms).latency_s, dtype=np.float64)
        rewards = -br.latency_s
        rng = self.np_random
        core.advance(rng, media, info)
        played = np.ones(self.num_envs, dtype=np.bool_)
        if resetting is not None:  # some (not all) start over instead of playing
            core.reset(rng, resetting)
            info["round"][resetting] = 0
            rewards[resetting] = 0.0
            played = ~resetting
        truncated = core.round >= self.config.episode_rounds
        obs = core.observe()
        for key in tuple(info):
            info["_" + key] = played
        info["_round"] = np.ones(self.num_envs, dtype=np.bool_)
        self._autoreset = None
        if truncated.any():
            if self._same_step:
                obs = self._reset_finished(obs, info, truncated)
            elif self.autoreset_mode == AutoresetMode.DISABLED:
                self._ended = truncated.copy()
            else:
                self._autoreset = truncated
        self._last_obs = obs
        self._last_info = info
        terminations = np.zeros(self.num_envs, dtype=np.bool_)
        return obs, rewards, terminations, truncated, info

    def _reset_step(self):
        """NEXT_STEP, every sub-environment ended at the last step: start them all over."""
        self.core.reset(self.np_random, None)
        self._autoreset = None
        self._last_info = None
        obs = self._observation()
        m = self.num_envs
        info = {"round": np.zeros(m, dtype=np.int64), "_round": np.ones(m, dtype=np.bool_)}
        return obs, np.zeros(m), np.zeros(m, dtype=np.bool_), np.zeros(m, dtype=np.bool_), info

    def _reset_finished(self, obs, info, finished):
        """SAME_STEP: move the final observation and info into ``info``, reset, return the new obs.

        As ``SyncVectorEnv``: the top level holds, for a reset sub-environment, its reset info
        (``round`` 0; the step's keys masked out, and dropped when no sub-environment has them).
        """
        final_info = {k: v.copy() for k, v in info.items() if not k.startswith("_")}
        final_info.update({"_" + k: finished for k in tuple(final_info)})
        kept = ~finished
        for key in tuple(k for k in info if not k.startswith("_") and k != "round"):
            mask = info["_" + key] & kept
            if mask.any():
                info["_" + key] = mask
            else:
                del info[key], info["_" + key]
        info["round"][finished] = 0
        final_obs = np.full(self.num_envs, None, dtype=object)
        done = np.flatnonzero(finished)
        keys = tuple(obs)
        # Unbatch only the finished sub-environments' observations (Gymnasium's convention).
        for i, row in zip(done, zip(*(obs[k][done] for k in keys))):
            final_obs[i] = dict(zip(keys, row))
        info["final_obs"] = final_obs
        info["_final_obs"] = finished
        info["final_info"] = final_info
        info["_final_info"] = finished
        self.core.reset(self.np_random, None if finished.all() else finished)
        return self.core.observe()

    def render(self) -> tuple[Any, ...] | None:
        """One frame per sub-environment: its last round (``"ansi"`` text or ``"rgb_array"``)."""
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='ansi' or 'rgb_array'")
            return None
        draw = render.ansi_table if self.render_mode == "ansi" else render.rgb_figure
        obs, last = self._last_obs, self._last_info
        frames = []
        for i in range(self.num_envs):
            info = None
            if last is not None and "final_info" in last and last["_final_info"][i]:
                last_i = last["final_info"]  # SAME_STEP: the round that ended the episode
            else:
                last_i = last
            if last_i is not None and last_i.get("_latency_s", np.zeros(self.num_envs, bool))[i]:
                info = {k: v[i] for k, v in last_i.items() if not k.startswith("_") and k not in _FINAL_KEYS}
            obs_i = None if obs is None else {k: v[i] for k, v in obs.items()}
            frames.append(draw(info, obs_i, self.config))
        return tuple(frames)

    # -- helpers -----------------------------------------------------------------------------

    def decode_action(self, batch) -> tuple[np.ndarray, np.ndarray]:
        """Validate a batch of actions; return ``(media (M, N), bandwidth_hz (M, N))``."""
        if self.action_form == "box":
            return actions.decode_box(batch, self.observed_terms(), self._batch_shape)
        return actions.decode_dict(batch, self.config.n_agents, self.consts.bandwidth_hz, self._batch_shape)

    def observed_terms(self) -> model.RoundTerms:
        """The batched terms ``(M, N)`` the last observation shows (what the Box form decodes on);
        equal to :meth:`current_terms` when ``csi_delay = 0``."""
        self.current_terms()
        return self.core.observed_terms(self._last_obs)

    def current_terms(self) -> model.RoundTerms:
        """The batched model terms ``(M, N)`` the next step will charge (true channel)."""
        if self.core.terms is None:
            raise RuntimeError("call reset() first")
        return self.core.terms

    @property
    def receiver_state(self):
        """Sessions: the receivers' state (batch ``(M,)``) before the next step; else None."""
        return None if self.core.receiver is None else self.core.receiver.state

    # The core's parts under the names the experts read (the session's world, the round counters).
    @property
    def _world(self):
        return self.core.world

    @property
    def _round(self):
        return self.core.round

    @property
    def _terms(self):
        return self.core.terms

    def _observation(self) -> dict[str, np.ndarray]:
        obs = self.core.observe()
        self._last_obs = obs
        return obs


def _clear(flags: np.ndarray | None, mask: np.ndarray) -> np.ndarray | None:
    """``flags`` without the sub-environments in ``mask`` (None when none is left)."""
    if flags is None:
        return None
    flags = flags & ~mask
    return flags if flags.any() else None
