#!/usr/bin/env python
"""Multi-seed, multi-scenario sweeps on Ray Tune, reported with rliable (IQM, bootstrap intervals).

Locally (Ray starts in-process on this machine's cores)::

    python sweep.py --env-ids jmsra_env/JMSRA-v0,jmsra_env/JMSRA-N8-v0 --recipes ppo,bc+ppo \\
        --seeds 0..9 --total-timesteps 200000 --out sweeps/first

On an existing Ray cluster: add ``--address auto`` (on a node) or ``--address ray://HOST:10001``.
Resume an interrupted sweep: ``python sweep.py --resume --out sweeps/first``.

The library is :mod:`jmsra_agents.sweep`; see docs/sweeps.md.
"""

import sys

from jmsra_agents.sweep import main

if __name__ == "__main__":
    sys.exit(main())
