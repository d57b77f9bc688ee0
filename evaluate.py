#!/usr/bin/env python
"""Evaluate policies side by side on the same seeded rounds, or sweep a parameter (``jmsra-evaluate``).

A thin launcher: the command line lives in :mod:`jmsra_agents.cli_evaluate` (``python evaluate.py --help``);
the evaluation in :mod:`jmsra_env.evaluation`. See docs/evaluation.md.
"""

import sys

from jmsra_agents.cli_evaluate import main

if __name__ == "__main__":
    sys.exit(main())
