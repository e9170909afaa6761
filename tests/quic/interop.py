#!/usr/bin/env python3
"""Interop: drives Marquee's QUIC gateway with aioquic, a QUIC stack no one here wrote.

Usage: interop.py http://HOST:PORT   (the server's HTTP address; the QUIC address comes from /api/quic)

Pins the certificate from /api/quic/cert.pem (and checks its SHA-256 against /api/quic), subscribes to a few
symbols on the control stream, and checks that ticks arrive with increasing seq: first on the server's push stream
(seq + 1 per topic after the snapshot), then as datagrams (increasing per topic; loss is allowed and visible).
"""

import asyncio
import hashlib
import json
import ssl
import struct
import sys
import tempfile
import urllib.request

from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, DatagramFrameReceived, StreamDataReceived

TOPICS = ["ticks.AAPL", "ticks.MSFT", "ticks.NVDA"]
WANT_TICKS = 60
TIMEOUT = 20


class Client(QuicConnectionProtocol):
    """Collects length-prefixed batches from server streams and batches from datagrams."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.buffers = {}
        self.batches = asyncio.Queue()

    def quic_event_received(self, event):
        if isinstance(event, StreamDataReceived):
            buf = self.buffers.setdefault(event.stream_id, bytearray())
            buf.extend(event.data)
            while len(buf) >= 4:
                (n,) = struct.unpack(">I", buf[:4])
                if len(buf) < 4 + n:
                    break
                self.batches.put_nowait(("stream", json.loads(bytes(buf[4 : 4 + n]))))
                del buf[: 4 + n]
        elif isinstance(event, DatagramFrameReceived):
            self.batches.put_nowait(("datagram", json.loads(event.data)))
        elif isinstance(event, ConnectionTerminated):
            self.batches.put_nowait(("closed", event.error_code))

    def send_op(self, stream_id, op):
        body = json.dumps(op).encode()
        self._quic.send_stream_data(stream_id, struct.pack(">I", len(body)) + body)
        self.transmit()


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()


async def run(base, datagrams):
    info = json.loads(get(base + "/api/quic"))
    pem = get(base + "/api/quic/cert.pem").decode()
    der = ssl.PEM_cert_to_DER_cert(pem)
    assert hashlib.sha256(der).hexdigest() == info["sha256"], "the served certificate is the logged one"
    host, port = info["addr"].rsplit(":", 1)
    with tempfile.NamedTemporaryFile("w", suffix=".pem") as f:
        f.write(pem)
        f.flush()
        config = QuicConfiguration(is_client=True, alpn_protocols=["marquee.json/1"], max_datagram_frame_size=65536)
        config.load_verify_locations(f.name)
        config.server_name = "localhost"
        async with connect(host, int(port), configuration=config, create_protocol=Client) as client:
            control = client._quic.get_next_available_stream_id()
            op = {"op": "subscribe", "id": 1, "topics": TOPICS}
            if datagrams:
                op["datagrams"] = True
            client.send_op(control, op)
            last, n_ticks, acked = {}, 0, False
            while n_ticks < WANT_TICKS:
                kind, events = await asyncio.wait_for(client.batches.get(), TIMEOUT)
                assert kind != "closed", f"server closed the connection: {events}"
                for e in events:
                    ty = e["type"]
                    if ty == "ack":
                        assert e["id"] == 1 and kind == "stream", e
                        acked = True
                    elif ty == "snapshot":
                        last[e["topic"]] = e["seq"]
                    elif ty == "gap":
                        last[e["topic"]] = e["to"]
                    elif ty == "tick":
                        assert kind == ("datagram" if datagrams else "stream"), f"tick on the {kind}"
                        prev = last.get(e["topic"])
                        if datagrams:
                            assert prev is None or e["seq"] > prev, f"{e['topic']}: {e['seq']} after {prev}"
                        else:
                            assert prev is not None, "a snapshot comes before the first tick"
                            assert e["seq"] == prev + 1, f"{e['topic']}: {e['seq']} after {prev}"
                        last[e["topic"]] = e["seq"]
                        n_ticks += 1
                    else:
                        raise AssertionError(f"unexpected event {e}")
            assert acked, "the subscribe was acknowledged"
            client.send_op(control, {"op": "ping", "id": 2})
            while True:
                kind, events = await asyncio.wait_for(client.batches.get(), TIMEOUT)
                if any(e == {"type": "pong", "id": 2} for e in events):
                    break


def main():
    base = sys.argv[1].rstrip("/")
    passed, failed = 0, 0
    for name, datagrams in [("streams", False), ("datagrams", True)]:
        try:
            asyncio.run(run(base, datagrams))
            print(f"ok: aioquic {name}")
            passed += 1
        except Exception as e:  # report every case, then fail
            print(f"FAILED: aioquic {name}: {e!r}")
            failed += 1
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
