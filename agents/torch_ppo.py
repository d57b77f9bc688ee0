"""PPO in one torch process: ``train.py --backend torch`` (docs/training.md, "The torch backend").

A compact CleanRL / rsl_rl-style PPO where the vector environment (thousands of envs), the
preallocated rollout storage, the observation normalisation, GAE (a tensor loop over the rollout's
steps) and the minibatch updates (an index permutation per epoch) all stay on one device; no NumPy
round trip per step. The run-directory contract is the SB3 path's (:mod:`jmsra_agents.training`,
:mod:`jmsra_agents.runs`, :mod:`jmsra_agents.checkpoint`): the same lock, run.json, atomic units and
checkpoints renamed whole, ``--resume`` after SIGINT / SIGTERM / SIGKILL, the periodic evaluation
and the final comparison through the one evaluation path (:mod:`jmsra_env.evaluation`, the policy
wrapped exactly as ``evaluate.py --model`` loads it), and the safe format.

A saved unit of this backend is ``policy.safetensors`` (the actor-critic's weights, under SB3's
parameter names, so :func:`jmsra_agents.checkpoint.load_trained_policy` rebuilds the actor unchanged),
``trainer.safetensors`` (what resuming needs beyond the weights: Adam's moments, the normalisation
statistics, the sampling generator's state; raw tensors, nothing unpickled) and ``policy.json``
(the manifest, written last, with the hashes of the other two and ``run.backend = "torch"``).

Hyperparameters: :class:`TorchPPOConfig` extends :class:`jmsra_agents.ppo.PPOConfig` (same names, same
CLI flags) with the levers of large-batch on-device PPO: a KL-adaptive step size (rsl_rl), a
behaviour-cloning loss term decayed during PPO (DAPG) and ``torch.compile`` of the update.
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .ppo import PPOConfig, _hp

__all__ = ["BACKENDS", "TORCH_N_ENVS", "TorchPPOConfig", "default_torch_ppo", "ActorCritic", "RunningNorm",
           "make_torch_vec_env", "TorchRun", "RunContext", "TORCH_ONLY_FIELDS",
           "TORCH_QUICK_TIMESTEPS", "TORCH_QUICK_BC_STEPS", "TORCH_QUICK_BC_ROUNDS", "gae"]

BACKENDS = ("sb3", "torch")
TORCH_N_ENVS = 1024  # the torch backend's default --n-envs
TORCH_QUICK_TIMESTEPS = 409_600  # the torch backend's --quick budget (50 updates of 8 x 1,024)
BC_BATCH = 4096  # behaviour-cloning minibatch (rows)
OBS_CLIP = 10.0  # VecNormalize's defaults: the saved statistics load through jmsra_agents.checkpoint.ObsNormalizer
OBS_EPS = 1e-8
REWARD_CLIP = 10.0
MAX_DAGGER_EPISODES = 65_536  # a DAgger round's labels: 64 rounds x 65,536 episodes = 4.2 M rows (the rollout cap)


@dataclass(frozen=True)
class TorchPPOConfig(PPOConfig):
    """:class:`PPOConfig` plus the torch backend's own levers (one CLI flag each, torch backend only)."""

    desired_kl: float = _hp(0.0, "torch backend: KL-adaptive step size (rsl_rl): the step size is divided / "
                             "multiplied by 1.5 when the KL of a minibatch exceeds 2x / falls below 0.5x this "
                             "(0 = off: lr_schedule)")
    bc_coef: float = _hp(0.0, "torch backend: weight of a behaviour-cloning loss on the expert set added to "
                         "PPO's loss (DAPG), multiplied by bc_coef_decay after every update")
    bc_coef_decay: float = _hp(0.9, "torch backend: decay of bc_coef per update")
    compile: bool = _hp(False, "torch backend: torch.compile the env's round (decision, charge, features) and the update's loss")
    dagger_rounds: int = _hp(0, "torch backend: DAgger rounds after cloning: roll the clone through "
                             "dagger_episodes episodes, label the states it visits with the expert, clone again "
                             "on the union (bc_steps / 2 steps each)")
    dagger_episodes: int = _hp(0, "torch backend: episodes the clone is rolled through (and the expert labels) in "
                               "each DAgger round (0 = as many as the cloning set)")

    def __post_init__(self) -> None:
        super().__post_init__()
        for ok, name, what in ((self.desired_kl >= 0, "desired_kl", ">= 0"), (self.bc_coef >= 0, "bc_coef", ">= 0"),
                               (0.0 <= self.bc_coef_decay <= 1.0, "bc_coef_decay", "in [0, 1]"),
                               (isinstance(self.dagger_rounds, int) and 0 <= self.dagger_rounds <= 100,
                                "dagger_rounds", "an integer in [0, 100]"),
                               (isinstance(self.dagger_episodes, int) and 0 <= self.dagger_episodes <= MAX_DAGGER_EPISODES,
                                "dagger_episodes", f"an integer in [0, {MAX_DAGGER_EPISODES:,}]")):
            if not ok:
                raise ValueError(f"PPO hyperparameter {name} must be {what}; got {getattr(self, name)!r}")


TORCH_ONLY_FIELDS = tuple(f.name for f in dataclasses.fields(TorchPPOConfig)
                          if f.name not in {g.name for g in dataclasses.fields(PPOConfig)})

# The torch backend's recipe (docs/training.md, "The torch backend": measured, not guessed): few,
# large minibatches over rollouts of a thousand envs; 128x128 nets (256x256 costs 3-4x the CPU time
# per sample). From a random network a large constant-then-decaying step size learns fastest (the
# KL-adaptive one stays too small early: +57.9 % vs +22.7 % after 49k steps); after cloning a small
# step and little noise keep and improve the clone (3e-4: +2.9 % -> +1.7 % in 410k steps; 1e-3 lost it).
TORCH_DEFAULTS: dict[str, Any] = {"learning_rate": 3e-3, "lr_schedule": "linear", "n_steps": 8, "batch_size": 4096,
                                  "n_epochs": 4, "net_arch": (128, 128), "desired_kl": 0.0}
TORCH_BC_FINE_TUNE: dict[str, Any] = {"learning_rate": 3e-4, "lr_schedule": "constant", "log_std_init": -3.0}
# --quick on the torch backend: 1,000 cloning steps of 4,096 rows on 100,000 JMSRA rounds, 409,600 PPO
# steps (measured on the 2,048 held-out rounds: +1.79 %; 600 steps on 60,000 rounds: +2.04 %)
TORCH_QUICK_BC_STEPS = 1_000
TORCH_QUICK_BC_ROUNDS = 100_000
TORCH_BC_STEPS = 1_000  # without --quick: 1,000 steps on 100,000 rounds (+2.2 % -> +1.3 % in 614k PPO steps)
TORCH_BC_ROUNDS = 100_000
TORCH_BC_LR = 3e-3  # the torch backend's cloning step size (its minibatch is 8x SB3's)


def default_torch_ppo(bc_steps: int, **changes: Any) -> TorchPPOConfig:
    """The torch backend's defaults (:data:`TORCH_DEFAULTS`, fine-tuning after behaviour cloning);
    given ``changes`` win (``jmsra_agents.training.default_ppo`` adds a session's discount)."""
    base = TorchPPOConfig(**TORCH_DEFAULTS)
    if bc_steps > 0:
        base = base.replace(**TORCH_BC_FINE_TUNE)
    return base.replace(**changes)


@dataclass(frozen=True)
class RunContext:
    """What :mod:`jmsra_agents.training` hands a torch run: its seeds, experts, result types and the
    held-out comparison (training imports this module, never the reverse: the import graph stays
    a DAG)."""

    result_cls: type  # jmsra_agents.training.TrainResult
    interrupted_cls: type  # jmsra_agents.training.TrainingInterrupted
    comparison: Callable  # jmsra_agents.training.comparison_table(policy, plan, episodes)
    resume_seed_offset: int
    bc_seed_offset: int
    session_bc_expert: str
    eval_seed: int
    compare_experts: tuple[str, ...]
    session_compare_experts: tuple[str, ...]


# ---------------------------------------------------------------------------------------------
# The environment (the functional core's torch backend)


def make_torch_vec_env(env_id: str, num_envs: int, config, *, device: str, features: str, action_encoding: str,
                       compile: bool = False):
    """The functional core's torch vector env of ``env_id`` on ``device`` (float32 feature
    observations ``(M, F)``, ``SameStep`` autoreset; ``compile``: its round's pure pieces
    compiled), with ``n_features`` and ``n_actions`` set."""
    import gymnasium as gym
    import torch

    env = gym.make_vec(env_id, num_envs=int(num_envs), vectorization_mode="vector_entry_point", backend="torch",
                       device=str(device), dtype=torch.float32, config=config, features=features,
                       action_encoding=action_encoding, autoreset_mode="SameStep", compile=compile)
    env.n_features = int(env.single_observation_space.shape[0])
    env.n_actions = int(env.single_action_space.shape[0])
    return env


# ---------------------------------------------------------------------------------------------
# Networks and normalisation


def _mlp(n_in: int, arch, act):
    import torch.nn as nn

    layers, last = [], n_in
    for h in arch:
        layers += [nn.Linear(last, h), act()]
        last = h
    return nn.Sequential(*layers), last


def ActorCritic(n_obs: int, n_act: int, cfg: PPOConfig, n_value_obs: int | None = None):  # noqa: N802 - a module factory
    """SB3's ``ActorCriticPolicy`` MLP layout and parameter names (``mlp_extractor.policy_net``,
    ``action_net``, ``log_std``, ``mlp_extractor.value_net``, ``value_net``), so the safe format's
    loader rebuilds the actor; orthogonal initialisation as SB3's (gains sqrt 2, 0.01, 1).
    ``n_value_obs``: the critic's input size when it reads something else than the actor (MAPPO's
    centralised critic on the team's state)."""
    import gymnasium as gym
    import torch
    import torch.nn as nn

    act = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "silu": nn.SiLU}[cfg.activation]

    class _ActorCritic(nn.Module):
        def __init__(self):
            super().__init__()
            self.mlp_extractor = nn.Module()
            self.mlp_extractor.policy_net, last_pi = _mlp(n_obs, cfg.net_arch, act)
            self.mlp_extractor.value_net, last_vf = _mlp(n_value_obs or n_obs, cfg.net_arch, act)
            self.action_net = nn.Linear(last_pi, n_act)
            self.value_net = nn.Linear(last_vf, 1)
            self.log_std = nn.Parameter(torch.full((n_act,), float(cfg.log_std_init)))
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, (n_obs,), np.float32)
            self.action_space = gym.spaces.Box(-1.0, 1.0, (n_act,), np.float32)
            self.squash_output = False
            if cfg.ortho_init:
                for net, gain in ((self.mlp_extractor.policy_net, math.sqrt(2)), (self.mlp_extractor.value_net,
                                  math.sqrt(2)), (self.action_net, 0.01), (self.value_net, 1.0)):
                    for m in net.modules():
                        if isinstance(m, nn.Linear):
                            nn.init.orthogonal_(m.weight, gain=gain)
                            m.bias.data.fill_(0.0)

        def mean(self, x):
            return self.action_net(self.mlp_extractor.policy_net(x))

        def value(self, x):
            return self.value_net(self.mlp_extractor.value_net(x)).squeeze(-1)

    return _ActorCritic()


def gae(r, v, done, last_v, gamma: float, lam: float):
    """Advantages ``(T, ...)`` by GAE over a rollout's rewards, values and done flags ``(T, ...)``
    (a tensor loop over the steps; an ended episode is not bootstrapped: truncation ends the task)."""
    import torch

    adv = torch.zeros_like(v)
    last = torch.zeros_like(last_v)
    for t in range(v.shape[0] - 1, -1, -1):
        next_v = last_v if t == v.shape[0] - 1 else v[t + 1]
        nonterm = 1.0 - done[t]
        last = r[t] + gamma * next_v * nonterm - v[t] + gamma * lam * nonterm * last
        adv[t] = last
    return adv


class RunningNorm:
    """Running mean / variance on the device (SB3 ``RunningMeanStd``'s parallel update, float64) and
    ``VecNormalize``'s normalisation; ``obs_rms`` / ``norm_obs`` / ``epsilon`` / ``clip_obs`` make it
    readable by :func:`jmsra_agents.checkpoint._normalisation` (the safe format's statistics)."""

    def __init__(self, shape: tuple[int, ...], device, epsilon: float = 1e-4):
        import torch

        self.mean = torch.zeros(shape, dtype=torch.float64, device=device)
        self.var = torch.ones(shape, dtype=torch.float64, device=device)
        self.count = torch.tensor(epsilon, dtype=torch.float64, device=device)
        self.norm_obs, self.epsilon, self.clip_obs = True, OBS_EPS, OBS_CLIP

    def update(self, x) -> None:
        import torch

        x = x.reshape(-1, *self.mean.shape).to(torch.float64)
        b_mean, b_var, b_count = x.mean(0), x.var(0, unbiased=False), x.shape[0]
        delta = b_mean - self.mean
        tot = self.count + b_count
        m2 = self.var * self.count + b_var * b_count + delta.square() * self.count * b_count / tot
        self.mean, self.var, self.count = self.mean + delta * b_count / tot, m2 / tot, tot

    def normalize(self, x):
        import torch

        z = (x.to(torch.float64) - self.mean) / torch.sqrt(self.var + self.epsilon)
        return z.clamp(-self.clip_obs, self.clip_obs).to(torch.float32)

    @property
    def obs_rms(self):  # the attribute view jmsra_agents.checkpoint reads
        return _RMSView(self.mean.cpu().numpy(), self.var.cpu().numpy(), float(self.count))

    def tensors(self, prefix: str) -> dict[str, Any]:
        return {f"{prefix}.mean": self.mean, f"{prefix}.var": self.var, f"{prefix}.count": self.count.reshape(1)}

    def load(self, t: dict[str, Any], prefix: str) -> None:
        dev = self.mean.device
        self.mean = t[f"{prefix}.mean"].to(dev)
        self.var = t[f"{prefix}.var"].to(dev)
        self.count = t[f"{prefix}.count"].to(dev).reshape(())


@dataclass
class _RMSView:
    mean: np.ndarray
    var: np.ndarray
    count: float


# ---------------------------------------------------------------------------------------------
# The training run


class TorchRun:
    """One training session of the torch backend in a locked run directory (the torch twin of
    ``jmsra_agents.training._Run``): build or resume, clone the expert, PPO, save, compare.

    The multi-agent trainer (:class:`jmsra_agents.torch_marl.TeamRun`) is this class with another
    environment and network (the hooks ``_make_env``, ``_make_net``, ``_reset_env``, ``_env_step``,
    ``_value``, ``_per_sample`` and ``_bc_tensors``): one rollout loop, one GAE, one update, one
    behaviour cloning and one run bookkeeping for both.
    """

    algorithm = "ppo"
    action_form = "box"  # what policy.json's actor maps features to (jmsra_agents.checkpoint.TrainedPolicy)
    obs_pipeline = ("jmsra_env.features.observation_features -> running mean/var normalisation "
                    "(VecNormalize's arithmetic and clip)")
    sample_shape: tuple[int, ...] = ()  # the trailing axes of one env's sample (agents: (N,))

    def __init__(self, plan, run_dir: Path, log: Callable[[str], None], caught: dict, ctx: RunContext):
        import torch

        self.torch, self.ctx = torch, ctx
        self.plan, self.spec, self.run_dir, self.log, self.caught = plan, plan.spec, Path(run_dir), log, caught
        self.cfg, self.ppo = plan.cfg, plan.ppo
        self.device = torch.device(plan.device)
        self.t_start = time.perf_counter()
        self.created = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.bc_info: dict[str, Any] = dict(plan.resume.run_info.get("bc", {})) if plan.resume else {}
        self.extra_info: dict[str, Any] = {}
        self.num_timesteps = 0
        self.n_updates = 0
        self.history: list[dict[str, Any]] = []
        self.best_latency_s = math.inf
        self._expert_results = None
        self.bc_x = self.bc_y = None
        self.value_norm = None  # the critic's own input statistics, when it reads something else than the actor

    # -- construction -------------------------------------------------------------------------

    def _build(self) -> None:
        torch, spec, plan = self.torch, self.spec, self.plan
        torch.set_num_threads(spec.threads)
        resuming = plan.resume is not None
        self.env_seed = spec.seed + self.ctx.resume_seed_offset if resuming else spec.seed
        self._make_env()
        torch.manual_seed(spec.seed)
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(spec.seed)
        self.ac = self._make_net().to(self.device)
        self.opt = torch.optim.Adam(self.ac.parameters(), lr=self.ppo.learning_rate, eps=1e-5)
        self.lr = float(self.ppo.learning_rate)
        self.bc_coef = float(self.ppo.bc_coef)
        self.obs_norm = RunningNorm((self.n_obs,), self.device)
        self.ret_norm = RunningNorm((), self.device)
        if self.n_value_obs is not None:
            self.value_norm = RunningNorm((self.n_value_obs,), self.device)
        if resuming:
            self._load_state(plan.resume.unit)
        self._load_history()
        from torch.utils.tensorboard import SummaryWriter

        self.tb_dir = self.run_dir / "tb"
        self.writer = SummaryWriter(str(self.tb_dir / "PPO_torch"))
        self._loss_fn = torch.compile(self._loss) if self.ppo.compile else self._loss

    def _make_env(self) -> None:
        """The env, and the sizes of the actor's input (``n_obs``), its output (``n_act``) and the
        critic's own input (``n_value_obs``, None: the actor's)."""
        plan = self.plan
        self.env = make_torch_vec_env(plan.env_id, self.spec.n_envs, self.cfg, device=plan.device,
                                      features=self.spec.features, action_encoding=self.spec.action_encoding,
                                      compile=self.ppo.compile)
        self.n_obs, self.n_act, self.n_value_obs = self.env.n_features, self.env.n_actions, None

    def _make_net(self):
        return ActorCritic(self.n_obs, self.n_act, self.ppo, self.n_value_obs)

    def _norms(self) -> dict[str, RunningNorm]:
        out = {"obs_norm": self.obs_norm, "ret_norm": self.ret_norm}
        if self.value_norm is not None:
            out["value_norm"] = self.value_norm
        return out

    # -- state: save and load -----------------------------------------------------------------

    def _trainer_bytes(self) -> bytes:
        from safetensors.torch import save

        torch = self.torch
        tensors: dict[str, Any] = {"generator_state": self.gen.get_state(), "cpu_generator_state": torch.get_rng_state()}
        for name, norm in self._norms().items():
            tensors.update(norm.tensors(name))
        names = {id(p): n for n, p in self.ac.named_parameters()}
        groups = self.opt.state_dict()["param_groups"]
        for p, st in self.opt.state.items():
            for k, v in st.items():
                tensors[f"adam.{names[id(p)]}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
        meta = {"num_timesteps": self.num_timesteps, "n_updates": self.n_updates, "learning_rate": self.lr,
                "bc_coef": self.bc_coef, "adam_param_groups": [{k: v for k, v in g.items() if k != "params"}
                                                               for g in groups]}
        return save({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                    metadata={"trainer": json.dumps(meta)})

    def _load_state(self, unit) -> None:
        from safetensors import safe_open
        from safetensors.torch import load as load_tensors

        from . import checkpoint as ck

        torch = self.torch
        weights = load_tensors(unit.weights_path.read_bytes())
        self.ac.load_state_dict({k: v.to(self.device) for k, v in weights.items()}, strict=True)
        with safe_open(str(unit.path(ck.TRAINER_FILE)), framework="pt") as fh:
            meta = json.loads(fh.metadata()["trainer"])
            tr = {k: fh.get_tensor(k) for k in fh.keys()}
        for name, norm in self._norms().items():
            norm.load(tr, name)
        self.gen.set_state(tr["generator_state"])
        torch.set_rng_state(tr["cpu_generator_state"])
        state: dict[int, dict[str, Any]] = {}
        for i, (name, _) in enumerate(self.ac.named_parameters()):
            prefix = f"adam.{name}."
            st = {k[len(prefix):]: v.to(self.device) for k, v in tr.items() if k.startswith(prefix)}
            if st:
                st["step"] = st["step"].cpu()
                state[i] = st
        groups = [{**g, "params": list(range(len(list(self.ac.parameters()))))} for g in meta["adam_param_groups"]]
        self.opt.load_state_dict({"state": state, "param_groups": groups})
        self.num_timesteps, self.n_updates = int(meta["num_timesteps"]), int(meta["n_updates"])
        self.lr, self.bc_coef = float(meta["learning_rate"]), float(meta["bc_coef"])

    def run_info(self, kind: str) -> dict[str, Any]:
        from . import checkpoint as ck

        plan, cfg = self.plan, self.cfg
        return {
            "format": ck.RUN_FORMAT, "kind": kind, "backend": "torch", "algorithm": self.algorithm,
            "env_id": plan.env_id, "requested_env_id": self.spec.env_id, "config": cfg.to_dict(),
            "config_overrides": dict(self.spec.config_overrides), "action_form": self.action_form,
            "n_agents": cfg.n_agents, "features": self.spec.features, "action_encoding": self.spec.action_encoding,
            "obs_pipeline": self.obs_pipeline,
            "args": self.spec.to_dict(), "ppo": self.ppo.to_dict(), "bc": self.bc_info, "device": plan.device,
            "versions": ck.package_versions(), "num_timesteps": int(self.num_timesteps),
            "total_timesteps": int(self.spec.total_timesteps), "created": self.created,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "train_wall_s": round(time.perf_counter() - self.t_start, 2), **self.extra_info,
        }

    def _unit_blobs(self, prefix: str, run_meta: dict[str, Any]) -> list[tuple[str, bytes]]:
        from . import checkpoint as ck

        blobs = [(prefix + ck.TRAINER_FILE, self._trainer_bytes()), (prefix + ck.WEIGHTS_FILE,
                                                                     ck._weights_bytes(self.ac))]
        manifest = {
            "format": ck.POLICY_FORMAT, "num_timesteps": int(self.num_timesteps),
            "files": {name: ck._sha256(data) for name, data in blobs},
            "architecture": ck._architecture(self.ac), "normalization": ck._normalisation(self.obs_norm),
            "run": {k: v for k, v in run_meta.items() if k != "args"},
        }
        return blobs + [(prefix + ck.POLICY_FILE, ck._json_bytes(manifest))]

    def save(self, kind: str, prefix: str = "") -> None:
        """The run's top-level unit (``prefix=""``, with run.json) or its best model (``"best_"``)."""
        from . import checkpoint as ck

        info = self.run_info(kind)
        with ck.deferred_signals():
            ck.write_unit(self.run_dir, self._unit_blobs(prefix, info), info if prefix == "" else None)

    def save_checkpoint(self) -> Path:
        from . import checkpoint as ck

        info = self.run_info("checkpoint")
        return ck.fill_checkpoint(self.run_dir, self.num_timesteps,
                                  lambda tmp: ck.write_unit(tmp, self._unit_blobs("", info), info))

    # -- evaluation through the one evaluation path ---------------------------------------------

    def eval_policy(self, label: str | None = None):
        """The current policy exactly as ``evaluate.py --model`` loads it from the safe format:
        NumPy observation -> features -> saved normalisation -> actor -> env action; labelled with
        the algorithm (``ppo``, ``mappo``, ``ippo``) unless ``label`` is given."""
        from . import checkpoint as ck
        from .evaluation import TrainedModelPolicy

        weights = {k: v.detach().cpu() for k, v in self.ac.state_dict().items()}
        actor = ck.SafeActor(ck._architecture(self.ac), weights, device="cpu")
        actor.num_timesteps = self.num_timesteps
        trained = ck.TrainedPolicy(actor, ck.ObsNormalizer(ck._normalisation(self.obs_norm)), self.run_info("live"))
        return TrainedModelPolicy(trained, self.cfg, label or self.algorithm)

    def _load_history(self) -> None:
        from . import checkpoint as ck

        path = self.run_dir / "evaluations.json"
        if not path.is_file():
            return
        try:
            rows = json.loads(path.read_text()).get("evaluations", [])
        except (OSError, ValueError):
            return
        self.history = [r for r in rows if isinstance(r, dict) and "latency_s" in r
                        and r.get("timesteps", 0) <= self.num_timesteps]
        if self.history and (self.run_dir / (ck.BEST_PREFIX + ck.POLICY_FILE)).is_file():
            self.best_latency_s = min(float(r["latency_s"]) for r in self.history)

    def evaluate(self) -> dict[str, Any]:
        from . import checkpoint as ck
        from .evaluation import compare_with_experts

        ctx = self.ctx
        experts = list(ctx.session_compare_experts if self.cfg.session.enabled else ctx.compare_experts)
        res = compare_with_experts(self.plan.env_id, dict(self.spec.config_overrides), [self.eval_policy()],
                                   experts=experts, episodes=self.spec.eval_episodes, seed=ctx.eval_seed,
                                   expert_results=self._expert_results)
        self._expert_results = [r for r in res.results if r.label != self.algorithm]
        ppo = res.row(self.algorithm)
        lat = float(ppo["mean_latency_s"])
        row = {"timesteps": int(self.num_timesteps), "latency_s": lat, "gap_to_jmsra_pct": float(ppo["gap_pct"]),
               "kv_share": float(ppo["kv_share"]), "capped_rate": float(ppo["capped_rate"]),
               **{f"{k}_latency_s": res.mean(k) for k in experts}}
        improved = lat < self.best_latency_s
        if improved:
            self.best_latency_s = lat
            self.save("best", prefix=ck.BEST_PREFIX)
        row["best"] = bool(improved)
        self.history.append(row)
        for key in ("latency_s", "gap_to_jmsra_pct", "kv_share", "capped_rate"):
            self.writer.add_scalar(f"eval/{key}", row[key], self.num_timesteps)
        ref = res.mean(ppo["reference"])
        self.writer.add_scalar("eval/best_gap_to_jmsra_pct", 100.0 * (self.best_latency_s / ref - 1.0),
                               self.num_timesteps)
        for k in experts:
            self.writer.add_scalar(f"eval/{k.replace('-', '_')}_latency_s", row[f"{k}_latency_s"], self.num_timesteps)
        ck.atomic_write_bytes(self.run_dir / "evaluations.json", ck._json_bytes({"evaluations": self.history}))
        self.log(f"[eval @ {self.num_timesteps:>9,d} steps] latency {lat:.4f} s, gap to JMSRA "
                 f"{row['gap_to_jmsra_pct']:+.2f} %{' (best)' if improved else ''}")
        return row

    # -- behaviour cloning ----------------------------------------------------------------------

    def _expert_set(self):
        from .bc import expert_dataset, session_expert_dataset

        spec, cfg = self.spec, self.cfg
        session = bool(cfg.session.enabled)
        expert = spec.bc_expert or (self.ctx.session_bc_expert if session else "jmsra")
        if session:
            episodes = -(-spec.bc_rounds // cfg.episode_rounds)
            data = session_expert_dataset(cfg, episodes, seed=spec.seed + self.ctx.bc_seed_offset, features=spec.features,
                                          encoding=spec.action_encoding, expert=expert, gamma=self.ppo.gamma)
        else:
            data = expert_dataset(cfg, spec.bc_rounds, seed=spec.seed + self.ctx.bc_seed_offset, features=spec.features,
                                  encoding=spec.action_encoding, expert=expert)
        return expert, data

    def _behaviour_cloning(self) -> bool:
        """Clone the expert (the steps a resumed run still owes); False if a signal stopped it."""
        torch, spec = self.torch, self.spec
        done = int(self.bc_info.get("steps_done", 0)) if self.plan.resume else 0
        need_set = spec.bc_steps > 0 and (done < spec.bc_steps and self.num_timesteps == 0 or self.ppo.bc_coef > 0)
        if not need_set:
            return True
        t0 = time.perf_counter()
        try:
            expert, data = self._expert_set()
        except KeyboardInterrupt:
            return False
        gen_s = time.perf_counter() - t0
        x, y, returns, value_x = self._bc_tensors(data)
        self.bc_x, self.bc_y = x, y  # kept for the DAPG term (bc_coef)
        if done >= spec.bc_steps or self.num_timesteps > 0:
            return True
        if done == 0:
            self.obs_norm.update(x)
            self.ret_norm.update(returns)
            if value_x is not None:
                self.value_norm.update(value_x)
        xn = self.obs_norm.normalize(x)
        v = (returns / torch.sqrt(self.ret_norm.var + OBS_EPS)).float() if spec.norm_reward else returns.float()
        vx = None if value_x is None else self.value_norm.normalize(value_x)
        k, a_loss, v_loss, interrupted = self._fit(xn, y, v, spec.bc_steps - done, spec.seed + done, vx,
                                                   len(x) // len(returns))
        stats = {"bc_action_mse": float(a_loss.detach()), "bc_value_mse": float(v_loss.detach())}
        self.bc_info = {"steps": spec.bc_steps, "rounds": spec.bc_rounds, "lr": spec.bc_lr, "expert": expert,
                        "steps_done": done + k, "dataset_s": round(gen_s, 2),
                        "wall_s": round(time.perf_counter() - t0 + self.bc_info.get("wall_s", 0.0), 2), **stats}
        if interrupted:
            self.log(f"\ninterrupted during behaviour cloning after {done + k} of {spec.bc_steps} steps: saving; "
                     f"--resume finishes the remaining steps")
            return False
        for key, val in stats.items():
            self.writer.add_scalar(f"bc/{key}", val, 0)
        self.log(f"behaviour cloning from {expert}: {spec.bc_steps} steps on {len(returns):,} rounds in "
                 f"{self.bc_info['wall_s']:.1f} s (expert set {gen_s:.1f} s; action mse {stats['bc_action_mse']:.4f})")
        return self._dagger(expert) if self.ppo.dagger_rounds > 0 else True

    def _bc_tensors(self, data):
        """The expert set as ``(actor inputs, target actions, returns, critic inputs or None)``
        on the device (one row per round here; ``rows_per_value`` actor rows per return)."""
        torch = self.torch
        x = torch.as_tensor(data.features, device=self.device)
        y = torch.as_tensor(data.actions, device=self.device, dtype=torch.float32)
        returns = torch.as_tensor(-data.latency_s if data.returns is None else data.returns, device=self.device)
        return x, y, returns, None

    def _fit(self, xn, y, v, steps: int, seed: int, vx=None, rows_per_value: int = 1):
        """``steps`` Adam steps of the mean action on ``y`` (and the value on ``v`` unless None: on
        the critic's inputs ``vx``, else the actor's; ``v[i // rows_per_value]`` for actor row ``i``),
        cosine-decayed step size; returns ``(steps done, action mse, value mse, interrupted)``."""
        torch = self.torch
        params = [p for n, p in self.ac.named_parameters() if n != "log_std"]
        opt = torch.optim.Adam(params, lr=self.spec.bc_lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1.0 + math.cos(math.pi * s / max(steps, 1))))
        gen = torch.Generator(device=self.device)
        gen.manual_seed(seed)
        n, k = len(xn), 0
        a_loss = v_loss = torch.tensor(float("nan"))
        try:
            for k in range(1, steps + 1):
                idx = torch.randint(0, n, (min(BC_BATCH, n),), generator=gen, device=self.device)
                a_loss = (self.ac.mean(xn[idx]) - y[idx]).square().mean()
                loss = a_loss
                if v is not None:
                    j = idx // rows_per_value
                    v_loss = (self.ac.value(xn[idx] if vx is None else vx[j]) - v[j]).square().mean()
                    loss = a_loss + 0.5 * v_loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
        except KeyboardInterrupt:
            return k - 1, a_loss, v_loss, True
        return k, a_loss, v_loss, False

    def _dagger(self, expert: str) -> bool:
        """``dagger_rounds`` rounds of DAgger after cloning (see :class:`TorchPPOConfig`); the
        labelled states join the cloning set (and the DAPG term's). False if a signal stopped it."""
        from jmsra_env import actions as env_actions
        from jmsra_env import model as jmodel

        from .encoding import expert_policy_action
        from .features import observation_features

        torch, spec, cfg = self.torch, self.spec, self.cfg
        from jmsra_env.policies import make_policy

        consts = jmodel.model_constants(cfg)
        teacher = make_policy(expert, config=cfg)
        episodes = self.ppo.dagger_episodes or max(1, -(-spec.bc_rounds // cfg.episode_rounds))
        try:
            for r in range(self.ppo.dagger_rounds):
                t0 = time.perf_counter()
                learner = self.eval_policy()
                feats, acts = [], []
                if cfg.session.enabled:  # whole episodes: the states the clone's own media create
                    from jmsra_env.session_env import JMSRASessionVectorEnv

                    env = JMSRASessionVectorEnv(episodes, config=cfg)
                    obs, _ = env.reset(seed=spec.seed + self.ctx.bc_seed_offset + 1 + r)
                    learner.reset(cfg, spec.seed)
                    for _ in range(cfg.episode_rounds):
                        d = teacher.decide(obs)
                        terms = jmodel.terms_from_observation(consts, obs)
                        feats.append(observation_features(obs, consts, spec.features))
                        acts.append(expert_policy_action(spec.action_encoding, np.asarray(d.media),
                                                         np.asarray(d.bandwidth_hz), terms).astype(np.float32))
                        media, bw = learner.decide(obs)
                        obs, *_ = env.step(env_actions.encode_dict(media, bw))
                    env.close()
                else:  # single rounds: the world does not depend on the decisions; nothing to add
                    return True
                x = torch.as_tensor(np.concatenate(feats), device=self.device)
                y = torch.as_tensor(np.concatenate(acts), device=self.device)
                self.bc_x, self.bc_y = torch.cat([self.bc_x, x]), torch.cat([self.bc_y, y])
                k, a_loss, _, stopped = self._fit(self.obs_norm.normalize(self.bc_x), self.bc_y, None,
                                                  max(1, spec.bc_steps // 2), spec.seed + 1000 + r)
                self.log(f"DAgger round {r + 1}/{self.ppo.dagger_rounds}: {len(x):,} states labelled by {expert}, "
                         f"{k} cloning steps on {len(self.bc_x):,} rows in {time.perf_counter() - t0:.1f} s "
                         f"(action mse {float(a_loss.detach()):.4f})")
                self.bc_info.setdefault("dagger", []).append({"rows": len(self.bc_x), "steps": k,
                                                              "action_mse": float(a_loss.detach())})
                if stopped:
                    return False
        except KeyboardInterrupt:
            return False
        return True

    # -- PPO ------------------------------------------------------------------------------------

    def _loss(self, x, a, logp_old, mu_old, old_log_std, adv, ret, bc_x, bc_y, bc_coef, vx=None):
        torch = self.torch
        mu = self.ac.mean(x)
        log_std = self.ac.log_std.expand_as(mu)
        std = log_std.exp()
        logp = (-0.5 * ((a - mu) / std).square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        ratio = (logp - logp_old).exp()
        pg = torch.max(-adv * ratio, -adv * ratio.clamp(1 - self.ppo.clip_range, 1 + self.ppo.clip_range)).mean()
        v_loss = (self.ac.value(x if vx is None else vx) - ret).square().mean()
        entropy = (log_std + 0.5 * math.log(2 * math.pi * math.e)).sum(-1).mean()
        loss = pg + self.ppo.vf_coef * v_loss - self.ppo.ent_coef * entropy
        bc_loss = (self.ac.mean(bc_x) - bc_y).square().mean() if bc_x is not None else torch.zeros((), device=x.device)
        loss = loss + bc_coef * bc_loss
        with torch.no_grad():  # analytic KL(old || new) of the diagonal Gaussians (rsl_rl)
            ls = log_std.detach()
            kl = (ls - old_log_std + ((2 * old_log_std).exp() + (mu_old - mu.detach()).square())
                  / (2 * (2 * ls).exp()) - 0.5).sum(-1).mean()
            clip_frac = ((ratio - 1).abs() > self.ppo.clip_range).float().mean()
        return loss, pg.detach(), v_loss.detach(), bc_loss.detach(), kl, clip_frac

    # the env and the critic: the hooks a multi-agent run replaces

    def _reset_env(self):
        """The rollout's carry after a reset: ``(observations, centralised state or None)``."""
        obs, _ = self.env.reset(seed=self.env_seed)
        return obs, None

    def _env_step(self, a):
        """``(observations, state or None, reward (M,), done (M,), info)`` of one step."""
        obs, r, term, trunc, info = self.env.step(a)
        return obs, None, r, term | trunc, info

    def _value(self, x, state, t: int | None = None):
        """The critic's values of a step's samples (stores its own inputs in the rollout at ``t``)."""
        return self.ac.value(x)

    def _per_sample(self, per_env):
        """A per-env quantity ``(M,)`` (reward, done) for every sample of the env."""
        return per_env

    def _scale_reward(self, r, done):
        """VecNormalize's reward scaling (by the discounted return's std) when ``norm_reward``."""
        torch = self.torch
        if not self.spec.norm_reward:
            return r
        self._ret = self._ret * self.ppo.gamma + r.to(torch.float64)
        self.ret_norm.update(self._ret)
        self._ret = torch.where(done, torch.zeros_like(self._ret), self._ret)
        return (r / torch.sqrt(self.ret_norm.var + OBS_EPS)).clamp(-REWARD_CLIP, REWARD_CLIP)

    def _alloc_buffers(self) -> dict[str, Any]:
        torch, dev = self.torch, self.device
        shape = (self.ppo.n_steps, self.spec.n_envs, *self.sample_shape)
        buf = {"x": torch.zeros(*shape, self.n_obs, device=dev), "a": torch.zeros(*shape, self.n_act, device=dev),
               "mu": torch.zeros(*shape, self.n_act, device=dev)}
        buf.update({k: torch.zeros(shape, device=dev) for k in ("logp", "v", "r", "done", "adv")})
        if self.value_norm is not None:
            buf["vx"] = torch.zeros(*shape, self.n_value_obs, device=dev)
        return buf

    def _rollout(self, carry):
        torch, T, M = self.torch, self.ppo.n_steps, self.spec.n_envs
        dev = self.device
        buf = self._buf
        obs, state = carry
        raw, raw_state = [], []
        self._old_log_std = self.ac.log_std.detach().clone()
        std = self._old_log_std.exp()
        lat_sum = torch.zeros((), dtype=torch.float64, device=dev)
        ev_sum = torch.zeros((), dtype=torch.float64, device=dev)
        with torch.no_grad():
            for t in range(T):
                raw.append(obs)
                if self.value_norm is not None:
                    raw_state.append(state)
                x = self.obs_norm.normalize(obs)
                mu = self.ac.mean(x)
                a = mu + std * torch.randn(mu.shape, generator=self.gen, device=dev)
                logp = (-0.5 * ((a - mu) / std).square() - std.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
                buf["x"][t], buf["a"][t], buf["logp"][t], buf["mu"][t] = x, a, logp, mu
                buf["v"][t] = self._value(x, state, t)
                obs, state, r, done, info = self._env_step(a.clamp(-1.0, 1.0))
                r = self._scale_reward(r, done)
                buf["r"][t], buf["done"][t] = self._per_sample(r.float()), self._per_sample(done.float())
                lat_sum += info["latency_s"].to(torch.float64).sum()
                if "evictions" in info:
                    ev_sum += info["evictions"].to(torch.float64).sum()
            last_v = self._value(self.obs_norm.normalize(obs), state)
        self.obs_norm.update(torch.stack(raw).reshape(-1, self.n_obs))
        if self.value_norm is not None:
            self.value_norm.update(torch.stack(raw_state).reshape(-1, self.n_value_obs))
        buf["adv"] = gae(buf["r"], buf["v"], buf["done"], last_v, self.ppo.gamma, self.ppo.gae_lambda)
        buf["ret"] = buf["adv"] + buf["v"]
        stats = {"rounds/latency_s": float(lat_sum) / (T * M)}
        if self.cfg.session.enabled:
            stats["rounds/evictions"] = float(ev_sum) / (T * M)
            stats["rounds/evictions_per_episode"] = stats["rounds/evictions"] * self.cfg.episode_rounds
        return (obs, state), stats

    def _update(self) -> dict[str, float]:
        torch, buf, ppo = self.torch, self._buf, self.ppo
        B = buf["logp"].numel()  # samples: steps x envs (x agents)
        x, a = buf["x"].reshape(B, -1), buf["a"].reshape(B, -1)
        vx = buf["vx"].reshape(B, -1) if "vx" in buf else None
        logp, mu = buf["logp"].reshape(B), buf["mu"].reshape(B, -1)
        adv, ret = buf["adv"].reshape(B), buf["ret"].reshape(B)
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        mb = min(ppo.batch_size, B)
        use_bc = self.bc_coef > 0 and self.bc_x is not None
        kls, pgs, vls, bcs, cfs = [], [], [], [], []
        for _ in range(ppo.n_epochs):
            perm = torch.randperm(B, generator=self.gen, device=self.device)
            for start in range(0, B - mb + 1, mb):
                idx = perm[start:start + mb]
                if use_bc:
                    j = torch.randint(0, len(self.bc_x), (mb,), generator=self.gen, device=self.device)
                    bx, by = self.obs_norm.normalize(self.bc_x[j]), self.bc_y[j]
                else:
                    bx = by = None
                loss, pg, vl, bcl, kl, cf = self._loss_fn(x[idx], a[idx], logp[idx], mu[idx], self._old_log_std,
                                                          adv[idx], ret[idx], bx, by, self.bc_coef,
                                                          None if vx is None else vx[idx])
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.ac.parameters(), ppo.max_grad_norm)
                self.opt.step()
                if ppo.desired_kl > 0:  # rsl_rl's adaptive step size
                    k = float(kl)
                    if k > 2.0 * ppo.desired_kl:
                        self.lr = max(1e-6, self.lr / 1.5)
                    elif 0.0 < k < 0.5 * ppo.desired_kl:
                        self.lr = min(1e-2, self.lr * 1.5)
                    for group in self.opt.param_groups:
                        group["lr"] = self.lr
                kls.append(kl), pgs.append(pg), vls.append(vl), bcs.append(bcl), cfs.append(cf)
            if ppo.target_kl is not None and float(torch.stack(kls[-(B // mb):]).mean()) > 1.5 * ppo.target_kl:
                break
        self.n_updates += 1
        self.bc_coef *= ppo.bc_coef_decay
        mean = lambda v: float(torch.stack(v).mean())  # noqa: E731
        return {"train/policy_gradient_loss": mean(pgs), "train/value_loss": mean(vls), "train/approx_kl": mean(kls),
                "train/clip_fraction": mean(cfs), "train/bc_loss": mean(bcs), "train/bc_coef": self.bc_coef,
                "train/learning_rate": self.lr, "train/std": float(self.ac.log_std.detach().exp().mean())}

    def _set_lr(self) -> None:
        if self.ppo.desired_kl > 0 or self.ppo.lr_schedule == "constant":
            lr = self.lr
        else:  # linear decay to 0 at the end of training, as the SB3 path
            lr = self.ppo.learning_rate * max(0.0, 1.0 - self.num_timesteps / self.spec.total_timesteps)
        for group in self.opt.param_groups:
            group["lr"] = lr

    def _learn(self) -> bool:
        """PPO up to the target; False if a signal stopped it."""
        from . import checkpoint as ck

        torch, spec, ppo = self.torch, self.spec, self.ppo
        T, M, dev = ppo.n_steps, spec.n_envs, self.device
        self._buf = self._alloc_buffers()
        self._ret = torch.zeros(M, dtype=torch.float64, device=dev)
        eval_bucket = self.num_timesteps // spec.eval_freq if spec.eval_freq else 0
        ckpt_bucket = self.num_timesteps // spec.checkpoint_freq if spec.checkpoint_freq else 0
        try:
            carry = self._reset_env()
            while self.num_timesteps < spec.total_timesteps:
                t0 = time.perf_counter()
                carry, stats = self._rollout(carry)
                t1 = time.perf_counter()
                self._set_lr()
                with ck.deferred_signals():  # a signal waits for the update: the saved state is whole
                    stats.update(self._update())
                    self.num_timesteps += T * M
                t2 = time.perf_counter()
                stats.update({"time/rollout_s": t1 - t0, "time/update_s": t2 - t1,
                              "time/env_steps_per_s": T * M / (t2 - t0)})
                for k, v in stats.items():
                    self.writer.add_scalar(k, v, self.num_timesteps)
                if spec.eval_freq and self.num_timesteps // spec.eval_freq > eval_bucket:
                    eval_bucket = self.num_timesteps // spec.eval_freq
                    self.evaluate()
                if spec.checkpoint_freq and self.num_timesteps // spec.checkpoint_freq > ckpt_bucket:
                    ckpt_bucket = self.num_timesteps // spec.checkpoint_freq
                    self.save_checkpoint()
        except KeyboardInterrupt as exc:
            if self.caught["signal"] is None:
                self.caught["signal"] = getattr(exc, "signum", signal.SIGINT)
            return False
        return True

    # -- the session ----------------------------------------------------------------------------

    def run(self):
        from . import checkpoint as ck

        try:
            self._build()
        except KeyboardInterrupt as exc:
            raise self.ctx.interrupted_cls(getattr(exc, "signum", signal.SIGINT)) from None
        ck.atomic_write_bytes(self.run_dir / ck.RUN_FILE, ck._json_bytes(self.run_info("running")))
        self.log(f"run directory: {self.run_dir}   (backend torch, device {self.plan.device}, {self.spec.n_envs} "
                 f"envs, env {self.plan.env_id})")
        interrupted = not self._behaviour_cloning()
        if not interrupted and self.num_timesteps == 0 and self.spec.eval_freq > 0 and self.spec.eval_episodes > 0:
            try:
                self.evaluate()
            except KeyboardInterrupt:
                interrupted = True
        steps_before, learn_s = self.num_timesteps, 0.0
        if not interrupted:
            t_learn = time.perf_counter()
            interrupted = not self._learn()
            learn_s = time.perf_counter() - t_learn
        return self._finish(interrupted, self.num_timesteps - steps_before, learn_s)

    def _finish(self, interrupted: bool, steps_done: int, learn_s: float):
        from . import checkpoint as ck
        from . import runs

        kind = runs.finishing(self.caught, self.extra_info, interrupted, steps_done, learn_s, self.log)
        with ck.deferred_signals(redeliver=False):
            ckpt = self.save_checkpoint()
            self.save(kind)
        self.writer.close()
        self.env.close()
        sps = steps_done / learn_s if learn_s > 0 else float("nan")
        self.log(f"\n{kind if interrupted else 'trained'}: {self.num_timesteps:,} steps ({steps_done:,} in this "
                 f"session, {sps:,.0f} env-steps/s, {time.perf_counter() - self.t_start:.0f} s in all)")
        self.log(f"model:        {self.run_dir / ck.POLICY_FILE}  (+ {ck.WEIGHTS_FILE}, {ck.TRAINER_FILE}, {ck.RUN_FILE})")
        self.log(f"checkpoint:   {ckpt}")
        self.log(f"TensorBoard:  tensorboard --logdir {self.tb_dir}")
        if interrupted:
            self.log(f"resume with:  python train.py --resume {self.run_dir}")
        metrics: dict[str, float] = {"num_timesteps": float(self.num_timesteps),
                                     "train_wall_s": round(time.perf_counter() - self.t_start, 2)}
        if "env_steps_per_s" in self.extra_info:
            metrics["env_steps_per_s"] = float(self.extra_info["env_steps_per_s"])
        if self.history:
            metrics.update({f"eval/{k}": float(v) for k, v in self.history[-1].items()
                            if isinstance(v, (int, float)) and k != "best"})
            metrics["eval/best_latency_s"] = float(self.best_latency_s)
        comparison = None
        if not interrupted and self.spec.compare_episodes > 0:
            try:
                comparison, figures = self.ctx.comparison(self.eval_policy(), self.plan, self.spec.compare_episodes)
            except KeyboardInterrupt:
                self.log("comparison skipped (interrupted); the model is saved")
            else:
                metrics.update(figures)
                self.log("\n" + comparison)
        best = self.run_dir / (ck.BEST_PREFIX + ck.POLICY_FILE)
        return self.ctx.result_cls(run_dir=self.run_dir, status=kind, num_timesteps=int(self.num_timesteps),
                           steps_this_session=int(steps_done), model_path=self.run_dir / ck.POLICY_FILE,
                           checkpoint_path=ckpt, best_model_path=best if best.is_file() else None, metrics=metrics,
                           comparison=comparison, signal=self.caught["signal"] if interrupted else None)
