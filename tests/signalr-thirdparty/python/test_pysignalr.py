"""pysignalr (PyPI, asyncio, on the `websockets` library) against a running Marquee (MARQUEE_URL), on every
transport and hub protocol the library has: WebSockets with JSON and with MessagePack (it has no other transport).
One test per combination, about a second each.
"""
import asyncio
import unittest

from pysignalr.client import SignalRClient
from pysignalr.protocol.json import JSONProtocol
from pysignalr.protocol.messagepack import MessagepackProtocol
from websockets.protocol import State

from hubcheck import STEP, Ticks, await_for, check_stream_items, hub_url


class Connection:
    """One hub connection with its events recorded."""

    def __init__(self, protocol):
        # retry_count=1: a failed negotiate fails the test at once instead of being retried with backoff.
        self.client = SignalRClient(hub_url(), protocol=protocol, retry_count=1)
        self.ticks = Ticks()
        self.opened = asyncio.Event()
        self.errors = []
        self.client.on_open(self._opened)
        self.client.on("tick", self._tick)
        self.client.on("gap", self._gap)
        # An error Completion goes to on_error and then to the invocation's own callback too.
        self.client.on_error(self._error)

    async def _opened(self):
        self.opened.set()

    async def _tick(self, args):
        self.ticks.on_tick(args[0])

    async def _gap(self, args):
        self.ticks.on_gap(args[0])

    async def _error(self, message):
        self.errors.append(message)

    async def invoke(self, method, args):
        """Invokes a hub method and returns its Completion."""
        done = asyncio.get_running_loop().create_future()

        async def on_completion(message):
            done.set_result(message)

        await self.client.send(method, args, on_invocation=on_completion)
        try:
            return await asyncio.wait_for(done, STEP)
        except asyncio.TimeoutError:
            raise AssertionError(f"{method}: no Completion within {STEP:.0f} s") from None


async def run_combination(protocol):
    conn = Connection(protocol)
    client = conn.client
    runner = asyncio.create_task(client.run())
    try:
        # Connect: negotiate (no negotiateVersion: version 0), WebSocket, handshake.
        await asyncio.wait_for(conn.opened.wait(), STEP)

        # Subscribe completes without an error, then ticks of ticks.AAPL arrive in order.
        done = await conn.invoke("Subscribe", [["ticks.AAPL"]])
        assert done.error is None, done.error
        await conn.ticks.await_n(20)

        # An unknown method gets an error Completion naming it; the connection stays up, the ticks go on.
        done = await conn.invoke("NoSuchMethod", [1])
        assert done.error and "unknown_method" in done.error and "NoSuchMethod" in done.error, done.error
        assert [m.error for m in conn.errors] == [done.error], conn.errors
        await conn.ticks.await_n(conn.ticks.count() + 10)

        # Unsubscribe completes and the ticks stop (events are handled in wire order).
        done = await conn.invoke("Unsubscribe", [["ticks.AAPL"]])
        assert done.error is None, done.error
        after = conn.ticks.count()
        await asyncio.sleep(0.5)
        assert conn.ticks.count() == after, "ticks after Unsubscribe completed"
        conn.ticks.check()

        # StreamTicks("AAPL") yields StreamItems: a snapshot, then the ticks.
        items = []
        stream_errors = []

        async def on_next(item):
            items.append(item)

        async def on_complete(message):
            stream_errors.append(f"completed early: {message}")

        async def on_error(message):
            stream_errors.append(f"error: {message}")

        await client.stream("StreamTicks", ["AAPL"], on_next=on_next, on_complete=on_complete, on_error=on_error)
        await await_for(lambda: len(items) >= 10 or stream_errors, "10 StreamTicks items")
        assert stream_errors == [], stream_errors
        check_stream_items(list(items), 10)
        assert runner.done() is False, "the client's run() ended"
    finally:
        # A clean stop: cancelling run() leaves `async with connect(...)`, which closes the WebSocket (1000).
        runner.cancel()
        try:
            await asyncio.wait_for(runner, STEP)
        except asyncio.CancelledError:
            pass
    # The library's connect loop is an async generator, so the socket closes after run() has ended.
    ws = client._transport._ws
    assert ws is not None
    await await_for(lambda: ws.state is State.CLOSED, "the WebSocket closing")
    return ws


async def stop_after_handshake():
    """Connects, then stops: returns the closed WebSocket (`close_code` is what the server's close frame said)."""
    conn = Connection(JSONProtocol())
    runner = asyncio.create_task(conn.client.run())
    try:
        await asyncio.wait_for(conn.opened.wait(), STEP)
    finally:
        runner.cancel()
        try:
            await asyncio.wait_for(runner, STEP)
        except asyncio.CancelledError:
            pass
    ws = conn.client._transport._ws
    await await_for(lambda: ws.state is State.CLOSED, "the WebSocket closing")
    return ws


class PysignalrTest(unittest.TestCase):
    def test_websockets_json(self):
        asyncio.run(run_combination(JSONProtocol()))

    def test_websockets_messagepack(self):
        asyncio.run(run_combination(MessagepackProtocol()))


class PysignalrCloseTest(unittest.TestCase):
    """The WebSocket closing handshake on stop. The connection is made in setUp, so that a failure to connect or
    to stop is an error of its own and not taken for the expected failure below."""

    def setUp(self):
        self.ws = asyncio.run(stop_after_handshake())

    # RFC 6455 section 5.5.1: the client's stop sends a WebSocket Close frame, which the server answers with a
    # Close of its own (Marquee's WebSocket layer echoes the client's code, as the RFC suggests; ASP.NET Core answers
    # 1000). Without the answer the client records 1006 (abnormal closure) and no Close received.
    def test_websockets_close_is_answered(self):
        sent, rcvd = self.ws.protocol.close_sent, self.ws.protocol.close_rcvd
        self.assertIsNotNone(sent, "the client sent a Close frame")
        self.assertIsNotNone(rcvd, f"no Close frame from the server (close code {self.ws.close_code})")
        self.assertEqual(rcvd.code, sent.code, "the server's Close answers the client's")


if __name__ == "__main__":
    unittest.main(verbosity=2)
