package redact

import (
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	cases := []struct{ in, secret, want string }{
		{"amqp://guest:s3cret@localhost:5672/vh", "s3cret", "amqp://guest:***@localhost:5672/vh"},
		{"amqps://u:p%40ss@h1,h2/", "p%40ss", "amqps://u:***@h1,h2/"},
		{"amqp://user@host/", "", "amqp://user@host/"},
		{"eventhubs://ns.example/hub?SharedAccessKey=abc123&SharedAccessKeyName=k", "abc123", ""},
		{"Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=root;SharedAccessKey=KEYVALUE=;EntityPath=hub",
			"KEYVALUE", "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=root;SharedAccessKey=***;EntityPath=hub"},
		{"endpoint=sb://x/;sharedaccesssignature=SharedAccessSignature sr=a&sig=SIGNATURE&se=1", "SIGNATURE", ""},
		{"amqp://u:pa ss@%zz", "pa ss", ""},
	}
	for _, c := range cases {
		got := Target(c.in)
		if c.secret != "" && strings.Contains(got, c.secret) {
			t.Errorf("Target(%q) = %q still holds the secret", c.in, got)
		}
		if c.want != "" && got != c.want {
			t.Errorf("Target(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
