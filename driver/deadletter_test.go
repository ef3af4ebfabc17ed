package driver

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/isobroker/broker"
)

func TestPoisonOptionsValidated(t *testing.T) {
	bad := map[string][]broker.SubscribeOption{
		"negative max deliveries": {broker.MaxDeliveries(-1)},
		"negative delay":          {broker.RedeliveryDelay(-time.Second)},
		"max below initial":       {broker.RedeliveryBackoff(broker.Backoff{Initial: time.Second, Max: time.Millisecond})},
		"max without initial":     {broker.RedeliveryBackoff(broker.Backoff{Max: time.Second})},
	}
	for name, opts := range bad {
		if _, err := NewSubscribeConfig(opts...); !errors.Is(err, broker.ErrInvalidOption) {
			t.Errorf("%s: err = %v, want ErrInvalidOption", name, err)
		}
	}
	c, err := NewSubscribeConfig(broker.UnlimitedDeliveries())
	if err != nil || MaxDeliveriesOr(c) != 0 {
		t.Errorf("UnlimitedDeliveries: %v, limit %d, want no limit (0)", err, MaxDeliveriesOr(c))
	}
	c, _ = NewSubscribeConfig()
	if MaxDeliveriesOr(c) != broker.DefaultMaxDeliveries || DeadLetterTopicOf("t", c) != "t.dead-letter" {
		t.Errorf("defaults: limit %d, topic %q", MaxDeliveriesOr(c), DeadLetterTopicOf("t", c))
	}
}

func TestCheckSupported(t *testing.T) {
	none := broker.Capabilities{}
	all := broker.Capabilities{Replay: true, DeadLetter: true, RedeliveryDelay: true}
	cases := []struct {
		opt  broker.SubscribeOption
		caps broker.Capabilities
		want error
	}{
		{broker.MaxDeliveries(3), none, broker.ErrUnsupported},
		{broker.UnlimitedDeliveries(), none, broker.ErrUnsupported},
		{broker.DeadLetterTo("x"), none, broker.ErrUnsupported},
		{broker.RedeliveryDelay(time.Second), none, broker.ErrUnsupported},
		{broker.StartAt(broker.Earliest()), none, broker.ErrUnsupported},
		{broker.DeadLetterTo("t"), all, broker.ErrInvalidOption}, // its own topic
		{broker.MaxDeliveries(3), all, nil},
		{broker.RedeliveryDelay(time.Second), all, nil},
		{broker.Group("g"), none, nil},
	}
	for i, c := range cases {
		cfg, err := NewSubscribeConfig(c.opt)
		if err != nil {
			t.Fatal(err)
		}
		err = checkSupported("t", cfg, c.caps)
		if (c.want == nil) != (err == nil) || (c.want != nil && !errors.Is(err, c.want)) {
			t.Errorf("case %d: checkSupported = %v, want %v", i, err, c.want)
		}
	}
}

func TestDeadLetterMessage(t *testing.T) {
	d := &broker.Delivery{Group: "g", Message: &broker.Message{ID: "i", Key: "k", Body: []byte("b"),
		ContentType: "text/plain", Headers: map[string]string{"h": "v"}}}
	long := "Endpoint=sb://ns/;SharedAccessKeyName=n;SharedAccessKey=topsecret; " + strings.Repeat("é", 600)
	m := DeadLetter(d, "orders", "g", 5, errors.New(long))
	if m.ID != "i" || m.Key != "k" || string(m.Body) != "b" || m.ContentType != "text/plain" || m.Headers["h"] != "v" {
		t.Errorf("dead-letter message lost a field: %+v", m)
	}
	if m.Headers[broker.HeaderOriginalTopic] != "orders" || m.Headers[broker.HeaderOriginalGroup] != "g" || m.Headers[broker.HeaderDeliveryCount] != "5" {
		t.Errorf("dead-letter headers: %v", m.Headers)
	}
	last := m.Headers[broker.HeaderLastError]
	if strings.Contains(last, "topsecret") || len(last) > broker.MaxLastErrorBytes || !utf8.ValidString(last) {
		t.Errorf("last error %d bytes, valid UTF-8 %t, shows the key %t", len(last), utf8.ValidString(last), strings.Contains(last, "topsecret"))
	}
	m.Body[0], m.Headers["h"] = 'X', "changed"
	if string(d.Body) != "b" || d.Headers["h"] != "v" {
		t.Error("the dead-letter message shares Body or Headers with the delivery")
	}
}

func TestRedeliveryDelayOf(t *testing.T) {
	fixed, _ := NewSubscribeConfig(broker.RedeliveryDelay(300 * time.Millisecond))
	for n := 1; n < 5; n++ {
		if d := RedeliveryDelayOf(fixed, n); d != 300*time.Millisecond {
			t.Errorf("fixed delay, redelivery %d: %v", n, d)
		}
	}
	grow, _ := NewSubscribeConfig(broker.RedeliveryBackoff(broker.Backoff{Initial: 100 * time.Millisecond, Max: time.Second}))
	if d := RedeliveryDelayOf(grow, 4); d < 400*time.Millisecond || d > 800*time.Millisecond {
		t.Errorf("backoff, redelivery 4: %v, want in [400ms, 800ms]", d)
	}
	none, _ := NewSubscribeConfig()
	if d := RedeliveryDelayOf(none, 3); d != 0 {
		t.Errorf("no option: %v", d)
	}
}
