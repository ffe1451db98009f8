"""A minimal, fast SMTP sink for benchmarks: accepts everything, records (recipient, Message-ID) pairs.

    python benchmarks/smtp_sink.py --port 2525 --record received.tsv

Speaks just enough ESMTP for smtplib (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT), and offers
PIPELINING (RFC 2920) like Postfix, Exim and the big providers do (``--no-pipelining`` to withhold it):
commands are read one line at a time, so a pipelined MAIL/RCPT/DATA group is answered in order. Each accepted
message appends "recipient<TAB>message-id" to the record file, flushed on SIGTERM/SIGINT, and the times
the first and the last message were accepted go to the same name with ``.times``. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sys
import time
from pathlib import Path

_MESSAGE_ID = re.compile(rb"^Message-ID:\s*(\S+)", re.IGNORECASE | re.MULTILINE)


class Sink:
    def __init__(self, record: Path | None, pipelining: bool = True, delay: float = 0.0) -> None:
        self.ehlo = (
            b"250-sink\r\n"
            + (b"250-PIPELINING\r\n" if pipelining else b"")
            + b"250-8BITMIME\r\n250 SIZE 104857600\r\n"
        )
        self.delay = delay  # seconds before accepting each message, like a server across a network
        self.count = 0
        self.lines: list[str] = []
        self.record = record
        self.first = self.last = 0.0  # when the first and the last message were accepted (epoch s)

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 sink ready\r\n")
        rcpts: list[bytes] = []
        try:
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    writer.write(self.ehlo)
                elif verb == b"MAIL":
                    rcpts = []
                    writer.write(b"250 OK\r\n")
                elif verb == b"RCPT":
                    rcpts.append(line[8:].strip().strip(b"<>"))
                    writer.write(b"250 OK\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 go ahead\r\n")
                    await writer.drain()
                    body = await reader.readuntil(b"\r\n.\r\n")
                    self._accept(rcpts, body)
                    if self.delay:
                        await asyncio.sleep(self.delay)
                    writer.write(b"250 OK queued\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    break
                else:  # RSET, NOOP, anything else
                    writer.write(b"250 OK\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def _accept(self, rcpts: list[bytes], body: bytes) -> None:
        head = body[: body.find(b"\r\n\r\n")]
        found = _MESSAGE_ID.search(head)
        message_id = found.group(1).decode(errors="replace") if found else "-"
        self.count += 1
        self.last = time.time()
        self.first = self.first or self.last
        self.lines.extend(f"{r.decode(errors='replace')}\t{message_id}\n" for r in rcpts)

    def flush(self) -> None:
        if self.record is not None:
            self.record.write_text("".join(self.lines), encoding="utf-8")
            self.record.with_suffix(".times").write_text(f"{self.first} {self.last}\n", encoding="utf-8")


async def serve(
    port: int, record: Path | None, ready: Path | None, pipelining: bool = True, delay: float = 0.0
) -> None:
    sink = Sink(record, pipelining, delay)
    server = await asyncio.start_server(sink.session, "127.0.0.1", port, limit=1 << 24)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.write_text(str(server.sockets[0].getsockname()[1]))
    async with server:
        await stop.wait()
    sink.flush()
    print(f"sink: {sink.count} messages", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--record", type=Path)
    parser.add_argument("--ready", type=Path, help="write the listening port here once ready")
    parser.add_argument("--no-pipelining", action="store_true", help="do not offer PIPELINING")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each 250 to a message")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.record, args.ready, not args.no_pipelining, args.delay))


if __name__ == "__main__":
    main()
