"""Training building blocks for PPO agents on the jmsra_env environments (Stable-Baselines3).

Import the submodules you need; importing the package itself is cheap (no torch, no SB3):

==============================  ==================================================================
:mod:`jmsra_agents.features`          re-exports :mod:`jmsra_env.features` (observation features)
:mod:`jmsra_agents.encoding`          re-exports :mod:`jmsra_env.encoding`; ``EncodedActionVecEnv`` (SB3)
:mod:`jmsra_agents.envs`              vectorised training / evaluation envs (Box actions, VecNormalize)
:mod:`jmsra_agents.ppo`               :class:`~jmsra_agents.ppo.PPOConfig` and the PPO factory, device choice
:mod:`jmsra_agents.bc`                behaviour-cloning pre-training from the JMSRA expert
:mod:`jmsra_agents.callbacks`         TensorBoard round metrics, periodic evaluation, atomic checkpoints
:mod:`jmsra_agents.evaluation`        trained models as evaluation policies; comparison with the experts
:mod:`jmsra_agents.cli_evaluate`      the ``evaluate.py`` / ``jmsra-evaluate`` command line
:mod:`jmsra_agents.checkpoint`        saved models (atomic units, safe format) and :func:`~jmsra_agents.checkpoint.load_trained_policy`
:mod:`jmsra_agents.runs`              run directories: locking, ``--force``, what ``--resume`` continues
:mod:`jmsra_agents.training`          :func:`~jmsra_agents.training.train` (``TrainSpec`` -> ``TrainResult``), resume rules
:mod:`jmsra_agents.torch_ppo`         ``--backend torch``: env, rollouts and PPO updates on one torch device
:mod:`jmsra_agents.cli_train`         the ``jmsra-train`` / ``train.py`` command line
:mod:`jmsra_agents.native_vec_env`    SB3 ``VecEnv`` over the batched NumPy env (``--vec native``)
==============================  ==================================================================
"""
