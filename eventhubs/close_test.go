package eventhubs_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/eventhubs"
	"github.com/isobroker/broker/eventhubs/emulator"
)

// TestOpenStalledPeer: a server that accepts and never answers cannot
// hold Open past its ctx, and nothing is left running.
func TestOpenStalledPeer(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c) // never answers
		}
	}()
	cs := fmt.Sprintf("Endpoint=sb://%s/;SharedAccessKeyName=k;SharedAccessKey=a2V5;UseDevelopmentEmulator=true", ln.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = eventhubs.OpenURL(ctx, cs)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Open against a stalled peer = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Open took %v with a 300 ms ctx", d)
	}
	_ = ln.Close()
	<-accepted
	for _, c := range held {
		_ = c.Close()
	}
	goleak.VerifyNone(t, ignore)
}

// TestCloseWithPendingDispositions: Close waits for a publish whose
// dispositions are slow until its ctx ends, then tears down; the publish
// returns ErrClosed, Close an error wrapping DeadlineExceeded.
func TestCloseWithPendingDispositions(t *testing.T) {
	e := startEmulator(t, emulator.Config{})
	hub := newHub(t, e, 1)
	b := open(t, e, nil)
	if err := b.Publish(ctxT(t, 5*time.Second), hub, &broker.Message{ID: "warm"}); err != nil {
		t.Fatal(err)
	}
	e.Faults().DelayDispositions(5 * time.Second)
	defer e.Faults().DelayDispositions(0)
	res := make(chan error, 1)
	go func() { res <- b.Publish(context.Background(), hub, &broker.Message{ID: "slow"}) }()
	time.Sleep(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := b.Close(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %v with a 200 ms ctx", d)
	}
	select {
	case err := <-res:
		if !errors.Is(err, broker.ErrClosed) {
			t.Errorf("pending publish = %v, want ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("pending publish still blocked after Close")
	}
	if b.State() != broker.StateClosed {
		t.Errorf("state %v", b.State())
	}
}
