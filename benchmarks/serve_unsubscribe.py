"""How long a one-click unsubscribe waits while previews are queued on `newsletter serve`.

Starts the preview app on uvicorn on loopback (two seed dumps, the three test subscribers, lexical
ranker), sends ``--previews`` preview requests at once, waits for the first to come back (the server
is busy and holds the rest), then POSTs an unsubscribe and prints how long it took and how many
previews finished meanwhile, next to the time one preview takes alone (the baseline measured in the
same run).

    /work/venv/bin/python benchmarks/serve_unsubscribe.py [--previews 200]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from newsletter.config import Settings  # noqa: E402
from newsletter.serve import create_app, local_hosts  # noqa: E402
from newsletter.serve.key import COOKIE  # noqa: E402
from newsletter.unsubscribe import make_token  # noqa: E402

SECRET = "benchmark-secret"
SUBSCRIBERS = """subscribers:
  - {email: ssm@example.org, interests: ["chain-of-thought", "latent space", "language grounding"]}
  - {email: diff@example.org, interests: ["sound", "speech synthesis"]}
  - {email: nobody@example.org, interests: ["sourdough baking"]}
"""


def settings_in(folder: Path) -> Settings:
    (folder / "dumps").mkdir()
    for seed in sorted((ROOT / "seeds").glob("*.txt"))[:2]:
        shutil.copy(seed, folder / "dumps" / seed.name)
    (folder / "subscribers.yaml").write_text(SUBSCRIBERS, encoding="utf-8")
    return Settings(
        home=folder / "state",
        subscribers=folder / "subscribers.yaml",
        dumps=folder / "dumps",
        ranker="lexical",
        sender="Papers <digest@papers.example.org>",
        base_url="https://papers.example.org/",
        unsubscribe_secret=SecretStr(SECRET),
    )


async def measure(url: str, previews: int, key: str) -> tuple[float, float, float, int]:
    """Seconds for one preview alone, an unsubscribe alone and under load; previews finished meanwhile."""
    limits = httpx.Limits(max_connections=previews + 4)
    cookies = {COOKIE: key}  # the preview pages ask for the key (a 403 would be measured instead)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=600, cookies=cookies) as client:
        warm = await client.get("/s/ssm@example.org")  # warm: renderer and ranker built
        assert warm.status_code == 200, warm.status_code
        started = time.perf_counter()
        await client.get("/s/ssm@example.org")
        alone = time.perf_counter() - started
        token = make_token("diff@example.org", SecretStr(SECRET))
        started = time.perf_counter()
        await client.post(f"/unsubscribe/{token}", content=b"")
        unsubscribe_alone = time.perf_counter() - started
        done = 0

        async def preview() -> None:
            nonlocal done
            await client.get("/s/ssm@example.org")
            done += 1

        tasks = [asyncio.create_task(preview()) for _ in range(previews)]
        while done == 0:
            await asyncio.sleep(0.005)
        before, started = done, time.perf_counter()
        response = await client.post(f"/unsubscribe/{token}", content=b"")
        waited = time.perf_counter() - started
        during = done - before
        assert response.status_code == 200, response.status_code
        await asyncio.gather(*tasks)
    return alone, unsubscribe_alone, waited, during


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--previews", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings_in(Path(tmp))
        app = create_app(settings, allowed_hosts=local_hosts())
        sock = socket.create_server(("127.0.0.1", 0), backlog=2048)
        config = uvicorn.Config(app, log_level="warning", ws="none", timeout_graceful_shutdown=5)
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        try:
            url, key = f"http://127.0.0.1:{sock.getsockname()[1]}", app.state.preview_key.value
            alone, unsubscribe_alone, waited, during = asyncio.run(measure(url, args.previews, key))
        finally:
            server.should_exit = True
            thread.join(timeout=60)
            sock.close()
    print(f"previews queued: {args.previews}")
    print(f"one preview alone: {alone * 1000:.0f} ms")
    print(f"one unsubscribe alone: {unsubscribe_alone * 1000:.0f} ms")
    print(f"unsubscribe under load: {waited * 1000:.0f} ms ({waited / alone:.2f} x one preview)")
    print(f"previews finished while the unsubscribe waited: {during}")


if __name__ == "__main__":
    main()
