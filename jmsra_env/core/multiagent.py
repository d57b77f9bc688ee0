"""The multi-agent view on the torch backend, batched (VMAS-style): every tensor ``(M, N, ...)``.

The decentralised game of :mod:`jmsra_env.multiagent` (each agent picks its medium and a
bandwidth request, the receiver grants ``b_i = B w_i / sum_j w_j``, every agent earns ``-T``) for
``M`` teams at once, on one device, for multi-agent trainers (MAPPO / IPPO)::

    from jmsra_env.core.multiagent import TorchTeamEnv
    env = TorchTeamEnv("jmsra_env/JMSRA-v0", num_envs=1024, device="cpu")
    agent_obs, state = env.reset(seed=0)     # (M, N, F_agent) and (M, F_state) float32
    agent_obs, state, reward, done, info = env.step(actions)   # actions (M, N, 2) in [0, 1]

Agent ``i``'s observation is its own block of the feature vector (:mod:`jmsra_env.features`: its
channel, device, load, tokens and, with ``"physics"``, its own latency terms; in a session its
own receiver state) followed by what the receiver broadcasts (its load, the answer time, the
pool); the state is the whole feature vector (what a centralised critic reads). ``actions[..., 0]``
is the medium score (``> 0.5``: KV), ``actions[..., 1]`` the request. The round is the core's,
through :class:`~jmsra_env.core.torch_env.TorchVectorEnv` (Dict action form, SameStep autoreset).

``action_encoding="deadline"``: actions ``(M, N, 2)`` in [-1, 1], agent ``i``'s ``(medium code,
finish-time code)`` of :mod:`jmsra_env.encoding`'s ``deadline`` encoding (``> 0``: KV; the agent
requests the bandwidth that meets its target from its own terms, the scheduler normalises the
requests). The central deadline decoding is exactly that per-agent rule, so the step hands the
agents' codes to the core's deadline decoder as one Box action ``(M, 2N)``.
:func:`split_agent_features` is the per-agent split of the central features on NumPy or torch
(what a trained team policy applies to a NumPy observation at evaluation).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from .. import features as feats
from ..backend import is_torch
from ..multiagent import KV_THRESHOLD
from ..registration import variant_of
from .torch_env import TorchVectorEnv

__all__ = ["TorchTeamEnv", "agent_feature_layout", "split_agent_features", "TEAM_ENCODINGS"]

TEAM_ENCODINGS = ("request", "deadline")

_AGENT_FEATURES = {"log": 6, "physics": 18}
_SCALARS = {"log": 1, "physics": 2}
_SESSION_AGENT, _SESSION_SCALARS = 5, 2


def agent_feature_layout(n_agents: int, kind: str, session: bool) -> tuple[int, int]:
    """``(per-agent features, broadcast features)`` of one agent's observation."""
    k, s = _AGENT_FEATURES[kind], _SCALARS[kind]
    if session:
        k, s = k + _SESSION_AGENT, s + _SESSION_SCALARS
    return k, s


def split_agent_features(state, n_agents: int, kind: str, session: bool):
    """``(..., N, F_agent)`` per-agent observations from central features ``(..., F)`` (NumPy or
    torch): agent ``i``'s own block, then what the receiver broadcasts."""
    n = n_agents
    k, s = _AGENT_FEATURES[kind], _SCALARS[kind]
    lead = tuple(state.shape[:-1])
    if is_torch(state):
        import torch

        cat, expand = torch.cat, (lambda x, shape: x.expand(*shape))
    else:
        import numpy as np

        cat, expand = (lambda xs, dim: np.concatenate(xs, axis=dim)), np.broadcast_to
    parts = [state[..., : n * k].reshape(*lead, n, k)]
    shared = state[..., n * k : n * k + s]
    if session:
        off = n * k + s
        parts.append(state[..., off : off + n * _SESSION_AGENT].reshape(*lead, n, _SESSION_AGENT))
        shared = cat([shared, state[..., off + n * _SESSION_AGENT :]], -1)
    parts.append(expand(shared[..., None, :], (*lead, n, shared.shape[-1])))
    return cat(parts, -1)


class TorchTeamEnv:
    """``M`` teams of ``N`` decentralised agents on torch tensors (see the module docstring).

    ``TorchTeamEnv(env_id="jmsra_env/JMSRA-v0", num_envs=1, device="auto", dtype=None,
    features="physics", action_encoding="request", config=None, compile=False, **overrides)``; a
    Dict-form or Box-form ID of any variant (the team's action is its own form); ``config``: a
    whole scenario config instead of the ID's (a trainer's resolved one); ``compile``: the round's
    pure pieces under ``torch.compile`` (:class:`~jmsra_env.core.torch_env.TorchVectorEnv`).
    """

    def __init__(self, env_id: str = "jmsra_env/JMSRA-v0", num_envs: int = 1, device: Any = "auto",
                 dtype: Any = None, features: str = feats.DEFAULT_FEATURES, action_encoding: str = "request",
                 config: Any = None, compile: bool = False, **overrides: Any):
        variant_of(env_id)  # a registered ID, else ValueError
        if features not in feats.FEATURE_SETS:
            raise ValueError(f"features must be one of {feats.FEATURE_SETS}; got {features!r}")
        if action_encoding not in TEAM_ENCODINGS:
            raise ValueError(f"action_encoding must be one of {TEAM_ENCODINGS}; got {action_encoding!r}")
        self.action_encoding = action_encoding
        base = dict(gym.spec(env_id).kwargs.get("base_config", {})) if config is None else None
        form = {"request": {"action_form": "dict"}, "deadline": {"action_form": "box", "action_encoding": "deadline"}}
        self.venv = TorchVectorEnv(num_envs, config, base_config=base, device=device, dtype=dtype, features=features,
                                   autoreset_mode="SameStep", compile=compile, **form[action_encoding], **overrides)
        self.torch = self.venv.torch
        self.num_envs = num_envs
        self.config = self.venv.config
        self.n_agents = n = self.config.n_agents
        self.device = self.venv.device
        self.session = self.venv.core.session
        self._kind = features
        self.n_agent_features = sum(agent_feature_layout(n, features, self.session))
        self.n_state_features = self.venv.single_observation_space.shape[0]

    def _split(self, state):
        """``(M, N, F_agent)`` per-agent observations from the central features ``(M, F)``."""
        return split_agent_features(state, self.n_agents, self._kind, self.session)

    def reset(self, seed: int | None = None):
        state, _ = self.venv.reset(seed=seed)
        return self._split(state), state

    def close(self) -> None:
        self.venv.close()

    def step(self, actions):
        """``actions (M, N, 2)``: medium score and bandwidth request in [0, 1] (``"deadline"``:
        medium and finish-time codes in [-1, 1])."""
        torch = self.torch
        a = actions if isinstance(actions, torch.Tensor) else torch.as_tensor(actions)
        if tuple(a.shape) != (self.num_envs, self.n_agents, 2):
            raise ValueError(f"actions must have shape {(self.num_envs, self.n_agents, 2)}; got {tuple(a.shape)}")
        a = a.to(self.device)
        if self.action_encoding == "deadline":  # the Box action (M, 2N): media codes, then finish codes
            central = torch.cat([a[..., 0], a[..., 1]], dim=1)
        else:
            if not bool(torch.isfinite(a).all()) or not bool(((a >= -1e-6) & (a <= 1.0 + 1e-6)).all()):
                raise ValueError("actions (medium score, bandwidth request) must be finite and in [0, 1]")
            central = {"media": (a[..., 0] > KV_THRESHOLD).to(a.dtype), "bandwidth": a[..., 1].clamp(0.0, 1.0)}
        state, reward, terminated, truncated, info = self.venv.step(central)
        shared = reward[:, None].expand(self.num_envs, self.n_agents)
        return self._split(state), state, shared, terminated | truncated, info
