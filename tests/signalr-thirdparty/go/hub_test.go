// Package thirdparty runs github.com/philippseith/signalr, a Go SignalR client written without Microsoft's code,
// against a running Marquee server (MARQUEE_URL) on every transport and hub protocol the library has:
// WebSockets with JSON and MessagePack, Server-Sent Events with JSON (the library has no long polling, and SSE
// carries text only). Each combination is one subtest of about a second.
package thirdparty

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/log"
	"github.com/philippseith/signalr"
)

// step bounds every wait: a server that stops answering fails the test instead of hanging it.
const step = 5 * time.Second

// market collects the hub's tick and gap events. The library calls each receiver method in a goroutine of its
// own, so the calls come in any order: the test keeps every tick by seq and checks the set, not the arrival order.
//
// Every target Marquee may send must have a method here: for an Invocation without a method the library answers
// the server with a Completion of its own (id "", "Unknown method ..."), which a hub does not expect.
type market struct {
	signalr.Receiver
	mu    sync.Mutex
	ticks map[int64]map[string]interface{}
	gaps  [][2]int64
	bad   []string
}

func newMarket() *market { return &market{ticks: map[int64]map[string]interface{}{}} }

func (m *market) Tick(ev map[string]interface{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	seq, ok := asInt(ev["seq"])
	if !ok || ev["topic"] != "ticks.AAPL" {
		m.bad = append(m.bad, fmt.Sprint(ev))
		return
	}
	if _, dup := m.ticks[seq]; dup {
		m.bad = append(m.bad, fmt.Sprintf("seq %d twice", seq))
	}
	m.ticks[seq] = ev
}

// Gap: {"type":"gap","topic":...,"from":F,"to":T}, the seqs F..T were skipped by conflation.
func (m *market) Gap(ev map[string]interface{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	from, ok1 := asInt(ev["from"])
	to, ok2 := asInt(ev["to"])
	if !ok1 || !ok2 {
		m.bad = append(m.bad, fmt.Sprint(ev))
		return
	}
	m.gaps = append(m.gaps, [2]int64{from, to})
}

func (m *market) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.ticks)
}

// waitTicks waits until at least n ticks have arrived.
func (m *market) waitTicks(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(step)
	for m.count() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d ticks within %v", m.count(), n, step)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// check asserts what a subscriber sees: the lowest seq is the snapshot that starts the subscription, every other
// tick is a live "tick", and from the snapshot to the last tick no seq is missing unless a gap announced it.
func (m *market) check(t *testing.T) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.bad) > 0 {
		t.Fatalf("unexpected events: %v", m.bad)
	}
	seqs := make([]int64, 0, len(m.ticks))
	for s := range m.ticks {
		seqs = append(seqs, s)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	for i, s := range seqs {
		want := "tick"
		if i == 0 {
			want = "snapshot"
		}
		if m.ticks[s]["type"] != want {
			t.Fatalf("tick %d of %d (seq %d) is not a %s: %v", i, len(seqs), s, want, m.ticks[s])
		}
	}
	for s := seqs[0]; s <= seqs[len(seqs)-1]; s++ {
		if _, ok := m.ticks[s]; ok {
			continue
		}
		covered := false
		for _, g := range m.gaps {
			covered = covered || (g[0] <= s && s <= g[1])
		}
		if !covered {
			t.Fatalf("seq %d missing without a gap, between %d and %d", s, seqs[0], seqs[len(seqs)-1])
		}
	}
}

func TestHub(t *testing.T) {
	base := os.Getenv("MARQUEE_URL")
	if base == "" {
		t.Fatal("MARQUEE_URL is not set (run tests/signalr-thirdparty/run http://ADDR)")
	}
	for _, c := range []struct {
		transport signalr.TransportType
		format    signalr.TransferFormatType
	}{
		{signalr.TransportWebSockets, signalr.TransferFormatText},
		{signalr.TransportWebSockets, signalr.TransferFormatBinary},
		{signalr.TransportServerSentEvents, signalr.TransferFormatText},
	} {
		name := fmt.Sprintf("%s/%s", c.transport, map[signalr.TransferFormatType]string{"Text": "json", "Binary": "messagepack"}[c.format])
		t.Run(name, func(t *testing.T) { runCombination(t, base+"/hubs/market", c.transport, c.format) })
	}
}

func runCombination(t *testing.T, hub string, transport signalr.TransportType, format signalr.TransferFormatType) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m := newMarket()

	// Connect: negotiate, transport request, handshake. WebSockets negotiate version 1 (connectionToken as id);
	// Server-Sent Events version 0 (connectionId as id), because the library's SSE connection POSTs its messages
	// to ?id=<connectionId> whatever the version, which only version 0 makes the right id (ASP.NET Core answers
	// 404 as well).
	negotiate := signalr.WithNegotiateVersion(1)
	if transport == signalr.TransportServerSentEvents {
		negotiate = signalr.WithNegotiateVersion(0)
	}
	conn, err := signalr.NewHTTPConnection(ctx, hub, signalr.WithTransports(transport), negotiate)
	if err != nil {
		t.Fatalf("negotiate and open %s: %v", transport, err)
	}
	client, err := signalr.NewClient(ctx,
		signalr.WithConnection(conn),
		signalr.WithReceiver(m),
		signalr.TransferFormat(format),
		// The library applies this limit to a whole WebSocket frame, not to one hub message; Marquee (like
		// ASP.NET Core) may put many hub messages in one frame, so raise it well above 32 KiB.
		signalr.MaximumReceiveMessageSize(1<<20),
		signalr.Logger(log.NewNopLogger(), false))
	if err != nil {
		t.Fatalf("new client: %v", err)
	}
	client.Start()
	defer client.Stop()
	if err := waitErr(client.WaitForState(ctx, signalr.ClientConnected)); err != nil {
		t.Fatalf("handshake: %v (client error: %v)", err, client.Err())
	}

	// Subscribe completes, then ticks of ticks.AAPL arrive.
	if err := invoke(client, "Subscribe", []string{"ticks.AAPL"}); err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	m.waitTicks(t, 20)

	// An unknown method is answered with an error Completion naming it; the connection stays up and the ticks
	// keep coming.
	err = invoke(client, "NoSuchMethod", 1)
	if err == nil || !strings.Contains(err.Error(), "unknown_method") || !strings.Contains(err.Error(), "NoSuchMethod") {
		t.Fatalf("NoSuchMethod: want an unknown_method error, got %v", err)
	}
	if s := client.State(); s != signalr.ClientConnected {
		t.Fatalf("state after the error: %v", s)
	}
	m.waitTicks(t, m.count()+10)

	// Unsubscribe completes and the ticks stop. The ticks sent before the Completion may still be on their way
	// to the receiver (one goroutine each), so let them land before counting.
	if err := invoke(client, "Unsubscribe", []string{"ticks.AAPL"}); err != nil {
		t.Fatalf("Unsubscribe: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	after := m.count()
	time.Sleep(500 * time.Millisecond)
	if n := m.count(); n != after {
		t.Fatalf("%d ticks arrived more than 300 ms after Unsubscribe completed", n-after)
	}
	m.check(t)

	// StreamTicks("AAPL") yields the topic's ticks as stream items, a snapshot first.
	sctx, scancel := context.WithTimeout(ctx, step)
	defer scancel()
	items := client.PullStream("StreamTicks", "AAPL")
	var prev int64 = -1
	for n := 0; n < 10; n++ {
		var ir signalr.InvokeResult
		var ok bool
		select {
		case ir, ok = <-items:
		case <-sctx.Done():
			t.Fatalf("StreamTicks: %d items within %v", n, step)
		}
		if !ok || ir.Error != nil {
			t.Fatalf("StreamTicks ended after %d items: %v", n, ir.Error)
		}
		item, isMap := asObject(ir.Value)
		if !isMap {
			t.Fatalf("StreamTicks item %d is %T, not an object", n, ir.Value)
		}
		if item["type"] == "gap" {
			prev, _ = asInt(item["to"])
			n--
			continue
		}
		// Items come in wire order: a snapshot, then each tick's seq one more than the last.
		seq, _ := asInt(item["seq"])
		if item["topic"] != "ticks.AAPL" || (n == 0 && item["type"] != "snapshot") || (n > 0 && (item["type"] != "tick" || seq != prev+1)) {
			t.Fatalf("StreamTicks item %d after seq %d: %v", n, prev, item)
		}
		prev = seq
	}
	// The library hands items over one at a time and gives up on the connection when one is not taken within
	// 5 s; keep taking them until Stop.
	go func() {
		for range items {
		}
	}()

	// A clean stop: the library sends a Close message and ends its loop.
	client.Stop()
	if s := client.State(); s != signalr.ClientClosed {
		t.Fatalf("state after Stop: %v", s)
	}
}

// invoke calls a hub method and waits for its Completion: nil for a void result, the error text otherwise.
func invoke(client signalr.Client, method string, args ...interface{}) error {
	select {
	case ir, ok := <-client.Invoke(method, args...):
		if !ok {
			// The library closes the channel without a value for a void Completion.
			return nil
		}
		return ir.Error
	case <-time.After(step):
		return fmt.Errorf("no Completion within %v", step)
	}
}

// asInt reads an integer: float64 from JSON, one of the integer types from MessagePack.
func asInt(v interface{}) (int64, bool) {
	switch v := v.(type) {
	case float64:
		return int64(v), true
	case int8:
		return int64(v), true
	case int16:
		return int64(v), true
	case int32:
		return int64(v), true
	case int64:
		return v, true
	case uint8:
		return int64(v), true
	case uint16:
		return int64(v), true
	case uint32:
		return int64(v), true
	case uint64:
		return int64(v), true
	}
	return 0, false
}

// asObject takes a decoded object: the library's MessagePack decoder gives map[interface{}]interface{} for a
// stream item (the target of the decode is interface{}), its JSON decoder map[string]interface{}.
func asObject(v interface{}) (map[string]interface{}, bool) {
	switch o := v.(type) {
	case map[string]interface{}:
		return o, true
	case map[interface{}]interface{}:
		m := make(map[string]interface{}, len(o))
		for k, v := range o {
			s, ok := k.(string)
			if !ok {
				return nil, false
			}
			m[s] = v
		}
		return m, true
	}
	return nil, false
}

func waitErr(ch <-chan error) error {
	select {
	case err := <-ch:
		return err
	case <-time.After(step):
		return fmt.Errorf("not connected within %v", step)
	}
}
