"""Replay dated dump files, one `newsletter run` per date, and print each run's exit status.

    python benchmarks/replay_dumps.py [FOLDER]    # default: the shared real HF captures

Each file's date comes from its name (YYYY-MM-DD). Files are copied into a fresh dumps folder in date
order, and after each copy one `newsletter run --now <date>T09:00Z` (lexical ranker, file outbox, the
example subscribers) runs in a fresh state folder shared by the whole replay. A damaged file should
fail only the run it arrives in; every other run should exit 0.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path("/work/shared/realdata/hf-json")


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else SHARED
    files = sorted((p for p in folder.iterdir() if re.search(r"\d{4}-\d{2}-\d{2}", p.name)), key=_date)
    with tempfile.TemporaryDirectory() as tmp:
        env = _env(Path(tmp))
        failed = 0
        for path in files:
            shutil.copy(path, Path(env["NEWSLETTER_DUMPS"]) / path.name)
            code, report = _run(env, _date(path))
            failed += code != 0
            problems = [d["error"] for d in report.get("dumps", []) if d.get("error")]
            print(
                f"{_date(path)}  exit {code}  {path.name}" + (f"  refused: {problems[0]}" if problems else "")
            )
    print(f"{len(files)} runs, {len(files) - failed} exited 0, {failed} exited non-zero")


def _date(path: Path) -> str:
    found = re.search(r"\d{4}-\d{2}-\d{2}", path.name)
    return found.group(0) if found else ""


def _env(tmp: Path) -> dict[str, str]:
    (tmp / "dumps").mkdir()
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "NEWSLETTER_HOME": str(tmp / "state"),
        "NEWSLETTER_DUMPS": str(tmp / "dumps"),
        "NEWSLETTER_SUBSCRIBERS": str(ROOT / "subscribers.example.yaml"),
        "NEWSLETTER_RANKER": "lexical",
    }


def _run(env: dict[str, str], day: str) -> tuple[int, dict]:
    command = [sys.executable, "-m", "newsletter", "run", "--json", "--now", f"{day}T09:00:00Z"]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    try:
        return proc.returncode, json.loads(proc.stdout)
    except ValueError:
        return proc.returncode, {}


if __name__ == "__main__":
    main()
