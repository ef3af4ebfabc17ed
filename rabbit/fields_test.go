package rabbit_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/brokertest"
	"github.com/isobroker/broker/rabbit"
)

// TestBadFieldFailsAlone: a message with a field AMQP 0-9-1 cannot carry
// (a short string over 255 bytes, properties larger than a frame, a name
// that is not UTF-8) fails its own call with a non-retryable
// ErrInvalidOption that names the field, before anything of the call is
// sent, while other callers of the same Broker keep publishing: the
// connection is never lost.
func TestBadFieldFailsAlone(t *testing.T) {
	url := shared.URL(t)
	leakCheck(t)
	ctx := ctxFor(t, 90*time.Second)
	logs := &logBuffer{}
	b := open(t, url, rabbit.WithLogger(logs.logger()))
	topic := brokertest.RandomName("fields")

	var mu sync.Mutex
	got := map[string]int{}
	sub, err := b.Subscribe(ctx, topic, func(_ context.Context, d *broker.Delivery) error {
		mu.Lock()
		got[d.ID]++
		mu.Unlock()
		return nil
	}, broker.Group("g"))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(ctx)

	var reconnects atomic.Int64
	states := b.WatchState(ctx)
	go func() {
		for c := range states {
			if c.To == broker.StateReconnecting {
				reconnects.Add(1)
			}
		}
	}()

	// Good publishers run throughout.
	stop := make(chan struct{})
	var good, goodFailed atomic.Int64
	var wg sync.WaitGroup
	for p := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				err := b.Publish(pctx, topic, &broker.Message{ID: fmt.Sprintf("good-%d-%d", p, i), Key: "k"})
				cancel()
				if err != nil {
					goodFailed.Add(1)
					t.Errorf("good publish failed beside a bad one: %v", err)
					return
				}
				good.Add(1)
			}
		})
	}

	long := strings.Repeat("x", 256)
	cases := []struct {
		name  string
		topic string
		msg   broker.Message
		field string
	}{
		{"message id", topic, broker.Message{ID: long}, "ID (message-id)"},
		{"content type", topic, broker.Message{ContentType: long}, "content type"},
		{"routing key", topic, broker.Message{Key: long}, "key (routing key)"},
		{"header name", topic, broker.Message{Headers: map[string]string{long: "v"}}, "header name"},
		{"properties over a frame", topic, broker.Message{Headers: map[string]string{"big": strings.Repeat("h", 200<<10)}}, "frame size"},
		{"topic", long, broker.Message{}, "topic (exchange name)"},
		{"topic not UTF-8", topic + "\xff", broker.Message{}, "not valid UTF-8"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bad := tc.msg
			bad.ID = cmp(bad.ID, "bad-"+tc.name)
			// A good message first in the same call: nothing of the call
			// may be sent.
			first := &broker.Message{ID: "beside-" + tc.name, Key: "k"}
			err := b.Publish(ctx, tc.topic, first, &bad)
			t.Logf("%s: %v", tc.name, err)
			if !errors.Is(err, broker.ErrInvalidOption) || broker.IsRetryable(err) {
				t.Fatalf("Publish = %v (retryable %v), want a non-retryable ErrInvalidOption", err, broker.IsRetryable(err))
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Errorf("error does not name the field %q: %v", tc.field, err)
			}
			if len(err.Error()) > 400 {
				t.Errorf("error quotes the whole field (%d bytes)", len(err.Error()))
			}
		})
	}
	t.Run("binding key", func(t *testing.T) {
		_, err := b.Subscribe(ctx, topic, func(context.Context, *broker.Delivery) error { return nil },
			broker.WithDriverOption(rabbit.BindingKeys{long}))
		if !errors.Is(err, broker.ErrInvalidOption) || !strings.Contains(err.Error(), "binding key") {
			t.Errorf("Subscribe with a 256-byte binding key = %v, want ErrInvalidOption naming it", err)
		}
	})
	t.Run("queue name", func(t *testing.T) {
		_, err := b.Subscribe(ctx, topic, func(context.Context, *broker.Delivery) error { return nil },
			broker.Group(long))
		if !errors.Is(err, broker.ErrInvalidOption) || !strings.Contains(err.Error(), "queue name") {
			t.Errorf("Subscribe with a 256-byte group = %v, want ErrInvalidOption naming the queue name", err)
		}
	})

	// The good publishers go on over the same connection after the bad
	// calls.
	after := good.Load() + 200
	for good.Load() < after && goodFailed.Load() == 0 && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	// A marker through the same connection and queue: everything before it
	// has been routed.
	if err := b.Publish(ctx, topic, &broker.Message{ID: "marker", Key: "k"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(30 * time.Second)
	for {
		mu.Lock()
		n := got["marker"]
		mu.Unlock()
		if n > 0 {
			break
		}
		select {
		case <-deadline:
			t.Fatal("marker not delivered")
		case <-time.After(10 * time.Millisecond):
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for id := range got {
		if strings.HasPrefix(id, "beside-") || strings.HasPrefix(id, "bad-") {
			t.Errorf("%q of a refused call was delivered", id)
		}
	}
	if n := reconnects.Load(); n > 0 || strings.Contains(logs.String(), "connection lost") {
		t.Errorf("the connection was lost %d time(s) around the bad messages", n)
	}
	if good.Load() == 0 || goodFailed.Load() > 0 {
		t.Errorf("good publishes: %d ok, %d failed", good.Load(), goodFailed.Load())
	}
	t.Logf("%d good publishes beside %d bad calls, no reconnect", good.Load(), len(cases))
}

func cmp(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
