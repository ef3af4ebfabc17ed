package rabbit

import (
	"strings"
	"testing"

	"github.com/isobroker/broker/internal/secrettest"
)

// urlPlacements put a secret (%s) where a parser of RabbitMQ URLs could
// take a password. The secret holds none of "@*" and no "://" (see
// FuzzURL); the placements cover the slips users make: an unescaped '/',
// '?' or '#', a forgotten scheme, several hosts, several URLs.
var urlPlacements = []secrettest.Placement{
	{Form: "amqp://user:%s@127.0.0.1:5672/vh", Stops: "@"},
	{Form: "amqps://user:%s@h1:5671,h2,h3:5673/vh?heartbeat=5", Stops: "@"},
	{Form: "amqp://user:%s@h/", Stops: "@"},
	{Form: "amqp://user:%s@h:99999/", Stops: "@"},
	{Form: "amqp://user:%s@h1,,h2/", Stops: "@"},
	{Form: "amqp://user:%s@", Stops: "@"},
	{Form: "tcp://user:%s@h/", Stops: "@"},
	{Form: "user:%s@127.0.0.1:5672", Stops: "@"},
	{Form: "amqp://user:%s@h/vh?certfile=/nonexistent&keyfile=/nonexistent", Stops: "@"},
	{Form: "amqps://user:%s@h/?cacertfile=/nonexistent", Stops: "@"},
}

// FuzzURL: for any secret in a password position, between any prefix and
// suffix, resolving the URL either fails with an error or yields
// endpoints, and no rendering of the error, the Config or an endpoint's
// redacted form holds the secret. Nothing panics.
func FuzzURL(f *testing.F) {
	for i := range urlPlacements {
		f.Add(uint8(i), "", "s3cret-pw", "")
	}
	f.Add(uint8(2), "", "pa/ss", "")
	f.Add(uint8(2), "", "1234/abc", "")
	f.Add(uint8(2), "", "pa?ss", "")
	f.Add(uint8(2), "", "pa#ss", "")
	f.Add(uint8(2), "", "p%40ss", "")
	f.Add(uint8(2), "", "p:ss", "")
	f.Add(uint8(1), " ", "pw pw", ",")
	f.Fuzz(func(t *testing.T, which uint8, prefix, secret, suffix string) {
		in, secret, ok := secrettest.Place(urlPlacements[int(which)%len(urlPlacements)], prefix, secret, suffix)
		if !ok {
			return
		}
		cfg := Config{URLs: []string{in}}
		r, err := cfg.resolve()
		if leak, ok := secrettest.Leak(secret, err, cfg); ok {
			t.Fatalf("URL %q: the secret shows in %q", in, leak)
		}
		if err != nil {
			return
		}
		for _, ep := range r.endpoints {
			if strings.Contains(ep.redacted, secret) {
				t.Fatalf("URL %q: endpoint shown as %q", in, ep.redacted)
			}
		}
	})
}
