package redact

import (
	"strings"
	"testing"
)

// secretPlacements are the positions a parser could take as a password,
// key or signature; %s is where the secret goes. stops are the bytes a
// secret in that position cannot hold (they would end it for any parser).
var secretPlacements = []struct{ form, stops string }{
	{"amqp://user:%s@host:5672/vh", ""},
	{"amqps://user:%s@h1:5671,h2/vh?heartbeat=5", ""},
	{"amqp://user:%s@host/vh,amqp://other:pw@host2/", ""},
	{"user:%s@host:5672", ""},
	{"user:%s@host", ""},
	{"Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=%s;EntityPath=hub", ";"},
	{"Endpoint=sb://ns/;SharedAccessSignature=SharedAccessSignature sr=ns&sig=%s&se=1&skn=k", ";"},
	{"SharedAccessSignature sr=ns&sig=%s&se=1", ";&"},
	{"eventhubs://ns.example/hub?SharedAccessKeyName=k&SharedAccessKey=%s", ";&"},
	{"eventhubs://ns.example/hub?sharedaccesssignature=%s", ";&"},
	{"DefaultEndpointsProtocol=https;AccountName=a;AccountKey=%s;EndpointSuffix=core.windows.net", ";"},
	{"https://a.blob.core.windows.net/c?sv=1&sig=%s", ";&"},
	{"Host=h;Password=%s;User=u", ";"},
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
		p := secretPlacements[int(which)%len(secretPlacements)]
		if secret == "" || strings.ContainsAny(secret, p.stops) || strings.Contains(secret, "://") {
			return
		}
		if strings.Contains(secret, "*") {
			return // it could match the mask itself and what follows it
		}
		if strings.HasPrefix(p.form, "user:%s") && strings.HasPrefix(secret, "//") {
			return // "user://x@host" is a URL of scheme "user" without a password, for every parser
		}
		// Markers around the secret keep it from matching the text that
		// happens to stand next to it in an output.
		secret = "S3x" + secret + "Zq9"
		in := prefix + strings.Replace(p.form, "%s", secret, 1) + suffix
		if strings.Count(in, secret) != 1 {
			return // the secret also stands somewhere that is not secret
		}
		if got := Target(in); strings.Contains(got, secret) {
			t.Fatalf("Target(%q) = %q holds the secret %q", in, got, secret)
		}
	})
}
