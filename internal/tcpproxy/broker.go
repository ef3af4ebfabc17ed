package tcpproxy

import (
	"context"
	"testing"

	"github.com/isobroker/broker"
)

// Proxied is a Broker that reaches its server through a Proxy of its own,
// as the conformance harnesses open them for brokertest's Sever hook; its
// Close closes the Broker, then the proxy.
type Proxied struct {
	broker.Broker
	Proxy *Proxy
}

// Close closes the Broker and then stops the proxy.
func (p *Proxied) Close(ctx context.Context) error {
	err := p.Broker.Close(ctx)
	p.Proxy.Close()
	return err
}

// Sever is a brokertest.Harness Sever hook for instances returned as
// *Proxied: it cuts every connection of b's proxy, failing t when b was
// not opened that way or had no connection to cut.
func Sever(t testing.TB, b broker.Broker) {
	t.Helper()
	p, ok := b.(*Proxied)
	if !ok {
		t.Fatalf("Sever: %T was not opened through a tcpproxy.Proxied", b)
	}
	if n := p.Proxy.Sever(); n == 0 {
		t.Fatalf("Sever: the instance had no connection to cut")
	}
}
