package redact

import (
	"strings"
	"testing"

	"github.com/isobroker/broker/internal/secrettest"
)

// secretPlacements are the positions a parser could take as a password,
// key or signature (see secrettest.Placement).
var secretPlacements = []secrettest.Placement{
	{Form: "amqp://user:%s@host:5672/vh", Stops: ""},
	{Form: "amqps://user:%s@h1:5671,h2/vh?heartbeat=5", Stops: ""},
	{Form: "amqp://user:%s@host/vh,amqp://other:pw@host2/", Stops: ""},
	{Form: "user:%s@host:5672", Stops: ""},
	{Form: "user:%s@host", Stops: ""},
	{Form: "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=%s;EntityPath=hub", Stops: ";"},
	{Form: "Endpoint=sb://ns/;SharedAccessSignature=SharedAccessSignature sr=ns&sig=%s&se=1&skn=k", Stops: ";"},
	{Form: "SharedAccessSignature sr=ns&sig=%s&se=1", Stops: ";&"},
	{Form: "eventhubs://ns.example/hub?SharedAccessKeyName=k&SharedAccessKey=%s", Stops: ";&"},
	{Form: "eventhubs://ns.example/hub?sharedaccesssignature=%s", Stops: ";&"},
	{Form: "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=%s;EndpointSuffix=core.windows.net", Stops: ";"},
	{Form: "https://a.blob.core.windows.net/c?sv=1&sig=%s", Stops: ";&"},
	{Form: "Host=h;Password=%s;User=u", Stops: ";"},
}

// FuzzTarget: for any secret in any position a parser could take as a
// password, key or signature, between any prefix and suffix, Target's
// output never holds the secret, and Target never panics.
func FuzzTarget(f *testing.F) {
	for i := range secretPlacements {
		f.Add(uint8(i), "", "s3cr3t-pw", "")
	}
	f.Add(uint8(0), "", "pa/ss", "")
	f.Add(uint8(0), "", "1234/abc", "")
	f.Add(uint8(0), "", "p@ss:w/rd?x#y", "")
	f.Add(uint8(0), "", "a://b", "")
	f.Add(uint8(3), "x:y@", "PASSWORD", ";a=b")
	f.Add(uint8(5), "amqp://u:p@h/;", "KEYVALUE=", "")
	f.Add(uint8(2), "Endpoint=", "pw", "@")
	f.Fuzz(func(t *testing.T, which uint8, prefix, secret, suffix string) {
		in, secret, ok := secrettest.Place(secretPlacements[int(which)%len(secretPlacements)], prefix, secret, suffix)
		if !ok {
			return
		}
		if got := Target(in); strings.Contains(got, secret) {
			t.Fatalf("Target(%q) = %q holds the secret %q", in, got, secret)
		}
	})
}
