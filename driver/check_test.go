package driver_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/driver"
)

func TestSubscribeConfig(t *testing.T) {
	c, err := driver.NewSubscribeConfig(broker.Group("g"), broker.Concurrency(4))
	if err != nil {
		t.Fatal(err)
	}
	if c.Group != "g" || c.Concurrency != 4 || c.Prefetch != 0 || driver.PrefetchOr(c, 16) != 16 || c.Start.Kind != broker.StartLatest {
		t.Errorf("config = %+v", c)
	}
	if c, _ := driver.NewSubscribeConfig(broker.Prefetch(5)); driver.PrefetchOr(c, 16) != 5 {
		t.Errorf("PrefetchOr ignored Prefetch(5): %d", driver.PrefetchOr(c, 16))
	}
	bad := []broker.SubscribeOption{
		broker.Concurrency(0), broker.Prefetch(-1),
		broker.StartAt(broker.AtOffset("", false)), broker.StartAt(broker.AtSequence(-1, true)),
		broker.StartAt(broker.Position{Kind: 99}), broker.StartAt(broker.Position{Kind: broker.StartTime}),
	}
	for i, o := range bad {
		if _, err := driver.NewSubscribeConfig(o); !errors.Is(err, broker.ErrInvalidOption) {
			t.Errorf("bad option %d: err = %v, want ErrInvalidOption", i, err)
		}
	}
}

func TestCheckHelpers(t *testing.T) {
	ok := &broker.Message{Body: []byte("12345")}
	if err := driver.CheckPublish("t", []*broker.Message{ok}, 5); err != nil {
		t.Errorf("valid publish: %v", err)
	}
	for _, c := range []struct {
		topic string
		msgs  []*broker.Message
		want  error
	}{
		{"", []*broker.Message{ok}, broker.ErrTopicRequired},
		{"t", []*broker.Message{ok, nil}, broker.ErrNilMessage},
		{"t", []*broker.Message{{Body: make([]byte, 6)}}, broker.ErrMessageTooLarge},
	} {
		if err := driver.CheckPublish(c.topic, c.msgs, 5); !errors.Is(err, c.want) {
			t.Errorf("CheckPublish(%q, …) = %v, want %v", c.topic, err, c.want)
		}
	}
	h := func(context.Context, *broker.Delivery) error { return nil }
	replay := broker.Capabilities{Replay: true}
	if _, err := driver.CheckSubscribe("", h, replay); !errors.Is(err, broker.ErrTopicRequired) {
		t.Errorf("empty topic: %v", err)
	}
	if _, err := driver.CheckSubscribe("t", nil, replay); !errors.Is(err, broker.ErrNilHandler) {
		t.Errorf("nil handler: %v", err)
	}
	if _, err := driver.CheckSubscribe("t", h, broker.Capabilities{}, broker.StartAt(broker.Earliest())); !errors.Is(err, broker.ErrUnsupported) {
		t.Errorf("replay on a broker without it: %v", err)
	}
	if cfg, err := driver.CheckSubscribe("t", h, replay, broker.StartAt(broker.AtSequence(5, true))); err != nil || cfg.Start.Sequence != 5 {
		t.Errorf("replay: %+v %v", cfg, err)
	}
}

func TestPrefetchForRoundTrip(t *testing.T) {
	for _, c := range []struct {
		floor   int
		rtt     time.Duration
		ceiling int
		want    int
	}{
		{128, 0, 1000, 128},                    // loopback: the floor
		{128, 2 * time.Millisecond, 1000, 128}, // 40 < floor
		{128, 20 * time.Millisecond, 1000, 400},
		{128, 20*time.Millisecond + time.Nanosecond, 1000, 401}, // rounded up
		{128, time.Second, 1000, 1000},                          // capped
		{2000, time.Second, 1000, 2000},                         // a floor above the cap wins
	} {
		if got := driver.PrefetchForRoundTrip(c.floor, c.rtt, 20000, c.ceiling); got != c.want {
			t.Errorf("PrefetchForRoundTrip(%d, %v, 20000, %d) = %d, want %d", c.floor, c.rtt, c.ceiling, got, c.want)
		}
	}
}
