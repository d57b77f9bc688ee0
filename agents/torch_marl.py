"""MAPPO and IPPO in one torch process: ``train.py --backend torch --algorithm mappo|ippo``.

The multi-agent trainer is the torch backend's PPO (:class:`jmsra_agents.torch_ppo.TorchRun`: the
same rollout loop, GAE, minibatch update, behaviour cloning, run directory, lock, ``--resume``,
checkpoints and safe format) on the batched multi-agent layout of the functional core,
:class:`jmsra_env.core.multiagent.TorchTeamEnv` (``M`` teams of ``N`` agents, every tensor
``(M, N, ...)``). What differs is confined to the hooks of :class:`TeamRun`:

* **Actor** (both algorithms): one network shared by all agents (parameter sharing); agent ``i``
  reads only its own observation, its block of the central features
  (:func:`jmsra_env.core.multiagent.split_agent_features`: its channel, device, load, tokens and,
  with ``"physics"``, its own latency terms, plus what the receiver broadcasts), and outputs its own
  ``(medium code, finish-time code)``: the per-agent half of the ``deadline`` encoding (``> 0``: KV;
  the agent requests the bandwidth that meets its finish-time target from its own terms; the
  receiver's scheduler normalises the requests). A sample is one agent in one round.
* **Critic**: MAPPO's reads the team's state (the central features, what centralised training
  may see), one value per round copied to its agents; IPPO's reads the agent's own observation.
* **Reward**: the shared ``-T`` of the round, for every agent.
* **Behaviour cloning**: the central expert's decisions (JMSRA; on sessions the backend's session
  expert), encoded with the deadline encoding, are each agent's ``(medium, finish time)`` target:
  every agent's row of the cloning set is its own features and its own part of the decision.

Saved units are the torch backend's (``policy.safetensors``, ``trainer.safetensors``,
``policy.json``): the actor under SB3's parameter names with one agent's input and output
(``run.action_form = "team"``, ``run.algorithm``), so :func:`jmsra_agents.checkpoint.load_trained_policy`
rebuilds it and ``evaluate.py --model`` scores the team on raw observations without
``--trust-pickle``; MAPPO's critic statistics travel in ``trainer.safetensors`` (``value_norm``).
"""

from __future__ import annotations

from .torch_ppo import TorchRun

__all__ = ["TEAM_ALGORITHMS", "ALGORITHMS", "TeamRun"]

TEAM_ALGORITHMS = ("mappo", "ippo")
ALGORITHMS = ("ppo", *TEAM_ALGORITHMS)


class TeamRun(TorchRun):
    """One MAPPO / IPPO training session in a locked run directory (see the module docstring)."""

    action_form = "team"
    obs_pipeline = ("jmsra_env.features.observation_features -> jmsra_env.core.multiagent.split_agent_features "
                    "(per agent) -> running mean/var normalisation (VecNormalize's arithmetic and clip)")

    @property
    def algorithm(self) -> str:  # type: ignore[override]
        return self.spec.algorithm

    def _make_env(self) -> None:
        from jmsra_env.core.multiagent import TorchTeamEnv

        plan = self.plan
        self.env = TorchTeamEnv(plan.env_id, self.spec.n_envs, device=plan.device, dtype=self.torch.float32,
                                features=self.spec.features, action_encoding="deadline", config=self.cfg,
                                compile=self.ppo.compile)
        self.n_agents = self.env.n_agents
        self.sample_shape = (self.n_agents,)
        self.n_obs, self.n_act = self.env.n_agent_features, 2
        self.n_value_obs = self.env.n_state_features if self.algorithm == "mappo" else None

    def _reset_env(self):
        return self.env.reset(seed=self.env_seed)

    def _env_step(self, a):
        obs, state, reward, done, info = self.env.step(a)
        return obs, state, reward[:, 0], done, info  # the team's shared reward, once per round

    def _value(self, x, state, t: int | None = None):
        if self.value_norm is None:  # IPPO: each agent's value from its own observation
            return self.ac.value(x)
        s = self.value_norm.normalize(state)  # MAPPO: the round's value from the team's state
        m, n = s.shape[0], self.n_agents
        if t is not None:
            self._buf["vx"][t] = s[:, None, :].expand(m, n, s.shape[1])
        return self.ac.value(s)[:, None].expand(m, n)

    def _per_sample(self, per_env):
        return per_env[:, None].expand(per_env.shape[0], self.n_agents)

    def _bc_tensors(self, data):
        """Agent rows ``(rounds x N, ...)``: agent ``i``'s features and its part of the expert's
        deadline-encoded decision; MAPPO's critic reads the round's central features."""
        from jmsra_env.core.multiagent import split_agent_features

        torch, n = self.torch, self.n_agents
        x, y, returns, _ = super()._bc_tensors(data)
        xa = split_agent_features(x, n, self.spec.features, bool(self.cfg.session.enabled)).reshape(-1, self.n_obs)
        ya = torch.stack([y[:, :n], y[:, n:]], dim=-1).reshape(-1, 2)
        return xa.contiguous(), ya, returns, (x if self.value_norm is not None else None)
