"""End-to-end throughput: N personal digests through `newsletter run` into an SMTP sink on loopback.

    python benchmarks/throughput.py                 # 10,000 subscribers
    python benchmarks/throughput.py -n 100000       # memory check at 100,000
    python benchmarks/throughput.py --sink-delay 0.005   # a server that takes 5 ms to accept each message
    python benchmarks/throughput.py --latency       # API and SMTP at 0/50/200 ms: batches, connections
    python benchmarks/throughput.py -n 4000 --executor procrastinate --workers 1,2,4 --sink-delay 0.02
                                                    # scaling over workers (benchmarks/scaling.py)

In one run it:
1. generates N subscribers with varied profiles and one dump of every seed paper (~385);
2. starts a fast SMTP sink on loopback in its own process (benchmarks/smtp_sink.py);
3. measures the *reference limit*: pre-built messages of the pipeline's average size (base64 lines, like
   ours) pushed by a bare smtplib loop over one connection into the same kind of sink;
4. measures the *real pipeline*: `newsletter run` (rank, render, build MIME, send over SMTP) for all N;
5. prints messages/s for both, their ratio, time per stage, peak memory, and what the sink counted
   (N received, no duplicates).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import smtplib
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, TypedDict

ROOT = Path(__file__).resolve().parent.parent
SINK = ROOT / "benchmarks" / "smtp_sink.py"

TOPICS = [
    "chain-of-thought", "latent space", "Kolmogorov-Arnold networks", "model compression", "context length",
    "word embeddings", "knowledge graphs", "calibration", "mobile agents", "autonomous driving",
    "post-training quantization", "episodic memory", "protein structure prediction", "reinforcement learning",
    "LLM agents", "reasoning", "code generation", "quantization", "KV cache", "speculative decoding",
    "efficient LLM serving", "pruning", "knowledge distillation", "graph neural networks",
    "3D reconstruction",
    "Gaussian splatting", "speech recognition", "text-to-speech", "robotics", "embodied agents",
    "vision transformers", "object detection", "semantic segmentation", "audio-visual learning",
    "retrieval-augmented generation", "instruction tuning", "RLHF", "preference optimization",
    "long context", "linear attention", "tokenization", "federated learning", "privacy",
    "adversarial robustness", "continual learning", "few-shot learning", "contrastive learning",
    "self-supervised learning", "neural architecture search", "neural radiance fields",
]  # fmt: skip


def write_inputs(workdir: Path, n: int, seed: int = 7) -> tuple[Path, Path]:
    """A dumps folder with one ~385-paper dump, and subscribers.yaml with n varied profiles."""
    from newsletter.sources import read_dump

    papers: dict[str, tuple[str, str]] = {}
    for path in sorted((ROOT / "seeds").glob("*.txt")):
        for p in read_dump(path).papers:
            papers.setdefault(p.title_key, (p.title, p.abstract))
    dumps = workdir / "dumps"
    dumps.mkdir()
    body = "\n\n".join(f"{t}\n\n{a}" for t, a in papers.values())
    (dumps / "all.txt").write_text(f"new\n\nGet trending papers in your email inbox!\n\n{body}\n")
    rng = random.Random(seed)
    subs = workdir / "subscribers.yaml"
    with subs.open("w") as out:
        out.write("defaults: {cadence: each-dump}\nsubscribers:\n")
        for i in range(n):
            interests = json.dumps(rng.sample(TOPICS, rng.randint(1, 3)))
            limit = rng.randint(5, 15)
            entry = f"{{email: user{i}@bench.example.org, interests: {interests}, max_items: {limit}}}"
            out.write(f"  - {entry}\n")
    return dumps, subs


SINK_OPTIONS: list[str] = []  # e.g. ["--no-pipelining"], set from the command line


def start_sink(
    workdir: Path, name: str, options: list[str] | None = None
) -> tuple[subprocess.Popen[bytes], int, Path]:
    ready, record = workdir / f"{name}.port", workdir / f"{name}.tsv"
    extra = SINK_OPTIONS if options is None else options
    command = [sys.executable, str(SINK), "--ready", str(ready), "--record", str(record), *extra]
    proc = subprocess.Popen(command)
    deadline = time.monotonic() + 20
    while not ready.exists() or not ready.read_text():
        if time.monotonic() > deadline:
            raise RuntimeError("sink did not start")
        time.sleep(0.05)
    return proc, int(ready.read_text()), record


def stop_sink(proc: subprocess.Popen[bytes], record: Path) -> list[tuple[str, str]]:
    proc.terminate()
    proc.wait(timeout=30)
    lines = record.read_text().splitlines() if record.exists() else []
    return [tuple(line.split("\t", 1)) for line in lines]  # type: ignore[misc]


def reference(workdir: Path, n: int, size: int) -> float:
    """Bare smtplib over one connection: pre-built messages of ``size`` bytes. Returns messages/s."""
    body = base64.encodebytes(os.urandom(max(size - 400, 0) * 3 // 4)).replace(b"\n", b"\r\n")
    messages = [
        (f"user{i}@bench.example.org", b"From: a@bench.example.org\r\nTo: user%d@bench.example.org\r\n"
         b"Subject: reference\r\nMessage-ID: <ref%d@bench.example.org>\r\n\r\n" % (i, i) + body)
        for i in range(min(n, 2000))
    ]  # fmt: skip
    proc, port, record = start_sink(workdir, "reference")
    try:
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            started = time.perf_counter()
            for i in range(n):
                to, raw = messages[i % len(messages)]
                smtp.sendmail("a@bench.example.org", [to], raw)
            elapsed = time.perf_counter() - started
    finally:
        got = stop_sink(proc, record)
    assert len(got) == n, f"reference: sink counted {len(got)} of {n}"
    return n / elapsed


class PipelineRun(TypedDict):
    elapsed: float  # seconds, the whole `newsletter run` process
    received: list[tuple[str, str]]  # what the sink received
    rss_mb: float  # peak memory of the run's largest process
    last: dict[str, Any]  # the run's last-run.json


def pipeline(workdir: Path, dumps: Path, subs: Path, extra_env: dict[str, str]) -> PipelineRun:
    proc, port, record = start_sink(workdir, "pipeline")
    env = {
        **os.environ,
        "NEWSLETTER_HOME": str(workdir / "state"),
        "NEWSLETTER_DUMPS": str(dumps),
        "NEWSLETTER_SUBSCRIBERS": str(subs),
        "NEWSLETTER_TRANSPORT": "smtp",
        "NEWSLETTER_SMTP_HOST": "127.0.0.1",
        "NEWSLETTER_SMTP_PORT": str(port),
        "NEWSLETTER_FROM": "Papers <digest@bench.example.org>",
        **extra_env,
    }
    try:
        started = time.perf_counter()
        run = subprocess.Popen([sys.executable, "-m", "newsletter", "run"], env=env, stdout=subprocess.PIPE)
        _, status, usage = os.wait4(run.pid, 0)
        elapsed = time.perf_counter() - started
        out = run.stdout.read().decode() if run.stdout else ""
    finally:
        got = stop_sink(proc, record)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"newsletter run failed:\n{out[-2000:]}")
    last = json.loads((workdir / "state" / "last-run.json").read_text())
    return {"elapsed": elapsed, "received": got, "rss_mb": usage.ru_maxrss / 1024, "last": last}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", "--subscribers", type=int, default=10_000)
    parser.add_argument("--ranker", default="lexical", help="NEWSLETTER_RANKER for the pipeline run")
    parser.add_argument(
        "--workers",
        default="1",
        help="NEWSLETTER_WORKERS for the pipeline run; a list (1,2,4) measures scaling (scaling.py)",
    )
    parser.add_argument(
        "--executor",
        default=None,
        choices=["local", "procrastinate"],
        help="measure scaling over --workers with this executor, beside SQLite/local (benchmarks/scaling.py)",
    )
    parser.add_argument("--database-url", default=None, help="PostgreSQL for --executor procrastinate")
    parser.add_argument("--no-local", action="store_true", help="with --executor: skip the SQLite/local runs")
    parser.add_argument(
        "--no-pipelining", action="store_true", help="the sink withholds PIPELINING (RFC 2920)"
    )
    parser.add_argument(
        "--sink-delay", type=float, default=0.0, help="seconds the sink waits before accepting a message"
    )
    parser.add_argument(
        "--latency",
        action="store_true",
        help="instead: delivery to an API and an SMTP sink taking 0, 50, 200 ms (benchmarks/latency.py)",
    )
    parser.add_argument("--built", type=int, default=2000, help="--latency: digests built for the cells")
    parser.add_argument(
        "--delays", type=float, nargs="+", default=[0.0, 0.05, 0.2], help="--latency: seconds"
    )
    parser.add_argument("--batch", type=int, default=100, help="--latency: batch size of the batch rows")
    parser.add_argument("--most", type=int, default=8, help="--latency: most connections in the table")
    parser.add_argument(
        "--api-run", type=int, default=10_000, help="--latency: subscribers of the whole run (0: none)"
    )
    args = parser.parse_args()
    if args.latency:
        import latency

        with tempfile.TemporaryDirectory() as tmp:
            return latency.run(Path(tmp), args.built, args.delays, args.batch, args.most, args.api_run)
    n = args.subscribers
    if args.no_pipelining:
        SINK_OPTIONS.append("--no-pipelining")
    if args.sink_delay:
        SINK_OPTIONS.extend(["--delay", str(args.sink_delay)])
    counts = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        dumps, subs = write_inputs(workdir, n)
        if args.executor is not None or len(counts) > 1:
            from scaling import scaling  # benchmarks/ is on sys.path as this script's folder

            args.executor = args.executor or "local"
            return scaling(args, dumps, subs, workdir, counts, [start_sink, stop_sink])
        extra = {"NEWSLETTER_RANKER": args.ranker, "NEWSLETTER_WORKERS": str(counts[0])}
        result = pipeline(workdir, dumps, subs, extra)
        last = result["last"]
        sent = last["counts"].get("sent", 0)
        avg_size = int(last.get("bytes_sent", 0) / max(sent, 1))
        ref_rate = reference(workdir, max(sent, 1), avg_size)
    received = result["received"]
    dup = sum(c - 1 for c in Counter(received).values() if c > 1)
    rate = sent / last["timings"]["total"]
    wall_rate = sent / result["elapsed"]
    print(f"subscribers: {n}; digests sent: {sent}; skipped: {n - sent} (nothing relevant)")
    print(f"average message: {avg_size / 1024:.1f} KiB")
    print(f"reference (bare smtplib, 1 connection): {ref_rate:8.0f} msg/s")
    print(f"newsletter run (delivery phase):        {rate:8.0f} msg/s  = {rate / ref_rate:.2f} x reference")
    print(f"newsletter run (whole process, wall):   {wall_rate:8.0f} msg/s  ({result['elapsed']:.1f} s)")
    stages = ", ".join(f"{k} {v:.2f}s" for k, v in last["timings"].items())
    print(f"stages: {stages}")
    print(f"peak memory (newsletter run, largest process): {result['rss_mb']:.0f} MB")
    print(f"sink: received {len(received)}, duplicates {dup}, expected {sent}")
    return 0 if len(received) == sent and dup == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
