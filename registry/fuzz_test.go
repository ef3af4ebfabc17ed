package registry_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/isobroker/broker/eventhubs"
	"github.com/isobroker/broker/internal/secrettest"
	"github.com/isobroker/broker/rabbit"
	"github.com/isobroker/broker/registry"
)

// frontDoorPlacements put a secret (%s) where one of the registry's
// parsers could take a password, key or signature, including the slips
// users make (a forgotten scheme, an unescaped '/').
var frontDoorPlacements = []secrettest.Placement{
	{Form: "amqp://guest:%s@127.0.0.1:5672/", Stops: "@"},
	{Form: "amqps://guest:%s@h1,h2/vh", Stops: "@"},
	{Form: "guest:%s@127.0.0.1:5672", Stops: "@"},
	{Form: "guest:%s@127.0.0.1", Stops: "@"},
	{Form: "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=%s;EntityPath=hub", Stops: ";"},
	{Form: "Endpoint=sb://ns/;SharedAccessSignature=SharedAccessSignature sr=ns&sig=%s&se=1", Stops: ";"},
	{Form: "eventhubs://k:%s@ns.example/hub", Stops: "@/?#"},
	{Form: "eventhubs://ns.example/hub?sharedaccesssignature=%s", Stops: "&;#"},
	{Form: "mem://?password=%s", Stops: "&;#"},
	{Form: "unknown+scheme://u:%s@h/", Stops: "@"},
}

// FuzzOpen: whatever the target, the registry and the two adapters' own
// front doors (rabbit.Opener, eventhubs.Opener) return an error that,
// in every rendering, and the logs they write, never hold a secret placed
// where a parser could take it as a password, key or signature. The ctx
// is cancelled, so nothing is dialled; parsing happens first.
func FuzzOpen(f *testing.F) {
	for i := range frontDoorPlacements {
		f.Add(uint8(i), "", "s3cret-PW", "")
	}
	f.Add(uint8(0), "", "pa/ss", "")
	f.Add(uint8(2), "", "PASSWORD", "")
	f.Add(uint8(0), "", "1234/abc", "")
	f.Add(uint8(4), "x;", "KEY=", ";;")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	f.Fuzz(func(t *testing.T, which uint8, prefix, secret, suffix string) {
		in, secret, ok := secrettest.Place(frontDoorPlacements[int(which)%len(frontDoorPlacements)], prefix, secret, suffix)
		if !ok {
			return
		}
		var logs bytes.Buffer
		log := slog.New(slog.NewTextHandler(&logs, secrettest.HandlerOptions()))
		r := registry.New(registry.WithLogger(log))
		var errs []any
		if b, err := r.Open(ctx, in); err == nil {
			_ = b.Close(ctx)
		} else {
			errs = append(errs, err)
		}
		if b, err := rabbit.Opener(ctx, in, registry.OpenConfig{Name: "fuzz", Logger: log}); err == nil {
			_ = b.Close(ctx)
		} else {
			errs = append(errs, err)
		}
		if b, err := eventhubs.Opener(ctx, in, registry.OpenConfig{Name: "fuzz", Logger: log}); err == nil {
			_ = b.Close(ctx)
		} else {
			errs = append(errs, err)
		}
		if leak, ok := secrettest.Leak(secret, errs...); ok {
			t.Fatalf("target %q: the secret shows in %q", in, leak)
		}
		if strings.Contains(logs.String(), secret) {
			t.Fatalf("target %q: the secret shows in the logs:\n%s", in, logs.String())
		}
	})
}
