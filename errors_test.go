package broker_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/driver"
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
		{driver.MarkRetryable(errors.New("link detached")), true},
		{driver.MarkFatal(fmt.Errorf("x: %w", broker.ErrUnavailable)), false},
		{fmt.Errorf("outer: %w", driver.MarkRetryable(broker.ErrNotFound)), true},
		// Never both unauthorized and retryable, however it was marked or
		// joined (a dead host and a refused one).
		{driver.MarkRetryable(fmt.Errorf("x: %w", broker.ErrUnauthorized)), false},
		{driver.MarkRetryable(errors.Join(fmt.Errorf("h1: %w", broker.ErrUnavailable), fmt.Errorf("h2: %w", broker.ErrUnauthorized))), false},
	}
	for _, c := range cases {
		if got := broker.IsRetryable(c.err); got != c.want {
			t.Errorf("IsRetryable(%v) = %v, want %v", c.err, got, c.want)
		}
	}
	if driver.MarkRetryable(nil) != nil || driver.MarkFatal(nil) != nil {
		t.Error("marking nil must give nil")
	}
	marked := driver.MarkFatal(broker.ErrNotFound)
	if !errors.Is(marked, broker.ErrNotFound) || marked.Error() != broker.ErrNotFound.Error() {
		t.Errorf("marking changed the error: %v", marked)
	}
}
