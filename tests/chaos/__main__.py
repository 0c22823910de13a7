"""`python -m tests.chaos --seed N --duration S` (see the package's docstring)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys

import stamina.instrumentation

from tests.chaos.run import run


def main() -> None:
    parser = argparse.ArgumentParser(description="A randomized chaos run against the oracle.")
    parser.add_argument("--seed", type=int, default=None, help="default: a fresh one")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of faults")
    args = parser.parse_args()
    # The run's own clients retry through the faults on purpose: no line for each attempt
    # (aiokafka's producer logs every failed reconnect while the broker restarts).
    stamina.instrumentation.set_on_retry_hooks([])
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    print(f"chaos: seed {seed} (rerun: make chaos SEED={seed} DURATION={args.duration:g})")
    sys.exit(0 if asyncio.run(run(seed, args.duration)) else 1)


if __name__ == "__main__":
    main()
