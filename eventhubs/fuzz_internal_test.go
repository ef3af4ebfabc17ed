package eventhubs

import (
	"strings"
	"testing"

	"github.com/isobroker/broker/internal/secrettest"
)

// targetPlacements put a secret (%s) where a parser of Event Hubs targets
// takes a key or a signature. stops are bytes the secret cannot hold in
// that position (they end it for our parser and any other).
var targetPlacements = []secrettest.Placement{
	{Form: "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=%s;EntityPath=hub", Stops: ";"},
	{Form: "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=%s", Stops: ";"},
	{Form: "SharedAccessKey=%s;SharedAccessKeyName=k;Endpoint=sb://ns/", Stops: ";"},
	{Form: "Endpoint=sb://ns/;SharedAccessSignature=SharedAccessSignature sr=ns&sig=%s&se=1&skn=k", Stops: ";"},
	{Form: "Endpoint=sb://ns/;SharedAccessSignature=%s;EntityPath=h", Stops: ";"},
	{Form: "endpoint=sb://ns/;sharedaccesskeyname=k;sharedaccesskey=%s;usedevelopmentemulator=maybe", Stops: ";"},
	{Form: "Endpoint=sb://user:%s@ns/;SharedAccessKeyName=k;SharedAccessKey=K1", Stops: ";/?#@"},
	{Form: "eventhubs://k:%s@ns.example:5672/hub?emulator=true", Stops: "/?#@"},
	{Form: "eventhubs://k:%s@ns.example/a/b", Stops: "/?#@"},
	{Form: "eventhubs://ns.example/hub?sharedaccesssignature=%s", Stops: "&;#"},
	{Form: "eventhubs://k:%s@/hub", Stops: "/?#@"},
}

// FuzzTargets: for any secret in any key or signature position, between
// any prefix and suffix, ParseConnectionString and the eventhubs:// parser
// either fail with an error, or return a Config, and no rendering of
// either (fmt verbs, String, GoString, slog) holds the secret; validating
// the Config (what Open does first) leaks nothing either. Nothing
// panics.
func FuzzTargets(f *testing.F) {
	for i := range targetPlacements {
		f.Add(uint8(i), "", "c2VjcmV0LWtleQ==", "")
	}
	f.Add(uint8(0), "", "KEY=", ";Endpoint=%zz")
	f.Add(uint8(7), "", "p%2Fss", "")
	f.Add(uint8(9), "", "SharedAccessSignature sr=x", "&reconnect=sometimes")
	f.Fuzz(func(t *testing.T, which uint8, prefix, secret, suffix string) {
		in, secret, ok := secrettest.Place(targetPlacements[int(which)%len(targetPlacements)], prefix, secret, suffix)
		if !ok {
			return
		}
		var cfg Config
		var err error
		if strings.HasPrefix(strings.ToLower(strings.TrimSpace(in)), "eventhubs://") {
			cfg, err = parseURL(strings.TrimSpace(in))
		} else {
			cfg, err = ParseConnectionString(in)
		}
		if r, ok := secrettest.Leak(secret, err, cfg); ok {
			t.Fatalf("input %q: the secret shows in %q", in, r)
		}
		if err == nil {
			_, verr := cfg.withDefaults()
			if r, ok := secrettest.Leak(secret, verr); ok {
				t.Fatalf("input %q: validation error shows the secret: %q", in, r)
			}
		}
	})
}
