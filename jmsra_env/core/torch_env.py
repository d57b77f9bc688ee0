"""The torch vector env: the core's batched round on torch tensors, on a CPU or a GPU.

A :class:`gymnasium.vector.VectorEnv` whose observations, rewards, flags and infos are torch
tensors on one device and whose step never leaves it (ManiSkill3's convention for GPU envs)::

    envs = gym.make_vec("jmsra_env/JMSRA-Box-v1", num_envs=4096, vectorization_mode="vector_entry_point",
                        backend="torch", device="cuda", dtype=torch.float32,
                        features="physics", action_encoding="deadline")
    obs, info = envs.reset(seed=0)          # obs: (M, F) float32 tensor on the device
    obs, reward, terminated, truncated, info = envs.step(actions)   # actions: (M, 2N) tensor

The round is :class:`jmsra_env.core.Core`'s, the physics :mod:`jmsra_env.model`'s, the Box
decoding :func:`jmsra_env.actions.box_decision`'s, the deadline encoding
:func:`jmsra_env.encoding.decode_deadline`'s and the features
:func:`jmsra_env.features.observation_features`'s: the same source as the NumPy env. Only the
random draws differ: a ``torch.Generator`` on the device, seeded by ``reset(seed=...)``, so the
episodes are draws from the same distributions as the NumPy backend's, not the same draws (and a
CPU stream differs from a CUDA one). A decision is charged the same latency on the same terms on
both backends (to 1e-12 relative in float64).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from .. import actions, encoding, features, model
from ..backend import namespace, resolve_device, to_numpy, torch_namespace
from ..config import ScenarioConfig
from ..env import check_env_arguments, make_action_space, observation_space_of, resolve_env_config
from ..features import observation_features
from ..solvers import solve
from ..vector import vector_arguments
from . import Core

__all__ = ["TorchVectorEnv", "resolve_dtype", "TORCH_ENCODINGS"]

# Action encodings of the torch backend: all of them, decoded on the device ("solved": its (P2)
# split by the NumPy solver on the CPU, by the same solver in torch on a GPU).
TORCH_ENCODINGS = (None, "box", "deadline", "solved")


def resolve_dtype(dtype: Any):
    """``torch.float32`` / ``torch.float64`` from a dtype or its name (default float32)."""
    import torch

    if dtype is None:
        return torch.float32
    table = {"float32": torch.float32, "float64": torch.float64, torch.float32: torch.float32,
             torch.float64: torch.float64}
    try:
        return table[dtype]
    except (KeyError, TypeError):
        raise ValueError(f"dtype must be torch.float32 or torch.float64 (or their names); got {dtype!r}") from None


class TorchVectorEnv(VectorEnv):
    """``num_envs`` JMSRA environments on torch tensors (see the module docstring).

    ## Arguments

    ``TorchVectorEnv(num_envs=1, config=None, *, base_config=None, action_form="box",
    device="auto", dtype=torch.float32, features=None, action_encoding=None,
    autoreset_mode="SameStep", max_episode_steps=None, compile=False, **overrides)``.
    ``device="auto"`` picks ``cuda`` when available; ``"cuda"`` without CUDA is a ``ValueError``.
    ``features`` gives an ``(M, F)`` float32 observation tensor (:mod:`jmsra_env.features`), else
    the Dict observation as a dict of ``(M, ...)`` tensors. ``action_encoding`` (Box form):
    ``"deadline"``, ``"box"`` or ``"solved"`` (its (P2) split solved by NumPy on the CPU, by the
    same solver in torch on a GPU: no copy to the host). ``compile=True`` runs the round's pure pieces (the decision
    and its charge, the features) through ``torch.compile``, one graph each with no graph break:
    the same values (the code takes its branch-free forms, as on a GPU), fused into a few kernels;
    the first steps pay the compilation (seconds to tens of seconds; torch caches it on disk).

    ## Autoreset

    ``SameStep`` (default; what PPO loops want): a sub-environment that ends is reset in the same
    step; ``info["final_obs"]`` holds, in the rows of ``info["_final_obs"]``, the observation it
    ended with (a tensor, or a dict of tensors). ``NextStep``: Gymnasium's default, as the NumPy
    vector env. ``Disabled``: reset with ``reset(options={"reset_mask": mask})``.

    ## Info (tensors, batch axis first)

    ``latency_s``, ``uncapped_latency_s``, ``capped``, ``round`` and the per-agent ``media``,
    ``bandwidth_hz``, ``finish_s``; sessions add ``evictions``, ``evicted``,
    ``kv_pool_used_bytes`` and ``kv_pool_used_fraction``. Bad actions (wrong shape, NaN, inf,
    outside [-1, 1], not numeric) raise ``ValueError`` naming the field.
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        config: ScenarioConfig | Mapping[str, Any] | None = None,
        *,
        base_config: ScenarioConfig | Mapping[str, Any] | None = None,
        action_form: str = "box",
        device: Any = "auto",
        dtype: Any = None,
        features: str | None = None,
        action_encoding: str | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.SAME_STEP,
        max_episode_steps: int | None = None,
        render_mode: str | None = None,
        compile: bool = False,
        **overrides: Any,
    ):
        num_envs, mode, cfg = vector_arguments(
            num_envs, autoreset_mode, max_episode_steps, resolve_env_config(config, base_config, overrides)
        )
        if render_mode is not None:
            raise ValueError("the torch backend does not render; use the NumPy env (backend='numpy')")
        check_env_arguments(action_form, None, [])
        if features is not None and features not in features_module_sets():
            raise ValueError(f"features must be one of {(None, *features_module_sets())}; got {features!r}")
        if action_encoding not in TORCH_ENCODINGS:
            raise ValueError(f"action_encoding must be one of {TORCH_ENCODINGS}; got {action_encoding!r}")
        if action_encoding not in (None, "box") and action_form != "box":
            raise ValueError(f"action_encoding={action_encoding!r} applies to the Box action form (a -Box- ID)")
        if not isinstance(compile, bool):
            raise ValueError(f"compile must be True or False; got {compile!r}")
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        self.xp = xp = torch_namespace(self.device, self.dtype)
        self.torch = xp.torch
        self.num_envs = int(num_envs)
        self.config = cfg
        self.action_form = action_form
        self.features = features
        self.action_encoding = None if action_encoding == "box" else action_encoding
        self.autoreset_mode = mode
        self.metadata = {**type(self).metadata, "autoreset_mode": mode}
        self.render_mode = None
        self.core = Core(cfg, self.num_envs, xp)
        self.consts = self.core.consts
        raw_space = observation_space_of(cfg)
        if features is None:
            self.single_observation_space = raw_space
        else:
            f = features_module_n(cfg.n_agents, features, self.core.session)
            self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, (f,), np.float32)
        self.single_action_space = make_action_space(cfg, action_form)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.compile = compile
        # The round's pure pieces (the decision and its charge; the features), compiled into one
        # graph each with ``compile=True`` (the generator's draws and the bookkeeping stay eager).
        self._decide_charge = _compiled(_decide_and_charge) if compile else _decide_and_charge
        self._features = _compiled(observation_features) if compile else observation_features
        self._gen = None
        self._raw_obs: dict[str, Any] | None = None
        self._autoreset = None  # NEXT_STEP: who resets at the next step (bool tensor) or None
        self._ended = None  # DISABLED: who ended and awaits reset(reset_mask)
        # An upper bound on every env's round, kept on the host: below the episode's length no env
        # can be truncated, so the step asks the device nothing (one host sync fewer on a GPU).
        self._round_bound = 0

    # -- Gymnasium API -----------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Reset every sub-environment (or those of ``options["reset_mask"]``, a bool tensor or
        array ``(M,)``). ``seed`` seeds the batch's one ``torch.Generator``."""
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise ValueError(f"seed must be an int or None; got {seed!r}")
        if seed is not None or self._gen is None:
            self._gen = self.xp.generator(None if seed is None else int(seed))
        mask = None if options is None else options.get("reset_mask")
        if mask is not None:
            mask = self.xp.asarray(mask)
            if tuple(mask.shape) != (self.num_envs,) or mask.dtype != self.torch.bool:
                raise ValueError(
                    f"options['reset_mask'] must be a bool array of shape ({self.num_envs},); "
                    f"got {mask.dtype} {tuple(mask.shape)}"
                )
            if bool(mask.all()):
                mask = None
        self.core.reset(self._gen, mask)
        if mask is None:
            self._autoreset = self._ended = None
            self._round_bound = 0
        else:
            self._autoreset = _clear(self._autoreset, mask)
            self._ended = _clear(self._ended, mask)
        obs = self._observe()
        flags = self.xp.ones(self.num_envs, dtype=self.torch.bool) if mask is None else mask.clone()
        return obs, {"round": self.core.round.clone(), "_round": flags}

    def step(self, actions_):
        core, xp = self.core, self.xp
        if core.terms is None:
            raise RuntimeError("call reset() before step()")
        if self._ended is not None:
            raise RuntimeError(
                "some sub-environments ended and autoreset_mode is DISABLED: reset them with "
                "reset(options={'reset_mask': mask}) before stepping"
            )
        form, a = self._checked_action(actions_)
        resetting = self._autoreset
        if resetting is not None and bool(resetting.all()):
            return self._reset_step()
        br = self._decide_charge(form, a, self._raw_obs, self._obs_terms, core.terms, self.consts)
        info = core.charge_info(br)
        if self.config.jmsra_in_info:
            info["jmsra_latency_s"] = self._jmsra_latency_s()
        reward = -br.latency_s
        core.advance(self._gen, br.media, info)
        if resetting is not None:  # NEXT_STEP: some (not all) start over instead of playing
            core.reset(self._gen, resetting)
            info["round"] = xp.where(resetting, 0, info["round"])
            reward = xp.where(resetting, 0.0, reward)
        truncated = core.round >= self.config.episode_rounds
        terminated = xp.zeros(self.num_envs, dtype=self.torch.bool)
        obs = self._observe()
        self._autoreset = None
        self._round_bound += 1
        if self._round_bound >= self.config.episode_rounds and bool(truncated.any()):
            if self.autoreset_mode == AutoresetMode.SAME_STEP:
                info["final_obs"] = obs
                info["_final_obs"] = truncated.clone()
                every = bool(truncated.all())
                core.reset(self._gen, None if every else truncated)
                if every:
                    self._round_bound = 0
                obs = self._observe()
            elif self.autoreset_mode == AutoresetMode.DISABLED:
                self._ended = truncated.clone()
            else:
                self._autoreset = truncated.clone()
        return obs, reward, terminated, truncated, info

    def _reset_step(self):
        """NEXT_STEP, every sub-environment ended at the last step: start them all over."""
        self.core.reset(self._gen, None)
        self._round_bound = 0
        self._autoreset = None
        m, xp = self.num_envs, self.xp
        info = {"round": self.core.round.clone(), "_round": xp.ones(m, dtype=self.torch.bool)}
        false = xp.zeros(m, dtype=self.torch.bool)
        return self._observe(), xp.zeros(m), false, false.clone(), info

    # -- helpers -----------------------------------------------------------------------------

    def decode_action(self, batch):
        """Validate a batch of actions (tensors, or arrays converted to the device); return
        ``(media (M, N), bandwidth_hz (M, N))`` tensors."""
        form, a = self._checked_action(batch)
        return _decision(form, a, self._raw_obs, self._obs_terms, self.consts)

    def _checked_action(self, batch):
        """``(form, action)`` of a validated batch: ``("dict", (media, shares))`` or
        ``("box" | "deadline", (M, 2N) tensor)``."""
        n, m, xp = self.config.n_agents, self.num_envs, self.xp
        if self.action_form == "dict":
            if not isinstance(batch, Mapping) or set(batch) != {"media", "bandwidth"}:
                raise ValueError("action must be a dict with exactly the keys 'media' and 'bandwidth'")
            media = _checked(xp, batch["media"], "media", (m, n), finite=False)
            shares = _checked(xp, batch["bandwidth"], "bandwidth", (m, n), finite=False)
            # one pass (one host sync on a GPU); NaN and inf fail it too; on failure, name the field
            if not bool((((media == 0.0) | (media == 1.0)).all() & ((shares >= 0.0) & (shares < math.inf)).all())):
                _checked(xp, media, "media", (m, n))
                _checked(xp, shares, "bandwidth", (m, n))
                if not bool(((media == 0.0) | (media == 1.0)).all()):
                    raise ValueError("action field 'media' must hold 0 (NL) or 1 (KV)")
                raise ValueError("action field 'bandwidth' must be non-negative")
            return "dict", (media, shares)
        a = _checked(xp, batch, "action", (m, 2 * n), finite=False)
        if not bool((a.abs() <= 1.0 + 1e-6).all()):  # one pass: NaN and inf fail it too
            _checked(xp, a, "action", (m, 2 * n))  # names a NaN / inf as such
            raise ValueError("action field 'action' must lie in [-1, 1]")
        if self.action_encoding == "solved":  # the (P2) split for the action's media
            return _solved(a, self._raw_obs, self._obs_terms, self.consts)
        return ("deadline" if self.action_encoding == "deadline" else "box"), a

    def _observe(self):
        obs = self.core.observe()
        self._raw_obs = obs
        self._obs_terms = self.core.observed_terms(obs)  # what the features and the decoders read
        if self.features is None:
            return obs
        return self._features(obs, self.consts, self.features, session=self.core.session, terms=self._obs_terms)

    def _jmsra_latency_s(self):
        t = self.core.terms
        host = model.RoundTerms(
            *(to_numpy(getattr(t, f)).astype(np.float64) for f in model.TERM_ARRAY_FIELDS),
            t.bandwidth_hz, t.latency_cap_s,
        )
        return self.xp.asarray(np.asarray(solve("jmsra", host).latency_s, dtype=np.float64))

    @property
    def raw_observation(self) -> dict[str, Any]:
        """The last Dict observation (tensors), what features and decoders read."""
        return self._raw_obs


def _solved(a, raw_obs, obs_terms: model.RoundTerms, consts: model.ModelConstants):
    """``(form, action)`` of valid ``"solved"``-encoded actions for :func:`_decision`.

    The (P2) split is solved where it is fastest. On the CPU the NumPy decoder runs on the host's
    memory (its finished rows leave the iteration: ~3x faster than torch's ops at M = 4,096) and
    gives the env's Box action. On a GPU the same solver runs in torch on the device (float64),
    with no copy to the host: the decision, encoded as a Box action on the device.
    """
    xp = namespace(a)
    if xp.host:
        return "box", xp.asarray(encoding.decode_solved(to_numpy(a).astype(np.float64), to_numpy(raw_obs), consts))
    media, b = encoding.solved_decision(xp.clip(a, -1.0, 1.0), obs_terms)
    return "decided", (media, xp.astype(b, xp.float))


def _decision(form: str, a, raw_obs, obs_terms: model.RoundTerms, consts: model.ModelConstants):
    """``(media, bandwidth_hz)`` of a validated action (:meth:`TorchVectorEnv._checked_action`)."""
    if form == "dict":
        media, shares = a
        xp = namespace(media)
        return xp.astype(media, xp.int8), actions.shares_to_bandwidth_hz(shares, consts.bandwidth_hz)
    if form == "deadline":  # as the NumPy env: the decision, as its Box action
        a = actions.encode_box(*encoding.deadline_decision(a, raw_obs, consts, obs_terms), obs_terms)
    elif form == "decided":  # a decision made before (the "solved" encoding), as its Box action
        a = actions.encode_box(*a, obs_terms)
    return actions.box_decision(a, obs_terms)


def _decide_and_charge(form: str, a, raw_obs, obs_terms, terms, consts) -> model.LatencyBreakdown:
    """The round's pure step: decode the action, charge the decision on the true terms."""
    media, bandwidth_hz = _decision(form, a, raw_obs, obs_terms, consts)
    return model.latency(terms, media, bandwidth_hz)


def _compiled(fn):
    """``torch.compile`` of one of the round's pure pieces, for one env: one graph, no graph break
    (the code takes its branch-free forms under compilation; see ``jmsra_env.backend``).

    torch caches compiled graphs on the function's code object, at most ``recompile_limit`` (8)
    of them; envs of other scenarios, sizes or action forms in one process would exhaust them. So
    each env compiles its own copy of the function (torch's on-disk cache still spares it the
    code generation of a graph it has compiled before).
    """
    import types

    import torch

    own = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    own.__kwdefaults__ = fn.__kwdefaults__
    return torch.compile(own, fullgraph=True, dynamic=False)


def features_module_sets():
    return features.FEATURE_SETS


def features_module_n(n_agents: int, kind: str, session: bool) -> int:
    return features.n_features(n_agents, kind, session=session)


def _checked(xp, value, name: str, shape: tuple[int, ...], finite: bool = True):
    """``value`` as a floating tensor of ``shape`` on the device, finite (unless the caller checks
    it: ``finite=False``); else ``ValueError``."""
    torch = xp.torch
    if isinstance(value, torch.Tensor):
        if value.is_complex() or value.dtype == torch.bool and name != "media":
            raise ValueError(f"action field '{name}' must be real numbers; got a {value.dtype} tensor")
        arr = value.to(device=xp.device, dtype=xp.float)
    else:
        try:
            host = np.asarray(value)
            if host.dtype.kind not in "biuf":
                raise TypeError(host.dtype)
            arr = torch.as_tensor(host.astype(np.float64), dtype=xp.float, device=xp.device)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"action field '{name}' must be real numbers with shape {shape}; got {value!r:.80}") from exc
    if tuple(arr.shape) != shape:
        raise ValueError(f"action field '{name}' must have shape {shape}; got shape {tuple(arr.shape)}")
    if finite and not bool(torch.isfinite(arr).all()):
        raise ValueError(f"action field '{name}' must be finite (no NaN or inf)")
    return arr


def _clear(flags, mask):
    if flags is None:
        return None
    flags = flags & ~mask
    return flags if bool(flags.any()) else None
