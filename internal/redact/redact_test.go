package redact

import (
	"strings"
	"testing"
)

func TestTarget(t *testing.T) {
	cases := []struct{ in, secret, want string }{
		{"amqp://guest:s3cret@localhost:5672/vh", "s3cret", "amqp://guest:***@localhost:5672/vh"},
		{"amqps://u:p%40ss@h1,h2/", "p%40ss", "amqps://u:***@h1,h2/"},
		{"amqp://user@host/", "", "amqp://user@host/"},
		{"amqp://host:5672/vh", "", "amqp://host:5672/vh"},
		{"eventhubs://ns.example/hub?SharedAccessKey=abc123&SharedAccessKeyName=k", "abc123",
			"eventhubs://ns.example/hub?SharedAccessKey=***&SharedAccessKeyName=k"},
		{"Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=root;SharedAccessKey=KEYVALUE=;EntityPath=hub",
			"KEYVALUE", "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=root;SharedAccessKey=***;EntityPath=hub"},
		{"endpoint=sb://x/;sharedaccesssignature=SharedAccessSignature sr=a&sig=SIGNATURE&se=1", "SIGNATURE",
			"endpoint=sb://x/;sharedaccesssignature=***"},
		{"SharedAccessSignature sr=a&sig=SIGNATURE&se=1&skn=k", "SIGNATURE", "SharedAccessSignature sr=a&sig=***&se=1&skn=k"},
		{"amqp://u:pa ss@%zz", "pa ss", "amqp://u:***@%zz"},
		// The findings of issue 15.
		{"amqp://u:pa/ss@h/", "pa/ss", "amqp://u:***@h/"},
		{"amqp://u:1234/abc@h/", "1234/abc", "amqp://u:***@h/"},
		{"guest:PASSWORD@127.0.0.1:5672", "PASSWORD", "guest:***@127.0.0.1:5672"},
		{"amqp://u:pw@h/?a=b;c=d", "pw", "amqp://u:***@h/?a=b;c=d"},
		{"amqp://u:p1@h1/,amqp://v:p2@h2/", "p1", "amqp://u:***@h1/,amqp://v:***@h2/"},
		{"amqp://u:p@ss@h/", "p@ss", "amqp://u:***@h/"},
		{"Password=hunter2;Host=h", "hunter2", "Password=***;Host=h"},
		{"", "", ""},
	}
	for _, c := range cases {
		got := Target(c.in)
		if c.secret != "" && strings.Contains(got, c.secret) {
			t.Errorf("Target(%q) = %q still holds the secret", c.in, got)
		}
		if got != c.want {
			t.Errorf("Target(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
