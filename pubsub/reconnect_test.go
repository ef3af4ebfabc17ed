package pubsub_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/isobroker/broker/pubsub"
	"github.com/isobroker/broker/rabbit"
)

// TestWatermillReconnect is Watermill's reconnect scenario through our
// Watermill backend on RabbitMQ, written without the data race of the
// suite's own copy: 100 publishers send 10,000 messages (3,000 unless
// ISOBROKER_LONG is set) while the RabbitMQ node restarts twice, at 1/3
// and 1/2 of the messages: the server process stops gracefully, dropping
// every connection, and starts again on the same ports and data, as
// Watermill's RestartServiceCommand restarts a broker's container. Every
// message Publish confirmed must be received (duplicates allowed:
// at-least-once).
func TestWatermillReconnect(t *testing.T) {
	if os.Getenv("RABBITMQ_URL") != "" {
		t.Skip("RABBITMQ_URL points at a server this test cannot restart")
	}
	messages, publishers := 10000, 100
	if !long() {
		messages = 3000
	}
	node := sharedRabbit.Node(t)
	quiet := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	b, err := rabbit.OpenURL(ctx, node.URL(), rabbit.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := pubsub.NewPublisher(b, pubsub.CloseBroker())
	sub, _ := pubsub.NewSubscriber(b, "reconnect")
	defer pub.Close()
	defer sub.Close()
	topic := fmt.Sprintf("reconnect-%d", time.Now().UnixNano())
	if err := sub.SubscribeInitialize(topic); err != nil {
		t.Fatal(err)
	}
	ch, err := sub.Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}

	var restarts sync.WaitGroup
	var oneAtATime sync.Mutex // a second restart waits for the first
	next := make(chan int)
	go func() {
		defer close(next)
		for i := range messages {
			if i == messages/3 || i == messages/2 {
				restarts.Go(func() {
					oneAtATime.Lock()
					defer oneAtATime.Unlock()
					begin := time.Now()
					if err := node.Restart(ctx); err != nil {
						t.Errorf("restart node: %v", err)
						return
					}
					t.Logf("node restarted in %v", time.Since(begin).Round(time.Millisecond))
				})
			}
			select {
			case next <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	var mu sync.Mutex
	confirmed := make(map[string]bool, messages)
	var pubs sync.WaitGroup
	for range publishers {
		pubs.Go(func() {
			for i := range next {
				m := message.NewMessage(fmt.Sprintf("m-%d", i), []byte("x"))
				// Publish blocks through the restart (the adapter
				// resends until the node confirms); retry only if it
				// gives up.
				for ctx.Err() == nil {
					if err := pub.Publish(topic, m); err == nil {
						mu.Lock()
						confirmed[m.UUID] = true
						mu.Unlock()
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
		})
	}

	received := make(map[string]int, messages)
	for len(received) < messages {
		select {
		case m := <-ch:
			received[m.UUID]++
			m.Ack()
		case <-ctx.Done():
			t.Fatalf("received %d of %d messages before the deadline", len(received), messages)
		}
	}
	pubs.Wait()
	restarts.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(confirmed) != messages {
		t.Fatalf("%d of %d publishes confirmed", len(confirmed), messages)
	}
	for id := range confirmed {
		if received[id] == 0 {
			t.Errorf("confirmed message %s never received", id)
		}
	}
	dups := 0
	for _, n := range received {
		dups += n - 1
	}
	t.Logf("%d messages through two restarts, %d duplicates", messages, dups)
}
