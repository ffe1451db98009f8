"""Crash soak: the crash test (tests/test_crash.py) with more kills, other seeds and other server delays.

    python benchmarks/crash_soak.py --kills 100 --seeds 7 8 --data-delay 0.05

Each kill -9 lands at a random point of a `newsletter run` delivering to a journaling SMTP server in its own
process; then a final run finishes and the server's journal is checked against the delivery log (no duplicate,
nothing lost unless reported unknown, at most one unknown per kill); then `retry --unknown` resends those.
Prints one line of counts per seed. Exit status 1 if any check fails.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import test_crash as crash  # noqa: E402 - needs the repo root on sys.path first


def soak(seed: int, kills: int, data_delay: float) -> str:
    with tempfile.TemporaryDirectory(prefix="crash-soak-") as tmp:
        folder = Path(tmp)
        journal = folder / "journal.jsonl"
        with crash.smtp_server(journal, data_delay) as port:
            env = crash.crash_env(folder, port)
            per_dump = math.ceil(kills / len(crash.seed_names()))
            started = time.monotonic()
            done, runs = crash.kill_runs(env, random.Random(seed), journal, per_dump=per_dump, minimum=kills)
            counts = crash.finish_and_count(env, journal, done, runs)
            assert len(counts.unknown) <= done, "more unknown deliveries than kills"
            twice = crash.resend_unknown(env, journal, counts)
            seconds = time.monotonic() - started
    return f"seed={seed} {counts.line()} resent-duplicates={len(twice)} ({seconds:.0f} s)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=60, help="kills per seed (default 60)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1], help="random seeds (default 1)")
    parser.add_argument(
        "--data-delay", type=float, default=crash.DATA_DELAY, help="server's DATA reply delay (s)"
    )
    args = parser.parse_args()
    for key in [k for k in os.environ if k.startswith("NEWSLETTER_")]:
        del os.environ[key]  # only the soak's own settings
    failed = False
    for seed in args.seeds:
        try:
            print(soak(seed, args.kills, args.data_delay), flush=True)
        except AssertionError as exc:
            failed = True
            print(f"seed={seed} FAILED: {exc}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
