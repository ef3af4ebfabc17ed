package rabbit_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/brokertest"
	"github.com/isobroker/broker/internal/secrettest"
	"github.com/isobroker/broker/rabbit"
)

// TestUnroutable: by default publishes are mandatory, so a message no
// queue is bound for fails with ErrUnroutable (retryable), and succeeds
// once a subscription binds a queue; with AllowUnroutable it is accepted.
func TestUnroutable(t *testing.T) {
	url := shared.URL(t)
	leakCheck(t)
	b := open(t, url)
	topic := brokertest.RandomName("unroutable")
	ctx := ctxFor(t, 20*time.Second)

	err := b.Publish(ctx, topic, &broker.Message{ID: "nobody-listens", Key: "k"}, &broker.Message{ID: "second"})
	if !errors.Is(err, broker.ErrUnroutable) {
		t.Fatalf("publish with no queue bound = %v, want ErrUnroutable", err)
	}
	if !broker.IsRetryable(err) {
		t.Errorf("ErrUnroutable not retryable: %v", err)
	}
	if !strings.Contains(err.Error(), "nobody-listens") || !strings.Contains(err.Error(), "NO_ROUTE") {
		t.Errorf("error does not name the message and the reason: %v", err)
	}

	got := make(chan *broker.Delivery, 10)
	sub, err := b.Subscribe(ctx, topic, func(_ context.Context, d *broker.Delivery) error { got <- d; return nil },
		broker.Group("g"), broker.WithDriverOption(rabbit.BindingKeys{"only.*"}))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(context.Background())
	// Bound with "only.*": "other" does not match, "only.this" does.
	if err := b.Publish(ctx, topic, &broker.Message{ID: "x", Key: "other"}); !errors.Is(err, broker.ErrUnroutable) {
		t.Errorf("publish with a non-matching key = %v, want ErrUnroutable", err)
	}
	if err := b.Publish(ctx, topic, &broker.Message{ID: "y", Key: "only.this"}); err != nil {
		t.Fatalf("publish with a matching key: %v", err)
	}
	select {
	case d := <-got:
		if d.ID != "y" || d.Key != "only.this" || d.Group != "g" {
			t.Errorf("delivered %+v", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("not delivered")
	}

	lax := open(t, url, rabbit.WithConfig(func(c *rabbit.Config) { c.AllowUnroutable = true }))
	if err := lax.Publish(ctx, brokertest.RandomName("void"), &broker.Message{ID: "dropped"}); err != nil {
		t.Errorf("AllowUnroutable publish = %v, want nil", err)
	}
}

// TestTwoBrokersTwoConnections: two brokers from the same URL are two TCP
// connections on the server, and closing one leaves the other's working.
func TestTwoBrokersTwoConnections(t *testing.T) {
	node := shared.Node(t)
	url := node.URL()
	leakCheck(t)
	tag := brokertest.RandomName("conncount")
	ctx := ctxFor(t, 60*time.Second)
	a := open(t, url, rabbit.WithName(tag+"-a"))
	b := open(t, url, rabbit.WithName(tag+"-b"))
	topic := brokertest.RandomName("t")
	var n atomic.Int64
	if _, err := a.Subscribe(ctx, topic, func(context.Context, *broker.Delivery) error { n.Add(1); return nil }); err != nil {
		t.Fatal(err)
	}
	for _, x := range []*rabbit.Broker{a, b} {
		if err := x.Publish(ctx, topic, &broker.Message{ID: "hi"}); err != nil {
			t.Fatal(err)
		}
	}
	count := func() map[string]int {
		out, err := node.Ctl(ctx, "list_connections", "client_properties")
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]int{}
		for _, line := range strings.Split(out, "\n") {
			for _, who := range []string{tag + "-a (publish)", tag + "-a (consume)", tag + "-b (publish)", tag + "-b (consume)"} {
				if strings.Contains(line, who) {
					m[who]++
				}
			}
		}
		return m
	}
	got := count()
	want := map[string]int{tag + "-a (publish)": 1, tag + "-a (consume)": 1, tag + "-b (publish)": 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("server-side connections = %v, want %v", got, want)
	}
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Publish(ctx, topic, &broker.Message{ID: "still"}); err != nil {
		t.Fatalf("publish on A after closing B: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got = count()
		if got[tag+"-b (publish)"] == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	want = map[string]int{tag + "-a (publish)": 1, tag + "-a (consume)": 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("after closing B: server-side connections = %v, want %v", got, want)
	}
}

// TestBadInput: each bad input gets a clear, correctly classified error
// that never contains the password, and nothing is left running.
func TestBadInput(t *testing.T) {
	url := shared.URL(t)
	leakCheck(t)
	const secret = "s3cr3t-P4ssw0rd"
	logs := &logBuffer{}
	host := strings.TrimSuffix(strings.TrimPrefix(url, "amqp://guest:guest@"), "/")
	ctx := ctxFor(t, 60*time.Second)

	cases := []struct {
		name, url string
		want      error
		retryable bool
	}{
		{"scheme", "http://guest:" + secret + "@" + host + "/", broker.ErrInvalidOption, false},
		{"port", "amqp://guest:" + secret + "@127.0.0.1:notaport/", broker.ErrInvalidOption, false},
		{"no host", "amqp://guest:" + secret + "@/", broker.ErrInvalidOption, false},
		{"empty host in list", "amqp://guest:" + secret + "@" + host + ",/", broker.ErrInvalidOption, false},
		{"empty", "", broker.ErrInvalidOption, false},
		{"bad tls file", "amqps://guest:" + secret + "@" + host + "/?cacertfile=/nonexistent.pem", broker.ErrInvalidOption, false},
		{"wrong password", "amqp://guest:" + secret + "@" + host + "/", broker.ErrUnauthorized, false},
		{"unknown user", "amqp://nobody:" + secret + "@" + host + "/", broker.ErrUnauthorized, false},
		{"unknown vhost", "amqp://guest:guest@" + host + "/no-such-vhost", broker.ErrNotFound, false},
		{"unreachable", "amqp://guest:" + secret + "@127.0.0.1:1/", broker.ErrUnavailable, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			begin := time.Now()
			b, err := rabbit.OpenURL(ctx, tc.url, rabbit.WithLogger(logs.logger()), rabbit.WithName("bad"))
			if err == nil {
				_ = b.Close(ctx)
				t.Fatalf("open succeeded")
			}
			t.Logf("%v → %v (%v)", tc.name, err, time.Since(begin).Round(time.Millisecond))
			if !errors.Is(err, tc.want) {
				t.Errorf("error %v does not wrap %v", err, tc.want)
			}
			if broker.IsRetryable(err) != tc.retryable {
				t.Errorf("IsRetryable = %v, want %v", broker.IsRetryable(err), tc.retryable)
			}
			if strings.Contains(err.Error(), secret) || strings.Contains(fmt.Sprintf("%+v", err), secret) {
				t.Errorf("error leaks the secret: %v", err)
			}
		})
	}

	// Publish-side bad input on a working broker.
	b := open(t, url, rabbit.WithLogger(logs.logger()), rabbit.WithConfig(func(c *rabbit.Config) { c.MaxMessageSize = 1024 }))
	if err := b.Publish(ctx, "", &broker.Message{}); !errors.Is(err, broker.ErrTopicRequired) {
		t.Errorf("empty topic = %v", err)
	}
	if _, err := b.Subscribe(ctx, "", func(context.Context, *broker.Delivery) error { return nil }); !errors.Is(err, broker.ErrTopicRequired) {
		t.Errorf("subscribe empty topic = %v", err)
	}
	err := b.Publish(ctx, "t", &broker.Message{Body: make([]byte, 1025)})
	if !errors.Is(err, broker.ErrMessageTooLarge) || broker.IsRetryable(err) {
		t.Errorf("oversize = %v (retryable %v)", err, broker.IsRetryable(err))
	}
	if _, err := b.Subscribe(ctx, "t", func(context.Context, *broker.Delivery) error { return nil },
		broker.StartAt(broker.Earliest())); !errors.Is(err, broker.ErrUnsupported) {
		t.Errorf("StartAt(Earliest) = %v, want ErrUnsupported", err)
	}
	if _, err := b.Subscribe(ctx, "t", func(context.Context, *broker.Delivery) error { return nil },
		broker.WithDriverOption(rabbit.QueueName("q"))); !errors.Is(err, broker.ErrInvalidOption) {
		t.Errorf("QueueName without group = %v, want ErrInvalidOption", err)
	}
	if s := fmt.Sprint(b); strings.Contains(s, "guest:guest") {
		t.Errorf("String() leaks the password: %s", s)
	}
	if strings.Contains(logs.String(), secret) {
		t.Errorf("logs leak the secret:\n%s", logs.String())
	}
}

// TestSecretsRedacted: a broker's logs, String and errors show the URL
// with the password replaced.
func TestSecretsRedacted(t *testing.T) {
	node := shared.Node(t)
	leakCheck(t)
	ctx := ctxFor(t, 30*time.Second)
	const user, secret = "secretive", "pa55-w0rd-xyz"
	if _, err := node.Ctl(ctx, "add_user", user, secret); err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
	if _, err := node.Ctl(ctx, "set_permissions", user, ".*", ".*", ".*"); err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	url := fmt.Sprintf("amqp://%s:%s@127.0.0.1:%d/", user, secret, node.Port())
	b, err := rabbit.OpenURL(ctx, url, rabbit.WithLogger(logs.logger()), rabbit.WithName("redact"))
	if err != nil {
		t.Fatal(err)
	}
	topic := brokertest.RandomName("r")
	got := make(chan struct{}, 1)
	if _, err := b.Subscribe(ctx, topic, func(context.Context, *broker.Delivery) error { got <- struct{}{}; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, topic, &broker.Message{ID: "1"}); err != nil {
		t.Fatal(err)
	}
	<-got
	text := fmt.Sprintf("%v %+v %s", b, b, b.String())
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	text += logs.String()
	if strings.Contains(text, secret) {
		t.Fatalf("secret leaked:\n%s", text)
	}
	if leak, ok := secrettest.Leak(secret, b); ok {
		t.Fatalf("a rendering of the Broker shows the secret: %.300s", leak)
	}
	if !strings.Contains(logs.String(), user+":***@") {
		t.Errorf("logs do not show the redacted URL:\n%s", logs.String())
	}
}

// TestHandlerPanicRedelivers: a panicking handler nacks; the message comes
// back marked redelivered, and the subscription keeps running.
func TestHandlerPanicRedelivers(t *testing.T) {
	url := shared.URL(t)
	leakCheck(t)
	b := open(t, url)
	ctx := ctxFor(t, 30*time.Second)
	topic := brokertest.RandomName("panic")
	var calls atomic.Int64
	got := make(chan *broker.Delivery, 1)
	if _, err := b.Subscribe(ctx, topic, func(_ context.Context, d *broker.Delivery) error {
		if calls.Add(1) == 1 {
			panic("boom")
		}
		got <- d
		return nil
	}, broker.Group("g")); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, topic, &broker.Message{ID: "p", Headers: map[string]string{"a": "b"}, ContentType: "text/plain"}); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-got:
		if !d.Metadata.Redelivered || d.Headers["a"] != "b" || d.ContentType != "text/plain" || d.Metadata.Topic != topic {
			t.Errorf("redelivery = %+v / %+v", d.Message, d.Metadata)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("not redelivered after a panic")
	}
}
