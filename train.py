#!/usr/bin/env python
"""Train a PPO agent on a jmsra_env scenario: a shim over ``jmsra_agents.cli_train`` (``jmsra-train``).

    python train.py --quick                      # or: jmsra-train --quick
    python train.py --total-timesteps 1000000 --run-name ppo-1m
    tensorboard --logdir runs/ppo-1m/tb

The training itself is ``jmsra_agents.training.train(TrainSpec(...))``; see ``docs/training.md``.
"""

import sys

from jmsra_agents.cli_train import main

if __name__ == "__main__":
    sys.exit(main())
