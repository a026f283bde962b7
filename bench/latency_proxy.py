"""A TCP proxy on loopback that adds network distance: ``python -m bench.latency_proxy --upstream HOST:PORT
--one-way-ms 20`` prints ``proxy listening on 127.0.0.1:PORT`` and forwards to the upstream until SIGTERM.

This kernel has no ``netem`` qdisc, so the distance is emulated in user space (shared/reference/network.md):

* every segment read from either side is delivered to the other side ``one-way`` later (segments are delayed
  individually and in order, so a pipelined stream is not serialised: the delay is latency, not bandwidth);
* a new connection pays the TCP handshake: the proxy connects upstream one round trip (2 × one-way) after it
  accepted, and nothing the client sent is delivered before that round trip plus the one-way delay.

A fresh HTTPS request thus costs TCP (1 RTT) + TLS 1.3 (1 RTT) + the exchange (1 RTT) plus the endpoints' own time;
a request on a kept-alive connection costs 1 RTT. It runs in its own process so its work never shares the measured
client's interpreter lock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable


async def _pump(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    delay: float,
    not_before: Callable[[], float],
) -> None:
    """Copy ``reader`` to ``writer``, each chunk ``delay`` seconds after it was read (and not before
    ``not_before()``), preserving order; EOF is forwarded the same way."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def read_side() -> None:
        try:
            while True:
                data = await reader.read(65536)
                queue.put_nowait((loop.time() + delay, data))
                if not data:
                    return
        except (ConnectionError, OSError):
            queue.put_nowait((loop.time() + delay, b""))

    reading = asyncio.create_task(read_side())
    try:
        while True:
            due, data = await queue.get()
            wait = max(due, not_before() + delay) - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                with contextlib.suppress(OSError, RuntimeError):
                    if writer.can_write_eof():
                        writer.write_eof()
                return
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        return
    finally:
        reading.cancel()


class LatencyProxy:
    def __init__(self, upstream_host: str, upstream_port: int, one_way: float) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.one_way = one_way
        self.connections = 0

    async def handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        self.connections += 1
        connected_at = loop.time() + 2 * self.one_way  # the TCP handshake's round trip
        upstream: list[asyncio.StreamWriter] = []
        try:
            await asyncio.sleep(2 * self.one_way)
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            upstream.append(up_writer)
            await asyncio.gather(
                _pump(client_reader, up_writer, self.one_way, lambda: connected_at),
                _pump(up_reader, client_writer, self.one_way, lambda: 0.0),
            )
        except (ConnectionError, OSError):
            pass
        finally:
            for writer in (client_writer, *upstream):
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()


async def serve(upstream: str, one_way: float, host: str = "127.0.0.1", port: int = 0) -> None:
    up_host, _, up_port = upstream.rpartition(":")
    proxy = LatencyProxy(up_host or "127.0.0.1", int(up_port), one_way)
    server = await asyncio.start_server(proxy.handle, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    bound = server.sockets[0].getsockname()
    print(f"proxy listening on {bound[0]}:{bound[1]}", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.latency_proxy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="HOST:PORT to forward to (loopback)")
    parser.add_argument("--one-way-ms", type=float, default=20.0, help="delay each way in ms (default 20 = 40 ms RTT)")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.upstream.startswith(("127.", "localhost:")):
        parser.error("the benchmark only touches loopback: --upstream must be 127.x.x.x:PORT or localhost:PORT")
    asyncio.run(serve(args.upstream, args.one_way_ms / 1000, port=args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
