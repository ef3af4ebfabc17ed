package broker_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/isobroker/broker"
)

func TestIsRetryable(t *testing.T) {
	cases := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{broker.ErrClosed, false},
		{fmt.Errorf("x: %w", broker.ErrTopicRequired), false},
		{broker.ErrUnauthorized, false},
		{context.Canceled, false},
		{fmt.Errorf("x: %w", broker.ErrUnavailable), true},
		{broker.ErrBlocked, true},
		{broker.ErrNacked, true},
		{broker.ErrBusy, true},
		{fmt.Errorf("publish: %w", context.DeadlineExceeded), true},
		{broker.MarkRetryable(errors.New("link detached")), true},
		{broker.MarkFatal(fmt.Errorf("x: %w", broker.ErrUnavailable)), false},
		{fmt.Errorf("outer: %w", broker.MarkRetryable(broker.ErrNotFound)), true},
		// Never both unauthorized and retryable, however it was marked or
		// joined (a dead host and a refused one).
		{broker.MarkRetryable(fmt.Errorf("x: %w", broker.ErrUnauthorized)), false},
		{broker.MarkRetryable(errors.Join(fmt.Errorf("h1: %w", broker.ErrUnavailable), fmt.Errorf("h2: %w", broker.ErrUnauthorized))), false},
	}
	for _, c := range cases {
		if got := broker.IsRetryable(c.err); got != c.want {
			t.Errorf("IsRetryable(%v) = %v, want %v", c.err, got, c.want)
		}
	}
	if broker.MarkRetryable(nil) != nil || broker.MarkFatal(nil) != nil {
		t.Error("marking nil must give nil")
	}
	marked := broker.MarkFatal(broker.ErrNotFound)
	if !errors.Is(marked, broker.ErrNotFound) || marked.Error() != broker.ErrNotFound.Error() {
		t.Errorf("marking changed the error: %v", marked)
	}
}

func TestSubscribeConfig(t *testing.T) {
	c, err := broker.NewSubscribeConfig(broker.Group("g"), broker.Concurrency(4))
	if err != nil {
		t.Fatal(err)
	}
	if c.Group != "g" || c.Concurrency != 4 || c.Prefetch != 0 || c.PrefetchOr(16) != 16 || c.Start.Kind != broker.StartLatest {
		t.Errorf("config = %+v", c)
	}
	if c, _ := broker.NewSubscribeConfig(broker.Prefetch(5)); c.PrefetchOr(16) != 5 {
		t.Errorf("PrefetchOr ignored Prefetch(5): %d", c.PrefetchOr(16))
	}
	bad := []broker.SubscribeOption{
		broker.Concurrency(0), broker.Prefetch(-1),
		broker.StartAt(broker.AtOffset("", false)), broker.StartAt(broker.AtSequence(-1, true)),
		broker.StartAt(broker.Position{Kind: 99}), broker.StartAt(broker.Position{Kind: broker.StartTime}),
	}
	for i, o := range bad {
		if _, err := broker.NewSubscribeConfig(o); !errors.Is(err, broker.ErrInvalidOption) {
			t.Errorf("bad option %d: err = %v, want ErrInvalidOption", i, err)
		}
	}
}

func TestCheckHelpers(t *testing.T) {
	ok := &broker.Message{Body: []byte("12345")}
	if err := broker.CheckPublish("t", []*broker.Message{ok}, 5); err != nil {
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
		if err := broker.CheckPublish(c.topic, c.msgs, 5); !errors.Is(err, c.want) {
			t.Errorf("CheckPublish(%q, …) = %v, want %v", c.topic, err, c.want)
		}
	}
	h := func(context.Context, *broker.Delivery) error { return nil }
	if _, err := broker.CheckSubscribe("", h, true); !errors.Is(err, broker.ErrTopicRequired) {
		t.Errorf("empty topic: %v", err)
	}
	if _, err := broker.CheckSubscribe("t", nil, true); !errors.Is(err, broker.ErrNilHandler) {
		t.Errorf("nil handler: %v", err)
	}
	if _, err := broker.CheckSubscribe("t", h, false, broker.StartAt(broker.Earliest())); !errors.Is(err, broker.ErrUnsupported) {
		t.Errorf("replay on a broker without it: %v", err)
	}
	if cfg, err := broker.CheckSubscribe("t", h, true, broker.StartAt(broker.AtSequence(5, true))); err != nil || cfg.Start.Sequence != 5 {
		t.Errorf("replay: %+v %v", cfg, err)
	}
}
