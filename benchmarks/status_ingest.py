"""Two paths at scale: `newsletter status` at 20,000 subscribers, `newsletter ingest` of a 60 MB HF JSON dump.

    python benchmarks/status_ingest.py --baseline /tmp/old-checkout   # old code against this one
    python benchmarks/status_ingest.py -n 20000 --megabytes 60 --run  # --run: one run first (minutes)

The subscribers file comes from throughput.py (varied profiles); the dump repeats the real HF JSON
captures (``--realdata``, default the shared ones, else tests/data/realdata) with unique ids and titles
until it reaches ``--megabytes``. Each command runs in its own process under /usr/bin/time (user CPU,
wall time, peak RSS), once per checkout (``--baseline``: a checkout of the old code, run first, on the
same state). The outputs are compared: status's bytes, and the stored papers (papers, dump_papers,
paper_details rows) of each ingest.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
SHARED = Path("/work/shared/realdata/hf-json")
NOW = "2026-12-02T08:00Z"


def write_dump(realdata: Path, path: Path, megabytes: float) -> int:
    """A daily_papers JSON list of ``megabytes`` MB: the captures' items again and again, each unique."""
    items: list[Any] = []
    for file in sorted(realdata.glob("*.json")):
        value = json.loads(file.read_bytes())
        value = value.get("data", []) if isinstance(value, dict) else value
        items += [i for i in value if isinstance(i, dict) and isinstance(i.get("paper"), dict)]
    count = int(megabytes * 2**20 / (len(json.dumps(items)) / len(items))) + 1
    out = [_copy(items[k % len(items)], k) for k in range(count)]
    path.write_text(json.dumps(out))
    return count


def _copy(item: dict[str, Any], k: int) -> dict[str, Any]:
    item = copy.deepcopy(item)
    item["paper"]["id"] = f"{2400 + k // 90000:04d}.{k % 90000 + 10000:05d}"
    item["paper"]["title"] = item["title"] = f"{item['paper']['title']} (copy {k})"
    return item


def timed(code: Path, env: dict[str, str], args: list[str], out: Path) -> dict[str, float]:
    """Run `newsletter ARGS` with ``code`` first on the path; user s, wall s, peak RSS MB."""
    stats = out.with_suffix(".time")
    command = ["/usr/bin/time", "-f", "%U %e %M", "-o", str(stats), sys.executable, "-m", "newsletter"]
    with out.open("wb") as stdout:
        code_env = {**env, "PYTHONPATH": str(code)}  # and cwd: -m puts the cwd first on the path
        subprocess.run([*command, *args], env=code_env, cwd=out.parent, stdout=stdout, check=True)
    user, wall, rss = stats.read_text().split()[-3:]
    return {"user": float(user), "wall": float(wall), "rss": int(rss) / 1024}


def stored_papers(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        tables = ("papers", "dump_papers", "paper_details")
        return [(t, *row) for t in tables for row in conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2")]


def line(name: str, figures: dict[str, dict[str, float]]) -> str:
    parts = [
        f"{label}: {f['user']:.2f} s CPU, {f['wall']:.2f} s wall, {f['rss']:.0f} MB"
        for label, f in figures.items()
    ]
    if len(figures) == 2:
        old, new = figures.values()
        parts.append(f"{old['user'] / new['user']:.2f}x less CPU")
    return f"{name:7} " + "; ".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", "--subscribers", type=int, default=20_000)
    parser.add_argument("--megabytes", type=float, default=60)
    parser.add_argument(
        "--realdata", type=Path, default=SHARED if SHARED.is_dir() else ROOT / "tests/data/realdata"
    )
    parser.add_argument("--baseline", type=Path, help="a checkout of the old code, measured first")
    parser.add_argument("--run", action="store_true", help="one `newsletter run` first (states, deliveries)")
    args = parser.parse_args()
    from throughput import write_inputs

    work = Path(tempfile.mkdtemp(prefix="newsletter-bench-"))
    dumps, subs = write_inputs(work, args.subscribers)
    env = {**os.environ, "NEWSLETTER_DUMPS": str(dumps), "NEWSLETTER_SUBSCRIBERS": str(subs)}
    env |= {"NEWSLETTER_HOME": str(work / "state"), "NEWSLETTER_RANKER": "lexical"}
    if args.run:
        command = [sys.executable, "-m", "newsletter", "run", "--now", NOW]
        subprocess.run(command, env=env | {"PYTHONPATH": str(ROOT)}, cwd=work, check=True)
    big = work / "hf-daily_2026-12-01.json"
    count = write_dump(args.realdata, big, args.megabytes)
    print(
        f"{args.subscribers} subscribers; dump {big.stat().st_size / 1e6:.1f} MB, {count} papers; in {work}"
    )
    codes = {"old": args.baseline, "new": ROOT} if args.baseline else {"this": ROOT}
    status = {k: timed(c, env, ["status", "--now", NOW], work / f"status-{k}.txt") for k, c in codes.items()}
    ingest = {}
    for k, code in codes.items():
        home = {"NEWSLETTER_HOME": str(work / f"ingest-{k}")}
        ingest[k] = timed(code, env | home, ["ingest", "--now", NOW, str(big)], work / f"ingest-{k}.txt")
    print(line("status", status))
    print(line("ingest", ingest))
    if args.baseline:
        same = (work / "status-old.txt").read_bytes() == (work / "status-new.txt").read_bytes()
        stored = [stored_papers(work / f"ingest-{k}" / "state.db") for k in codes]
        print(f"status output the same: {same}; papers stored the same: {stored[0] == stored[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
