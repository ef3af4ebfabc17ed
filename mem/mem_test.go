package mem_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/brokertest"
	"github.com/isobroker/broker/mem"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	brokertest.Run(t, brokertest.Harness{
		Open: func(ctx context.Context) (broker.Broker, error) {
			return mem.New(mem.WithQueueCapacity(256))
		},
		OpenTelemetry: func(ctx context.Context, tel broker.Telemetry) (broker.Broker, error) {
			return mem.New(mem.WithQueueCapacity(256), mem.WithTelemetry(tel))
		},
		System: mem.System,
	})
}

// A full queue makes Publish wait, and the wait ends with the ctx.
func TestBackPressureHonoursContext(t *testing.T) {
	b, err := mem.New(mem.WithQueueCapacity(2))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	release := make(chan struct{})
	sub, err := b.Subscribe(context.Background(), "t", func(ctx context.Context, d *broker.Delivery) error {
		<-release
		return nil
	}, broker.Group("g"))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(context.Background())
	ctx := context.Background()
	// One in flight, two queued: the queue is full.
	for i := range 3 {
		if err := b.Publish(ctx, "t", &broker.Message{ID: string(rune('a' + i))}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := b.Publish(short, "t", &broker.Message{ID: "blocked"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("publish to a full queue = %v, want DeadlineExceeded", err)
	}
	done := make(chan error, 1)
	go func() { done <- b.Publish(ctx, "t", &broker.Message{ID: "waits"}) }()
	close(release) // the handler drains the queue, making space
	if err := <-done; err != nil {
		t.Fatalf("publish after space freed = %v", err)
	}
}

// Close wakes a Publish waiting for space with ErrClosed.
func TestCloseWakesBlockedPublish(t *testing.T) {
	b, err := mem.New(mem.WithQueueCapacity(1))
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	defer close(release)
	if _, err := b.Subscribe(context.Background(), "t", func(ctx context.Context, d *broker.Delivery) error {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	}, broker.Group("g")); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := b.Publish(context.Background(), "t", &broker.Message{}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- b.Publish(context.Background(), "t", &broker.Message{}) }()
	time.Sleep(20 * time.Millisecond) // let it block (the assertion holds either way)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_ = b.Close(ctx) // the hung handler makes this time out
	if err := <-done; !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("blocked publish after Close = %v, want ErrClosed", err)
	}
}

// Group queues keep collecting while the group has no member.
func TestGroupQueueOutlivesMembers(t *testing.T) {
	b, err := mem.New()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	ctx := context.Background()
	got := make(chan string, 10)
	h := func(ctx context.Context, d *broker.Delivery) error { got <- d.ID; return nil }
	sub, err := b.Subscribe(ctx, "t", h, broker.Group("g"))
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, "t", &broker.Message{ID: "while-away"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Subscribe(ctx, "t", h, broker.Group("g")); err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-got:
		if id != "while-away" {
			t.Fatalf("got %q", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("message published while the group had no member was not delivered")
	}
}

// A panicking handler nacks instead of crashing the process.
func TestHandlerPanicNacks(t *testing.T) {
	b, err := mem.New()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	got := make(chan *broker.Delivery, 1)
	panicked := false
	_, err = b.Subscribe(context.Background(), "t", func(ctx context.Context, d *broker.Delivery) error {
		if !panicked {
			panicked = true
			panic("boom")
		}
		got <- d
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(context.Background(), "t", &broker.Message{ID: "p"}); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-got:
		if !d.Metadata.Redelivered || d.Metadata.DeliveryCount != 1 {
			t.Fatalf("redelivery metadata = %+v, want Redelivered and DeliveryCount 1", d.Metadata)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("message not redelivered after the handler panicked")
	}
}

func TestBadOptions(t *testing.T) {
	for _, o := range []mem.Option{mem.WithQueueCapacity(0), mem.WithMaxMessageSize(-1)} {
		if _, err := mem.New(o); !errors.Is(err, broker.ErrInvalidOption) {
			t.Errorf("New with bad option = %v, want ErrInvalidOption", err)
		}
	}
	b, _ := mem.New()
	defer b.Close(context.Background())
	_, err := b.Subscribe(context.Background(), "t", func(context.Context, *broker.Delivery) error { return nil },
		broker.StartAt(broker.Earliest()))
	if !errors.Is(err, broker.ErrUnsupported) {
		t.Errorf("Subscribe from earliest = %v, want ErrUnsupported", err)
	}
}
