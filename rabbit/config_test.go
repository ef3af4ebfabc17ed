package rabbit

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/isobroker/broker"
)

func TestResolveHosts(t *testing.T) {
	r, err := Config{URLs: []string{
		"amqp://user:p%40ss@h1:5673,h2,h3:5675/vh?heartbeat=5",
		"amqps://other:pw2@h4/",
	}}.resolve()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"amqp://user:***@h1:5673/vh",
		"amqp://user:***@h2:5672/vh",
		"amqp://user:***@h3:5675/vh",
		"amqps://other:***@h4:5671/",
	}
	if len(r.endpoints) != len(want) {
		t.Fatalf("%d endpoints, want %d", len(r.endpoints), len(want))
	}
	for i, ep := range r.endpoints {
		if ep.redacted != want[i] {
			t.Errorf("endpoint %d = %s, want %s", i, ep.redacted, want[i])
		}
	}
	if got := r.endpoints[1].uri; got.Password != "p@ss" || got.Vhost != "vh" || got.Username != "user" {
		t.Errorf("endpoint 1 parsed as %+v", got)
	}
	if r.endpoints[3].tls == nil || r.endpoints[3].tls.ServerName != "h4" {
		t.Errorf("amqps endpoint has TLS %+v", r.endpoints[3].tls)
	}
	if r.endpoints[0].tls != nil {
		t.Errorf("amqp endpoint has TLS")
	}
	if r.PublishChannels != DefaultPublishChannels || r.MaxMessageSize != DefaultMaxMessageSize {
		t.Errorf("defaults not applied: %+v", r.Config)
	}
}

func TestResolveErrors(t *testing.T) {
	for _, u := range []string{
		"", "amqp://", "amqp://u:secretpw@", "tcp://u:secretpw@h/", "amqp://u:secretpw@h:99999999/",
		"amqp://u:secretpw@h1,,h2/", "amqp://u:secret pw@h/", "amqps://u:secretpw@h/?certfile=/nonexistent&keyfile=/nonexistent",
		// A password holding an unescaped '/', '?' or '#' (issue 15): the
		// '@' then sits past the authority, and the URL is ambiguous.
		"amqp://u:secret/pw@h/", "amqp://u:1234/secretpw@h/", "amqp://u:secret?pw@h/", "amqp://u:secret#pw@h/",
		"amqp://u:secretpw@h1,h2/vh@x",
	} {
		_, err := Config{URLs: []string{u}}.resolve()
		if !errors.Is(err, broker.ErrInvalidOption) {
			t.Errorf("%q: %v, want ErrInvalidOption", u, err)
			continue
		}
		if text := fmt.Sprintf("%v %+v %#v %q", err, err, err, err); strings.Contains(text, "secret") {
			t.Errorf("%q: error leaks the password: %v", u, err)
		}
	}
	if _, err := (Config{}).resolve(); !errors.Is(err, broker.ErrInvalidOption) {
		t.Errorf("no URL: %v", err)
	}
}
