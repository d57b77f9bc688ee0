"""Training building blocks for PPO agents on the jmsra_env environments (Stable-Baselines3).

Import the submodules you need; importing the package itself is cheap (no torch, no SB3):

==============================  ==================================================================
:mod:`agents.features`          re-exports :mod:`jmsra_env.features` (observation features)
:mod:`agents.encoding`          re-exports :mod:`jmsra_env.encoding`; ``EncodedActionVecEnv`` (SB3)
:mod:`agents.envs`              vectorised training / evaluation envs (Box actions, VecNormalize)
:mod:`agents.ppo`               :class:`~agents.ppo.PPOConfig` and the PPO factory, device choice
:mod:`agents.bc`                behaviour-cloning pre-training from the JMSRA expert
:mod:`agents.callbacks`         TensorBoard round metrics, periodic evaluation, atomic checkpoints
:mod:`agents.evaluation`        trained models as evaluation policies; comparison with the experts
:mod:`agents.cli_evaluate`      the ``evaluate.py`` / ``jmsra-evaluate`` command line
:mod:`agents.checkpoint`        saved models (atomic units, safe format) and :func:`~agents.checkpoint.load_trained_policy`
:mod:`agents.runs`              run directories: locking, ``--force``, what ``--resume`` continues
:mod:`agents.training`          :func:`~agents.training.train` (``TrainSpec`` -> ``TrainResult``), resume rules
:mod:`agents.torch_ppo`         ``--backend torch``: env, rollouts and PPO updates on one torch device
:mod:`agents.cli_train`         the ``jmsra-train`` / ``train.py`` command line
:mod:`agents.native_vec_env`    SB3 ``VecEnv`` over the batched NumPy env (``--vec native``)
==============================  ==================================================================
"""
