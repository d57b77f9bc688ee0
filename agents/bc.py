"""Behaviour-cloning pre-training: start PPO from the JMSRA expert (``train.py --bc-steps``;
``--bc-expert`` names another, e.g. ``stale-aware`` on ``JMSRA-StaleCSI-v0``).

:func:`expert_dataset` draws rounds from the scenario's world process (a fresh generator, so
the rounds differ from the training and evaluation rounds), solves JMSRA on all of them in one
batch and encodes each decision exactly in the policy's action encoding (:mod:`jmsra_agents.encoding`: media to -1 / +1;
``"deadline"``: every agent's finish-time target is the round's finish time; ``"box"``: shares
``2 b / max(b) - 1``). :func:`pretrain` then

1. initialises the ``VecNormalize`` statistics with the dataset's features (and the reward
   scale with the expert's latencies),
2. regresses the policy's mean action on the expert's action and the value head on the expert's
   normalised reward (mean-squared error, Adam, cosine-decayed step size).

PPO then fine-tunes from there with the reward alone. The network, normalisation and saved
files are exactly those of a run without pre-training.

On a session scenario (docs/sessions.md) a round's observation depends on the media of the
earlier rounds (what the receiver holds), so :func:`session_expert_dataset` ROLLS the expert
through whole episodes in the batched session env (one sub-env per episode, the expert deciding on
the whole batch each step): the observation of step ``t`` is the one the expert saw, created by
its own earlier decisions. The value target is then the discounted return-to-go of the expert's
rewards (``gamma`` of the run), not the round's reward alone.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from jmsra_env import model
from jmsra_env.world import WorldProcess

from .encoding import DEFAULT_ENCODING, expert_policy_action
from .features import observation_features

__all__ = ["BCDataset", "expert_dataset", "session_expert_dataset", "pretrain"]


@dataclass
class BCDataset:
    """Features ``(R, F)``, expert Box actions ``(R, 2N)`` and expert latencies ``(R,)``."""

    features: np.ndarray
    actions: np.ndarray
    latency_s: np.ndarray
    solve_s: float = 0.0
    returns: np.ndarray | None = None  # value targets (raw reward units); None: -latency_s (gamma 0)
    info: dict | None = None  # sessions: per-round info the env returned (evictions, pool usage, ...)

    def __len__(self) -> int:
        return len(self.latency_s)


def expert_dataset(config, n_rounds: int, seed: int, features: str, encoding: str = DEFAULT_ENCODING,
                   expert: str = "jmsra", n_worlds: int = 1024) -> BCDataset:
    """``n_rounds`` rounds of ``config`` with the expert's decision on each (what it observes).

    ``expert``: a solver (:data:`jmsra_env.solvers.EXPERT_NAMES`), or another policy of
    :func:`jmsra_env.policies.make_policy` (``"stale-aware"``), whose split is not the (P2) split
    on the observed round: its decisions are encoded exactly (:func:`jmsra_env.encoding.express_decision`,
    one finish target per agent) instead of one target per round.
    """
    from jmsra_env.encoding import express_decision
    from jmsra_env.policies import make_policy
    from jmsra_env.solvers import EXPERT_NAMES, solve

    if n_rounds < 1:
        raise ValueError(f"n_rounds must be >= 1; got {n_rounds}")
    consts = model.model_constants(config)
    m = min(n_worlds, n_rounds)
    world = WorldProcess(config, m)
    rng = np.random.default_rng(seed)
    world.reset(rng)
    chunks, count, t = [], 0, 0
    while count < n_rounds:
        chunks.append(world.observation())
        count += m
        world.step(rng)
        t += 1
        if t % config.episode_rounds == 0:
            world.reset(rng)
    obs = {k: np.concatenate([c[k] for c in chunks])[:n_rounds] for k in chunks[0]}
    t0 = time.perf_counter()
    terms = model.terms_from_observation(consts, obs)
    if expert in EXPERT_NAMES:
        d = solve(expert, terms)
        encode = expert_policy_action
    else:
        d = make_policy(expert, config=config, seed=seed).decide(obs)
        encode = express_decision
    solve_s = time.perf_counter() - t0
    acts = encode(encoding, np.asarray(d.media), np.asarray(d.bandwidth_hz), terms)
    acts = acts.astype(np.float32)
    return BCDataset(observation_features(obs, consts, features), acts,
                     np.asarray(d.latency_s, dtype=np.float64), solve_s)


def session_expert_dataset(config, n_episodes: int, seed: int, features: str, encoding: str = DEFAULT_ENCODING,
                           expert: str = "lookahead", gamma: float = 0.0) -> BCDataset:
    """``n_episodes`` whole session episodes of ``config`` rolled with the session ``expert``
    (:func:`jmsra_env.policies.make_policy`), its decision at every step (what it observed).

    Rows are step-major (``row = t * n_episodes + e``). ``returns`` are the expert's discounted
    returns-to-go ``sum_k gamma^k r_{t+k}`` within the episode.
    """
    from jmsra_env import actions as env_actions
    from jmsra_env.policies import make_policy
    from jmsra_env.session_env import JMSRASessionVectorEnv

    if n_episodes < 1:
        raise ValueError(f"n_episodes must be >= 1; got {n_episodes}")
    if not config.session.enabled:
        raise ValueError("session_expert_dataset needs a session scenario (session.enabled)")
    consts = model.model_constants(config)
    env = JMSRASessionVectorEnv(int(n_episodes), config=config)
    policy = make_policy(expert, config=config)
    feats, acts, lats, infos = [], [], [], {}
    solve_s = 0.0
    try:
        obs, _ = env.reset(seed=int(seed))
        for _ in range(config.episode_rounds):
            t0 = time.perf_counter()
            d = policy.decide(obs)
            solve_s += time.perf_counter() - t0
            media, bw = np.asarray(d.media), np.asarray(d.bandwidth_hz)
            terms = model.terms_from_observation(consts, obs)
            feats.append(observation_features(obs, consts, features))
            acts.append(expert_policy_action(encoding, media, bw, terms).astype(np.float32))
            obs, _, _, _, info = env.step(env_actions.encode_dict(media, bw))
            lats.append(np.asarray(info["latency_s"], dtype=np.float64))
            for key in ("evictions", "kv_pool_used_fraction", "media"):
                infos.setdefault(key, []).append(np.asarray(info[key]))
    finally:
        env.close()
    lat = np.stack(lats)  # (T, E)
    ret = np.empty_like(lat)
    acc = np.zeros(lat.shape[1])
    for t in range(len(lat) - 1, -1, -1):
        acc = -lat[t] + gamma * acc
        ret[t] = acc
    return BCDataset(np.concatenate(feats), np.concatenate(acts), lat.reshape(-1), solve_s, ret.reshape(-1),
                     {k: np.concatenate(v) for k, v in infos.items()})


def pretrain(ppo, data: BCDataset, steps: int, *, batch_size: int = 512, learning_rate: float = 1e-3,
             seed: int = 0, log_every: int = 0, print_fn=None) -> dict[str, float]:
    """Fit ``ppo``'s policy (mean action) and value head to the expert; returns the final losses.

    ``steps_done`` counts the gradient steps taken; a ``KeyboardInterrupt`` (Ctrl-C, or SIGTERM
    under ``jmsra_agents.training``) stops early with ``interrupted: True`` and the policy as it is.
    """
    import torch

    vn = ppo.get_vec_normalize_env()
    feats = data.features
    returns = -data.latency_s if data.returns is None else data.returns
    if vn is not None:
        if vn.norm_obs:
            vn.obs_rms.update(feats.astype(np.float64))
        if vn.norm_reward:
            vn.ret_rms.update(returns)
        x = np.asarray(vn.normalize_obs(feats), dtype=np.float32)
        if data.returns is None:
            v = np.asarray(vn.normalize_reward(returns), dtype=np.float32)
        else:  # the value of normalised rewards: the return over the same scale, unclipped
            v = np.asarray(returns / np.sqrt(vn.ret_rms.var + vn.epsilon), dtype=np.float32) if vn.norm_reward \
                else returns.astype(np.float32)
    else:
        x, v = feats.astype(np.float32), returns.astype(np.float32)
    policy = ppo.policy
    device = policy.device
    xs = torch.as_tensor(x, device=device)
    ys = torch.as_tensor(data.actions, device=device)
    vs = torch.as_tensor(v, device=device)
    params = [p for name, p in policy.named_parameters() if name != "log_std"]
    opt = torch.optim.Adam(params, lr=learning_rate)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1.0 + math.cos(math.pi * s / max(steps, 1))))
    gen = torch.Generator().manual_seed(int(seed))
    policy.set_training_mode(True)
    stats = {"bc_action_mse": float("nan"), "bc_value_mse": float("nan")}
    try:
        _fit(policy, params, opt, sched, gen, xs, ys, vs, steps, batch_size, stats, log_every, print_fn)
    except KeyboardInterrupt:  # Ctrl-C / SIGTERM: keep the steps done (the caller saves them)
        stats["interrupted"] = True
    policy.set_training_mode(False)
    return stats


def _fit(policy, params, opt, sched, gen, xs, ys, vs, steps, batch_size, stats, log_every, print_fn) -> None:
    import torch
    import torch.nn.functional as F

    n = len(xs)
    device = policy.device
    stats["steps_done"] = 0
    for step in range(int(steps)):
        idx = torch.randint(0, n, (min(batch_size, n),), generator=gen).to(device)
        obs = xs[idx]
        mean = policy.get_distribution(obs).distribution.mean
        values = policy.predict_values(obs).flatten()
        a_loss = F.mse_loss(mean, ys[idx])
        v_loss = F.mse_loss(values, vs[idx])
        loss = a_loss + 0.5 * v_loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        stats.update(bc_action_mse=float(a_loss.detach()), bc_value_mse=float(v_loss.detach()), steps_done=step + 1)
        if print_fn is not None and log_every and (step + 1) % log_every == 0:
            print_fn(f"[bc {step + 1}/{steps}] action mse {stats['bc_action_mse']:.5f}, "
                     f"value mse {stats['bc_value_mse']:.5f}")
