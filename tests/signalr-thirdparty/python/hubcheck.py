"""What a subscriber of ticks.AAPL must see, whatever the client library: shared by the Python tests.

Events are the objects of the hub's `tick` and `gap` Invocations (the native JSON event: `type`, `topic`, `seq`,
...), in the order the library hands them over, which for these libraries is the wire order.
"""
import os
import threading
import time

# Every wait is bounded: a server that stops answering fails the test instead of hanging it.
STEP = 5.0


def hub_url():
    base = os.environ.get("MARQUEE_URL")
    if not base:
        raise SystemExit("MARQUEE_URL is not set (run tests/signalr-thirdparty/run http://ADDR)")
    return base.rstrip("/") + "/hubs/market"


def wait_for(predicate, what, timeout=STEP):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.01)


class Ticks:
    """Collects tick and gap events of one subscription and checks them as they come (thread-safe)."""

    def __init__(self, topic="ticks.AAPL"):
        self.topic = topic
        self.lock = threading.Lock()
        self.seqs = []
        self.next_seq = None  # the seq the next tick must carry; None before the snapshot
        self.errors = []

    def on_tick(self, event):
        with self.lock:
            try:
                assert isinstance(event, dict), f"tick argument is {type(event).__name__}: {event!r}"
                assert event.get("topic") == self.topic, f"tick of another topic: {event}"
                seq = event["seq"]
                if self.next_seq is None:
                    assert event.get("type") == "snapshot", f"first message after Subscribe is not a snapshot: {event}"
                else:
                    assert event.get("type") == "tick", f"not a tick: {event}"
                    assert seq == self.next_seq, f"seq {seq} where {self.next_seq} was due, without a gap: {event}"
                self.seqs.append(seq)
                self.next_seq = seq + 1
            except (AssertionError, KeyError, TypeError) as err:
                self.errors.append(str(err))

    def on_gap(self, event):
        # {"type":"gap","topic":...,"from":F,"to":T}: conflation skipped F..T, the next tick is T+1.
        with self.lock:
            if isinstance(event, dict) and event.get("topic") == self.topic and self.next_seq is not None:
                self.next_seq = event["to"] + 1
            else:
                self.errors.append(f"unexpected gap: {event!r}")

    def count(self):
        with self.lock:
            return len(self.seqs)

    def check(self):
        with self.lock:
            assert not self.errors, "; ".join(self.errors[:3])

    def wait(self, n):
        """Waits until n ticks have arrived, all of them in order."""
        wait_for(lambda: self.count() >= n or self.errors, f"{n} ticks of {self.topic}")
        self.check()

    async def await_n(self, n):
        await await_for(lambda: self.count() >= n or self.errors, f"{n} ticks of {self.topic}")
        self.check()


def check_stream_items(items, n):
    """StreamTicks items: a snapshot of ticks.AAPL, then ticks with seq rising by one (or past a gap)."""
    assert len(items) >= n, f"{len(items)} StreamTicks items, want {n}"
    expected = None
    for i, item in enumerate(items):
        assert isinstance(item, dict) and item.get("topic") == "ticks.AAPL", f"item {i}: {item!r}"
        if item.get("type") == "gap":
            expected = item["to"] + 1
            continue
        if i == 0:
            assert item.get("type") == "snapshot", f"first StreamTicks item is not a snapshot: {item}"
        else:
            assert item.get("type") == "tick" and item["seq"] == expected, f"item {i}, seq {expected} due: {item}"
        expected = item["seq"] + 1


async def await_for(predicate, what, timeout=STEP):
    """wait_for for asyncio clients: polls without blocking the event loop the client runs on."""
    import asyncio

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        await asyncio.sleep(0.01)
