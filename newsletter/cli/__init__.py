"""Command line: parse arguments, build objects, call the library. No orchestration here.

Each module registers its commands on ``app`` when imported; ``--help`` lists them in this order.
"""

from newsletter.cli import runs, subscriber, upkeep  # noqa: F401  (registers their commands)
from newsletter.cli.base import app, main

__all__ = ["app", "main"]
