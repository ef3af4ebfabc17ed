package eventhubs_test

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/eventhubs"
	"github.com/isobroker/broker/eventhubs/emulator"
)

// Log messages the resume tests rely on (adapter and emulator).
const (
	msgDetachedReattaching = "receiver detached; re-attaching"
	msgAttachRefused       = "receiver attach failed; retrying"
	msgAdapterAttached     = `msg="receiver attached"`
	msgEmulatorAttached    = `msg="event receiver attached"`
)

// resumeDelivery is one handler call, in arrival order.
type resumeDelivery struct {
	id          string
	seq         int64
	redelivered bool
}

// resumeLog records every handler call in order; the handler always
// succeeds.
type resumeLog struct {
	mu   sync.Mutex
	all  []resumeDelivery
	more chan struct{}
}

func newResumeLog() *resumeLog { return &resumeLog{more: make(chan struct{}, 1)} }

func (r *resumeLog) handle(_ context.Context, d *broker.Delivery) error {
	r.mu.Lock()
	r.all = append(r.all, resumeDelivery{d.ID, d.Metadata.SequenceNumber, d.Metadata.Redelivered})
	r.mu.Unlock()
	select {
	case r.more <- struct{}{}:
	default:
	}
	return nil
}

func (r *resumeLog) snapshot() []resumeDelivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.all)
}

// expect waits until at least len(ids) deliveries were handled, then
// requires that the deliveries are exactly ids, in order, with sequence
// numbers firstSeq, firstSeq+1, … and none marked redelivered: nothing
// handed over twice, nothing skipped.
func (r *resumeLog) expect(t *testing.T, what string, ids []string, firstSeq int64) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for len(r.snapshot()) < len(ids) {
		select {
		case <-r.more:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("%s: %d of %d deliveries within 30s; got %v", what, len(r.snapshot()), len(ids), r.snapshot())
		}
	}
	got := r.snapshot()
	if len(got) != len(ids) {
		t.Fatalf("%s: %d deliveries, want exactly %d: %v", what, len(got), len(ids), got)
	}
	for i, d := range got {
		if d.id != ids[i] || d.seq != firstSeq+int64(i) || d.redelivered {
			t.Fatalf("%s: delivery %d = %+v, want {id:%s seq:%d redelivered:false}; all: %v",
				what, i, d, ids[i], firstSeq+int64(i), got)
		}
	}
}

// logGate is a slog handler that can hold the goroutine logging one given
// message until the test releases it: a subscriber's partition goroutine
// logs "receiver detached; re-attaching" (and, after a refused attach,
// "receiver attach failed; retrying") before it attaches again, so holding
// it there keeps the partition detached for exactly as long as the test
// needs, without guessing durations.
type logGate struct {
	next slog.Handler
	st   *gateState
}

type gateState struct {
	mu      sync.Mutex
	msg     string // armed message, "" when disarmed
	hit     chan struct{}
	release chan struct{}
	ended   chan struct{} // closed at cleanup: nothing stays held
}

func newLogGate(logs *logBuffer) *logGate {
	return &logGate{
		next: slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}),
		st:   &gateState{ended: make(chan struct{})},
	}
}

// arm holds the next record whose message is msg (once). hit is closed
// when that record arrives; the record's goroutine then waits for release.
func (g *logGate) arm(msg string) (hit <-chan struct{}, release func()) {
	g.st.mu.Lock()
	defer g.st.mu.Unlock()
	h, r := make(chan struct{}), make(chan struct{})
	g.st.msg, g.st.hit, g.st.release = msg, h, r
	var once sync.Once
	return h, func() { once.Do(func() { close(r) }) }
}

func (g *logGate) Enabled(ctx context.Context, l slog.Level) bool { return g.next.Enabled(ctx, l) }

func (g *logGate) Handle(ctx context.Context, rec slog.Record) error {
	st := g.st
	st.mu.Lock()
	var hit, release chan struct{}
	if st.msg != "" && rec.Message == st.msg {
		hit, release = st.hit, st.release
		st.msg = ""
	}
	st.mu.Unlock()
	if hit != nil {
		close(hit)
		select {
		case <-release:
		case <-st.ended:
		}
	}
	return g.next.Handle(ctx, rec)
}

func (g *logGate) WithAttrs(as []slog.Attr) slog.Handler {
	return &logGate{next: g.next.WithAttrs(as), st: g.st}
}

func (g *logGate) WithGroup(name string) slog.Handler {
	return &logGate{next: g.next.WithGroup(name), st: g.st}
}

// resumeSetup starts an emulator (logging at debug level into emuLogs)
// with a one-partition hub, a publisher broker and a subscriber broker
// whose logger is gated.
func resumeSetup(t *testing.T) (e *emulator.Emulator, hub string, p, s *eventhubs.Broker, gate *logGate, subLogs, emuLogs *logBuffer) {
	t.Helper()
	emuLogs = &logBuffer{}
	e = startEmulator(t, emulator.Config{Logger: emuLogs.logger()})
	hub = newHub(t, e, 1)
	retry := eventhubs.WithRetry(eventhubs.RetryOptions{MaxAttempts: 10})
	fast := eventhubs.WithBackoff(broker.Backoff{Initial: 10 * time.Millisecond, Max: 200 * time.Millisecond})
	p = open(t, e, nil, retry, fast)
	subLogs = &logBuffer{}
	gate = newLogGate(subLogs)
	s = open(t, e, nil, retry, fast, eventhubs.WithLogger(slog.New(gate)))
	// Registered after open's cleanup, so it runs first: a goroutine
	// still held by the gate is let go before the broker closes.
	t.Cleanup(func() {
		close(gate.st.ended)
		if t.Failed() {
			t.Logf("subscriber log:\n%s\nemulator log:\n%s", subLogs, emuLogs)
		}
	})
	return e, hub, p, s, gate, subLogs, emuLogs
}

// publishIDs publishes one event per id, in order, and returns the ids.
func publishIDs(t *testing.T, p *eventhubs.Broker, hub, prefix string, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%d", prefix, i)
		if err := p.Publish(ctxT(t, 20*time.Second), hub, &broker.Message{ID: ids[i], Body: []byte(ids[i])}); err != nil {
			t.Fatalf("publish %s: %v", ids[i], err)
		}
	}
	return ids
}

// waitGate waits until the gated message was logged.
func waitGate(t *testing.T, hit <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-hit:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: not logged within 30s", what)
	}
}

// waitLogCount waits until logs holds n lines containing every one of subs.
func waitLogCount(t *testing.T, logs *logBuffer, n int, subs ...string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for logs.count(subs...) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d log lines with %q within 30s, want %d", logs.count(subs...), subs, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var startSeqRE = regexp.MustCompile(`start_seq=(-?\d+)`)

// emulatorStartSeqs lists, in order, the first sequence number the
// emulator resolved for each receiver attach it accepted.
func emulatorStartSeqs(t *testing.T, emuLogs *logBuffer) []int64 {
	t.Helper()
	var out []int64
	for _, line := range strings.Split(emuLogs.String(), "\n") {
		if !strings.Contains(line, msgEmulatorAttached) {
			continue
		}
		m := startSeqRE.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("emulator attach line without start_seq: %s", line)
		}
		n, err := strconv.ParseInt(m[1], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, n)
	}
	return out
}

// resumeSel is the selector the adapter must re-attach with after having
// handed over seq.
func resumeSel(seq int64) string {
	return fmt.Sprintf("amqp.annotation.x-opt-sequence-number > '%d'", seq)
}

func receiversOf(hub string) string { return hub + "/ConsumerGroups" }

// TestResumeFromLastDelivered: a subscription from Earliest on a
// one-partition hub handles 5 events, then loses its receiver link
// (amqp:link:detach-forced) and, later, its connection
// (amqp:connection:forced). After each drop, with every event handled
// before the fault, the receiver re-attaches with "sequence number > last
// handed over" (adapter log and the emulator's resolved start_seq both
// checked); events published while it is held detached and after it is
// back are each handed over exactly once, in order, and none of the
// earlier ones again (a restart from Earliest would redeliver them, a
// restart from the newest event would skip the ones published while
// detached).
func TestResumeFromLastDelivered(t *testing.T) {
	e, hub, p, s, gate, subLogs, emuLogs := resumeSetup(t)
	got := newResumeLog()
	sub, err := s.Subscribe(ctxT(t, 10*time.Second), hub, got.handle, broker.StartAt(broker.Earliest()))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(ctxT(t, 10*time.Second))

	want := publishIDs(t, p, hub, "first", 5)
	got.expect(t, "before any fault", want, 0)

	faults := []struct {
		name   string
		inject func()
	}{
		{"link detach", func() {
			if n := e.Faults().DetachLinks(receiversOf(hub), emulator.CondLinkDetachForced, "The link is force detached (fault injection)."); n == 0 {
				t.Fatal("no connection to detach links on")
			}
		}},
		{"connection close", func() {
			if n := e.Faults().CloseConnections(""); n == 0 {
				t.Fatal("no connection to close")
			}
		}},
	}
	for i, f := range faults {
		last := int64(len(want) - 1) // every event so far was handled
		hit, release := gate.arm(msgDetachedReattaching)
		f.inject()
		waitGate(t, hit, f.name+": receiver detach")
		// Held between the drop and the re-attach: these are stored while
		// no receiver is attached.
		want = append(want, publishIDs(t, p, hub, fmt.Sprintf("detached%d", i), 3)...)
		release()
		waitLogCount(t, subLogs, i+2, msgAdapterAttached)
		want = append(want, publishIDs(t, p, hub, fmt.Sprintf("after%d", i), 3)...)
		got.expect(t, "after "+f.name, want, 0)

		if n := subLogs.count(msgDetachedReattaching, "resume=\""+resumeSel(last)+"\""); n != 1 {
			t.Errorf("%s: %d detach lines name resume %q, want 1", f.name, n, resumeSel(last))
		}
		if n := subLogs.count(msgAdapterAttached, "selector=\""+resumeSel(last)+"\""); n != 1 {
			t.Errorf("%s: %d attaches with selector %q, want 1", f.name, n, resumeSel(last))
		}
		seqs := emulatorStartSeqs(t, emuLogs)
		if len(seqs) != i+2 || seqs[i+1] != last+1 {
			t.Errorf("%s: emulator attach start sequence numbers %v, want %d attaches, the last at %d", f.name, seqs, i+2, last+1)
		}
	}
	if n := subLogs.count("msg=reconnected"); n < 1 {
		t.Errorf("subscriber never logged a reconnect after its connection was closed")
	}
	select {
	case <-sub.Done():
		t.Fatalf("subscription ended: %v", sub.Err())
	default:
	}
}

// TestResumeLatestAfterDrop: a subscription at Latest on a one-partition
// hub holding 3 older events must, after a drop, resume where it was and
// not jump to the then-newest event. First the receiver link is detached
// before anything was delivered and its next two attaches are refused
// with com.microsoft:server-busy; 4 events published while it is held
// detached (after the first refusal) are all handed over after recovery,
// and none of the 3 older ones. Then, after those were handled, its
// connection is closed and 4 more published while it is held detached
// are handed over. The re-attach selectors and the emulator's resolved
// start sequence numbers are checked too.
func TestResumeLatestAfterDrop(t *testing.T) {
	e, hub, p, s, gate, subLogs, emuLogs := resumeSetup(t)
	old := publishIDs(t, p, hub, "old", 3) // sequence numbers 0..2
	got := newResumeLog()
	sub, err := s.Subscribe(ctxT(t, 10*time.Second), hub, got.handle, broker.StartAt(broker.Latest()))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(ctxT(t, 10*time.Second))
	pinned := int64(len(old) - 1)
	if n := subLogs.count(msgAdapterAttached, "selector=\""+resumeSel(pinned)+"\""); n != 1 {
		t.Fatalf("first attach: %d lines with selector %q, want 1 (latest pinned to a sequence number)", n, resumeSel(pinned))
	}

	// Drop before anything was delivered; refuse the next two attaches.
	e.Faults().RefuseNextAttach(emulator.CondServerBusy, "")
	e.Faults().RefuseNextAttach(emulator.CondServerBusy, "")
	hit, release := gate.arm(msgAttachRefused)
	e.Faults().DetachLinks(receiversOf(hub), emulator.CondLinkDetachForced, "The link is force detached (fault injection).")
	waitGate(t, hit, "refused re-attach")
	want := publishIDs(t, p, hub, "while-refused", 4) // sequence numbers 3..6
	release()
	got.expect(t, "after detach and refusals", want, pinned+1)
	if n := subLogs.count(msgAttachRefused, emulator.CondServerBusy); n != 2 {
		t.Errorf("%d refused re-attaches logged, want 2", n)
	}
	if n := subLogs.count(msgAdapterAttached, "selector=\""+resumeSel(pinned)+"\""); n != 2 {
		t.Errorf("%d attaches with selector %q, want 2 (first attach and re-attach)", n, resumeSel(pinned))
	}
	if seqs := emulatorStartSeqs(t, emuLogs); !slices.Equal(seqs, []int64{pinned + 1, pinned + 1}) {
		t.Errorf("emulator attach start sequence numbers %v, want [%d %d]", seqs, pinned+1, pinned+1)
	}

	// Drop the connection after deliveries; hold it detached again.
	last := pinned + int64(len(want))
	hit, release = gate.arm(msgDetachedReattaching)
	if n := e.Faults().CloseConnections(""); n == 0 {
		t.Fatal("no connection to close")
	}
	waitGate(t, hit, "receiver detach after connection close")
	want = append(want, publishIDs(t, p, hub, "while-closed", 4)...) // 7..10
	release()
	got.expect(t, "after connection close", want, pinned+1)
	if n := subLogs.count(msgAdapterAttached, "selector=\""+resumeSel(last)+"\""); n != 1 {
		t.Errorf("%d attaches with selector %q, want 1", n, resumeSel(last))
	}
	if seqs := emulatorStartSeqs(t, emuLogs); len(seqs) != 3 || seqs[2] != last+1 {
		t.Errorf("emulator attach start sequence numbers %v, want 3 attaches, the last at %d", seqs, last+1)
	}
	select {
	case <-sub.Done():
		t.Fatalf("subscription ended: %v", sub.Err())
	default:
	}
}
