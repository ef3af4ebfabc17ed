// Package frontdoor_test tries bad input at every public entry point —
// the adapters' Open forms, the registry, Publish, Subscribe and its
// options, the Watermill constructors and the emulator's configuration —
// and holds each to the contract: an error that names the problem, wraps
// the right sentinel, is not retryable, comes before anything is sent, and
// no panic. Run it with -v to print the table of inputs and errors.
package frontdoor_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/eventhubs"
	"github.com/isobroker/broker/eventhubs/emulator"
	"github.com/isobroker/broker/pubsub"
	"github.com/isobroker/broker/rabbit"
	"github.com/isobroker/broker/registry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// badCase is one bad input and what its error must say.
type badCase struct {
	entry string       // the entry point and its input, for the table
	call  func() error // makes the call
	is    error        // the sentinel the error must wrap
	names string       // a piece of text that names the problem
}

func check(t *testing.T, cases []badCase) {
	t.Helper()
	for _, c := range cases {
		var err error
		func() {
			defer func() {
				if r := recover(); r != nil {
					err = fmt.Errorf("PANIC: %v", r)
				}
			}()
			err = c.call()
		}()
		t.Logf("| %s | %v |", c.entry, err)
		switch {
		case err == nil:
			t.Errorf("%s: no error", c.entry)
		case strings.HasPrefix(err.Error(), "PANIC"):
			t.Errorf("%s: %v", c.entry, err)
		case !errors.Is(err, c.is):
			t.Errorf("%s: %v does not wrap %v", c.entry, err, c.is)
		case broker.IsRetryable(err):
			t.Errorf("%s: %v is retryable", c.entry, err)
		case !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(c.names)):
			t.Errorf("%s: %v does not name %q", c.entry, err, c.names)
		}
	}
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestOpenForms(t *testing.T) {
	ctx := ctxFor(t, 10*time.Second)
	reg := registry.New(registry.WithLogger(quiet()))
	openReg := func(target string) func() error {
		return func() error {
			b, err := reg.Open(ctx, target)
			if err == nil {
				_ = b.Close(ctx)
			}
			return err
		}
	}
	openRabbit := func(url string, opts ...rabbit.Option) func() error {
		return func() error {
			b, err := rabbit.OpenURL(ctx, url, append([]rabbit.Option{rabbit.WithLogger(quiet())}, opts...)...)
			if err == nil {
				_ = b.Close(ctx)
			}
			return err
		}
	}
	openEH := func(cs string) func() error {
		return func() error {
			b, err := eventhubs.OpenURL(ctx, cs, eventhubs.WithLogger(quiet()))
			if err == nil {
				_ = b.Close(ctx)
			}
			return err
		}
	}
	openEHConfig := func(c eventhubs.Config) func() error {
		return func() error {
			c.Logger = quiet()
			b, err := eventhubs.Open(ctx, c)
			if err == nil {
				_ = b.Close(ctx)
			}
			return err
		}
	}
	key := eventhubs.Config{Namespace: "ns.example", KeyName: "k", Key: "c2VjcmV0"}
	with := func(f func(*eventhubs.Config)) eventhubs.Config { c := key; f(&c); return c }
	check(t, []badCase{
		{"registry.Open(\"\")", openReg(""), broker.ErrInvalidOption, "empty"},
		{"registry.Open(\"guest:***@127.0.0.1:5672\") (scheme forgotten)", openReg("guest:PASSWORD@127.0.0.1:5672"), broker.ErrInvalidOption, "neither a URL"},
		{"registry.Open(\"b@d scheme://h\")", openReg("b@d scheme://h"), broker.ErrInvalidOption, "bad scheme"},
		{"registry.Open(\"nope://h\")", openReg("nope://h"), registry.ErrUnknownScheme, "nope"},
		{"registry.Open(\"mem://host/path\")", openReg("mem://host/path"), broker.ErrInvalidOption, "path"},
		{"rabbit.OpenURL(\"http://h/\")", openRabbit("http://h/"), broker.ErrInvalidOption, "must start with amqp"},
		{"rabbit.OpenURL(\"amqp://u:***@h/\") ('/' in the password)", openRabbit("amqp://u:pa/ss@h/"), broker.ErrInvalidOption, "percent-encode"},
		{"rabbit.OpenURL(\"amqp://h:99999/\")", openRabbit("amqp://h:99999/"), broker.ErrInvalidOption, "port"},
		{"rabbit.OpenURL(\"amqp://h1,,h2/\")", openRabbit("amqp://h1,,h2/"), broker.ErrInvalidOption, "empty host"},
		{"rabbit.OpenURL(\"amqp://h/?heartbeat=soon\")", openRabbit("amqp://h/?heartbeat=soon"), broker.ErrInvalidOption, "heartbeat"},
		{"rabbit.OpenURL(\"amqps://h/?cacertfile=/nonexistent\")", openRabbit("amqps://h/?cacertfile=/nonexistent"), broker.ErrInvalidOption, "cacertfile"},
		{"rabbit.Open(Config{})", func() error { _, err := rabbit.Open(ctx, rabbit.Config{}); return err }, broker.ErrInvalidOption, "no URL"},
		{"rabbit.Opener(\"amqp://u:***@h/?heartbeat=soon\")", func() error {
			_, err := rabbit.Opener(ctx, "amqp://u:secret@h/?heartbeat=soon", registry.OpenConfig{Logger: quiet()})
			return err
		}, broker.ErrInvalidOption, "heartbeat"},
		{"rabbit.OpenURL(…, WithDialTimeout(-1s))", openRabbit("amqp://h/", rabbit.WithDialTimeout(-time.Second)), broker.ErrInvalidOption, "DialTimeout"},
		{"rabbit.OpenURL(…, WithMaxMessageSize(-1))", openRabbit("amqp://h/", rabbit.WithMaxMessageSize(-1)), broker.ErrInvalidOption, "MaxMessageSize"},
		{"rabbit.OpenURL(…, WithBackoff({Initial: -1s}))", openRabbit("amqp://h/", rabbit.WithBackoff(broker.Backoff{Initial: -time.Second})), broker.ErrInvalidOption, "Backoff.Initial"},
		{"rabbit.OpenURL(…, WithBackoff({Initial: 1m, Max: 1s}))", openRabbit("amqp://h/", rabbit.WithBackoff(broker.Backoff{Initial: time.Minute, Max: time.Second})), broker.ErrInvalidOption, "Backoff.Max"},
		{"eventhubs.OpenURL(\"\")", openEH(""), broker.ErrInvalidOption, "Endpoint"},
		{"eventhubs.OpenURL(\"Endpoint=sb://ns/\") (no key)", openEH("Endpoint=sb://ns/"), broker.ErrInvalidOption, "SharedAccessKeyName"},
		{"eventhubs.OpenURL(\"Endpoint=%zz;…\")", openEH("Endpoint=%zz;SharedAccessKeyName=k;SharedAccessKey=x"), broker.ErrInvalidOption, "not a URL"},
		{"eventhubs.OpenURL(\"…;UseDevelopmentEmulator=maybe\")", openEH("Endpoint=sb://ns/;SharedAccessKeyName=k;SharedAccessKey=x;UseDevelopmentEmulator=maybe"), broker.ErrInvalidOption, "UseDevelopmentEmulator"},
		{"eventhubs.OpenURL(\"k=v;garbage\")", openEH("Endpoint=sb://ns/;garbage"), broker.ErrInvalidOption, "no '='"},
		{"eventhubs.Opener(\"eventhubs://k:***@ns/a/b\")", func() error {
			_, err := eventhubs.Opener(ctx, "eventhubs://k:secret@ns/a/b", registry.OpenConfig{Logger: quiet()})
			return err
		}, broker.ErrInvalidOption, "more than one event hub"},
		{"eventhubs.OpenURL(\"eventhubs://k:***@ns/h?reconnect=sometimes\")", openEH("eventhubs://k:secret@ns/h?reconnect=sometimes"), broker.ErrInvalidOption, "reconnect"},
		{"eventhubs.Open(Config{Namespace: \"a/b\"})", openEHConfig(with(func(c *eventhubs.Config) { c.Namespace = "a/b" })), broker.ErrInvalidOption, "Namespace"},
		{"eventhubs.Open(Config{no credentials})", openEHConfig(eventhubs.Config{Namespace: "ns"}), broker.ErrInvalidOption, "no credentials"},
		{"eventhubs.Open(Config{SharedAccessSignature: \"sig\"})", openEHConfig(eventhubs.Config{Namespace: "ns", SharedAccessSignature: "sig"}), broker.ErrInvalidOption, "SharedAccessSignature"},
		{"eventhubs.Open(Config{TokenTTL: 1ms})", openEHConfig(with(func(c *eventhubs.Config) { c.TokenTTL = time.Millisecond })), broker.ErrInvalidOption, "TokenTTL"},
		{"eventhubs.Open(Config{MaxMessageSize: -1})", openEHConfig(with(func(c *eventhubs.Config) { c.MaxMessageSize = -1 })), broker.ErrInvalidOption, "MaxMessageSize"},
		{"eventhubs.Open(Config{CustomEndpoint: \"https://x/\"})", openEHConfig(with(func(c *eventhubs.Config) { c.CustomEndpoint = "https://x/" })), broker.ErrInvalidOption, "CustomEndpoint"},
		{"eventhubs.Open(Config{DialTimeout: -1s})", openEHConfig(with(func(c *eventhubs.Config) { c.DialTimeout = -time.Second })), broker.ErrInvalidOption, "DialTimeout"},
		{"eventhubs.Open(Config{Backoff: {Max: -1s}})", openEHConfig(with(func(c *eventhubs.Config) { c.Backoff.Max = -time.Second })), broker.ErrInvalidOption, "Backoff.Max"},
		{"eventhubs.Open(Config{Backoff: {Initial: 1m, Max: 1s}})", openEHConfig(with(func(c *eventhubs.Config) { c.Backoff = broker.Backoff{Initial: time.Minute, Max: time.Second} })), broker.ErrInvalidOption, "Backoff.Max"},
		{"pubsub.NewPublisher(nil)", func() error { _, err := pubsub.NewPublisher(nil); return err }, broker.ErrInvalidOption, "nil broker"},
		{"pubsub.NewSubscriber(nil, \"g\")", func() error { _, err := pubsub.NewSubscriber(nil, "g"); return err }, broker.ErrInvalidOption, "nil broker"},
		{"emulator.New{MaxFrameSize: 10}", func() error { _, err := emulator.New(emulator.Config{MaxFrameSize: 10}); return err }, emulator.ErrInvalidConfig, "MaxFrameSize"},
		{"emulator.New{Hubs: [{Name: \"a/b\"}]}", func() error {
			_, err := emulator.New(emulator.Config{Hubs: []emulator.HubConfig{{Name: "a/b", Partitions: 1}}})
			return err
		}, emulator.ErrInvalidConfig, "a/b"},
		{"emulator.New{Hubs: [{Name: \"h\", Partitions: -1}]}", func() error {
			_, err := emulator.New(emulator.Config{Hubs: []emulator.HubConfig{{Name: "h", Partitions: -1}}})
			return err
		}, emulator.ErrInvalidConfig, "partitions"},
	})
}

// brokers returns the brokers whose Publish and Subscribe take bad input
// here: mem (through the registry) and eventhubs on an in-process
// emulator, each with a topic that exists.
func brokers(t *testing.T) map[string]struct {
	b     broker.Broker
	topic string
} {
	ctx := ctxFor(t, 20*time.Second)
	memB, err := registry.New(registry.WithLogger(quiet())).Open(ctx, "mem://")
	if err != nil {
		t.Fatal(err)
	}
	e, err := emulator.New(emulator.Config{Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.AddHub("hub", 2); err != nil {
		t.Fatal(err)
	}
	ehB, err := eventhubs.OpenURL(ctx, e.ConnectionString(""), eventhubs.WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = memB.Close(ctx)
		_ = ehB.Close(ctx)
		_ = e.Close(ctx)
	})
	return map[string]struct {
		b     broker.Broker
		topic string
	}{"mem": {memB, "topic"}, "eventhubs": {ehB, "hub"}}
}

func TestPublishAndSubscribe(t *testing.T) {
	for name, x := range brokers(t) {
		t.Run(name, func(t *testing.T) {
			ctx := ctxFor(t, 20*time.Second)
			b, topic := x.b, x.topic
			got := make(chan string, 16)
			h := func(_ context.Context, d *broker.Delivery) error { got <- d.ID; return nil }
			sub, err := b.Subscribe(ctx, topic, h)
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close(ctx)
			good := &broker.Message{ID: "good"}
			pub := func(topic string, msgs ...*broker.Message) func() error {
				return func() error { return b.Publish(ctx, topic, msgs...) }
			}
			subscribe := func(topic string, h broker.Handler, opts ...broker.SubscribeOption) func() error {
				return func() error {
					s, err := b.Subscribe(ctx, topic, h, opts...)
					if err == nil {
						_ = s.Close(ctx)
					}
					return err
				}
			}
			huge := &broker.Message{ID: "huge", Body: make([]byte, b.Capabilities().MaxMessageSize+1)}
			cases := []badCase{
				{name + ".Publish(\"\", m)", pub("", good), broker.ErrTopicRequired, "topic"},
				{name + ".Publish(t, good, nil)", pub(topic, good, nil), broker.ErrNilMessage, "message 1"},
				{name + ".Publish(t, good, body over MaxMessageSize)", pub(topic, good, huge), broker.ErrMessageTooLarge, "message 1"},
				{name + ".Subscribe(\"\", h)", subscribe("", h), broker.ErrTopicRequired, "topic"},
				{name + ".Subscribe(t, nil)", subscribe(topic, nil), broker.ErrNilHandler, "handler"},
				{name + ".Subscribe(t, h, Concurrency(-1))", subscribe(topic, h, broker.Concurrency(-1)), broker.ErrInvalidOption, "concurrency"},
				{name + ".Subscribe(t, h, Prefetch(-1))", subscribe(topic, h, broker.Prefetch(-1)), broker.ErrInvalidOption, "prefetch"},
				{name + ".Subscribe(t, h, StartAt(AtOffset(\"\")))", subscribe(topic, h, broker.StartAt(broker.AtOffset("", false))), broker.ErrInvalidOption, "offset"},
				{name + ".Subscribe(t, h, WithDriverOption(\"junk\"))", subscribe(topic, h, broker.WithDriverOption("junk")), broker.ErrInvalidOption, "string"},
			}
			if name == "eventhubs" {
				cases = append(cases,
					badCase{"eventhubs.Publish(t, m with Key and partition header)", pub(topic, &broker.Message{ID: "kp", Key: "k", Headers: map[string]string{eventhubs.PartitionIDHeader: "0"}}), broker.ErrInvalidOption, "both a Key"},
					badCase{"eventhubs.Publish(\"no-such-hub\", m)", pub("no-such-hub", good), broker.ErrNotFound, "no-such-hub"},
					badCase{"eventhubs.Subscribe(t, h, Partitions(\"7\"))", subscribe(topic, h, broker.WithDriverOption(eventhubs.Partitions{"7"})), broker.ErrNotFound, "partition \"7\""},
				)
			}
			check(t, cases)
			// Nothing of a refused call was sent: only the marker arrives.
			if err := b.Publish(ctx, topic, &broker.Message{ID: "marker"}); err != nil {
				t.Fatal(err)
			}
			select {
			case id := <-got:
				if id != "marker" {
					t.Errorf("a refused call sent %q", id)
				}
			case <-ctx.Done():
				t.Fatal("marker not received")
			}
		})
	}
}
