package eventhubs_test

import (
	"context"
	"errors"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/eventhubs"
	"github.com/isobroker/broker/eventhubs/emulator"
)

// TestCustomEndpoint: the namespace's host does not resolve; the socket
// goes to the custom endpoint (the emulator), and everything else stays
// the namespace's: the emulator sees the namespace as SNI and in the TLS
// verification (its certificate names only the namespace), as the open
// frame's hostname, as the WebSocket Host header, and in every token
// audience. Over amqps (a connection string and WithCustomEndpoint, as an
// azeventhubs user sets ClientOptions.CustomEndpoint), over wss, and over
// plain TCP from the eventhubs:// URL form's custom_endpoint parameter.
func TestCustomEndpoint(t *testing.T) {
	if _, err := net.DefaultResolver.LookupHost(ctxT(t, 5*time.Second), unresolvable); err == nil {
		t.Fatalf("%s resolves; the test needs a name that does not", unresolvable)
	}
	t.Run("amqps", func(t *testing.T) {
		var hs handshakes
		elog := &emulatorLog{}
		e, ca := tlsEmulator(t, emulator.Config{Logger: elog.logger()}, &hs, unresolvable)
		hub := newHub(t, e, 2)
		roundTrip(t, hub, 2, func(t *testing.T, logs *logBuffer) *eventhubs.Broker {
			return openCS(t, connString(e, unresolvable, hub, false), logs,
				eventhubs.WithCustomEndpoint(e.Addr()), eventhubs.WithTLSConfig(ca.clientTLS()))
		})
		hs.checkAll(t, 2, unresolvable)
		elog.checkNamespaceSeen(t, unresolvable, "amqps://"+unresolvable+"/")
	})
	t.Run("wss", func(t *testing.T) {
		var hs handshakes
		elog := &emulatorLog{}
		e, ca := tlsEmulator(t, emulator.Config{Logger: elog.logger(), WebSocketAddr: "127.0.0.1:0"}, &hs, unresolvable)
		hub := newHub(t, e, 2)
		roundTrip(t, hub, 2, func(t *testing.T, logs *logBuffer) *eventhubs.Broker {
			return openCS(t, connString(e, unresolvable, hub, false), logs, eventhubs.WithWebSockets(),
				eventhubs.WithCustomEndpoint(e.WebSocketAddr()), eventhubs.WithTLSConfig(ca.clientTLS()))
		})
		hs.checkAll(t, 2, unresolvable)
		elog.checkNamespaceSeen(t, unresolvable, "amqps://"+unresolvable+"/")
		hosts := elog.values("WebSocket accepted", "host")
		if len(hosts) < 2 {
			t.Errorf("emulator accepted %d WebSockets, want at least 2", len(hosts))
		}
		for _, h := range hosts {
			if h != unresolvable {
				t.Errorf("WebSocket Host header %q, want %q", h, unresolvable)
			}
		}
	})
	t.Run("url", func(t *testing.T) {
		elog := &emulatorLog{}
		e := startEmulator(t, emulator.Config{Logger: elog.logger()})
		hub := newHub(t, e, 2)
		target := "eventhubs://" + url.UserPassword(e.KeyName(), e.Key()).String() + "@" + unresolvable + "/" + hub +
			"?emulator=true&custom_endpoint=" + url.QueryEscape(e.Addr())
		logs := &logBuffer{}
		b, err := eventhubs.OpenURL(ctxT(t, 10*time.Second), target, eventhubs.WithLogger(logs.logger()), eventhubs.WithName(t.Name()))
		if err != nil {
			t.Fatalf("open %s: %v", strings.Replace(target, e.Key(), "***", 1), err)
		}
		defer b.Close(context.Background())
		if err := b.Publish(ctxT(t, 10*time.Second), hub, &broker.Message{ID: "x"}); err != nil {
			t.Fatal(err)
		}
		elog.checkNamespaceSeen(t, unresolvable, "amqp://"+unresolvable+"/")
		if n := logs.count("connection open", "addr="+e.Addr(), "transport=tcp"); n != 1 {
			t.Errorf("broker logged %d connection opens to the custom endpoint, want 1:\n%s", n, logs)
		}
		if n := logs.count("broker open", "namespace="+unresolvable+" endpoint="+e.Addr()); n != 1 {
			t.Errorf("the config logged at open does not name the custom endpoint:\n%s", logs)
		}
	})
}

// TestCustomEndpointInvalid: a custom endpoint that is not a host[:port]
// is refused by Open, naming the field, before anything is dialed.
func TestCustomEndpointInvalid(t *testing.T) {
	for _, bad := range []string{"sb://proxy.example/", "amqps://proxy.example", "proxy.example/path", "proxy.example:http", "proxy.example:0", "proxy.example:70000", "user@proxy.example", ":5671"} {
		_, err := eventhubs.Open(ctxT(t, 5*time.Second), eventhubs.Config{
			Namespace: unresolvable, KeyName: "k", Key: "secret", CustomEndpoint: bad,
			Dialer: dialerFunc(func(context.Context, string, string) (net.Conn, error) {
				t.Errorf("%q: dialed", bad)
				return nil, errors.New("no")
			}),
		})
		if !errors.Is(err, broker.ErrInvalidOption) || !strings.Contains(err.Error(), "CustomEndpoint") {
			t.Errorf("CustomEndpoint %q: err = %v, want ErrInvalidOption naming CustomEndpoint", bad, err)
		}
	}
	for _, good := range []string{"proxy.example", "proxy.example:443", "10.0.0.1", "[::1]:5671", "::1"} {
		_, err := eventhubs.Open(ctxT(t, 5*time.Second), eventhubs.Config{
			Namespace: unresolvable, KeyName: "k", Key: "secret", CustomEndpoint: good, Logger: discard(),
			Dialer: dialerFunc(func(context.Context, string, string) (net.Conn, error) { return nil, errors.New("refused by the test") }),
		})
		if err == nil || errors.Is(err, broker.ErrInvalidOption) || !strings.Contains(err.Error(), "refused by the test") {
			t.Errorf("CustomEndpoint %q: err = %v, want the dialer's error", good, err)
		}
	}
}

// dialerFunc adapts a function to eventhubs.ContextDialer.
type dialerFunc func(ctx context.Context, network, addr string) (net.Conn, error)

func (f dialerFunc) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return f(ctx, network, addr)
}

// recordingDialer dials with a net.Dialer and records the addresses.
type recordingDialer struct {
	mu    sync.Mutex
	addrs []string
}

func (d *recordingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	d.addrs = append(d.addrs, network+" "+addr)
	d.mu.Unlock()
	var nd net.Dialer
	return nd.DialContext(ctx, network, addr)
}

func (d *recordingDialer) dialed() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.addrs...)
}

// TestDialer: Config.Dialer opens every TCP connection — the first and a
// reconnect, under TLS and under a WebSocket — to the dial address; its
// error fails Open, retryable, and the Open error carries it.
func TestDialer(t *testing.T) {
	var hs handshakes
	e, ca := tlsEmulator(t, emulator.Config{WebSocketAddr: "127.0.0.1:0"}, &hs, unresolvable)
	hub := newHub(t, e, 1)
	for _, c := range []struct {
		name string
		addr string
		opts []eventhubs.Option
	}{
		{"tls", e.Addr(), nil},
		{"wss", e.WebSocketAddr(), []eventhubs.Option{eventhubs.WithWebSockets()}},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := &recordingDialer{}
			opts := append([]eventhubs.Option{eventhubs.WithDialer(d), eventhubs.WithCustomEndpoint(c.addr), eventhubs.WithTLSConfig(ca.clientTLS())}, c.opts...)
			logs := &logBuffer{}
			b := openCS(t, connString(e, unresolvable, hub, false), logs, opts...)
			if err := b.Publish(ctxT(t, 5*time.Second), hub, &broker.Message{ID: "1"}); err != nil {
				t.Fatal(err)
			}
			e.Faults().CloseConnections("")
			waitLog(t, logs, 10*time.Second, "connection closed by peer")
			if err := b.Publish(ctxT(t, 5*time.Second), hub, &broker.Message{ID: "2"}); err != nil {
				t.Fatal(err)
			}
			got := d.dialed()
			if len(got) != 2 || got[0] != "tcp "+c.addr || got[1] != "tcp "+c.addr {
				t.Errorf("dialer called with %q, want twice %q", got, "tcp "+c.addr)
			}
		})
	}
	t.Run("error", func(t *testing.T) {
		_, err := eventhubs.OpenURL(ctxT(t, 5*time.Second), connString(e, unresolvable, "", false), eventhubs.WithLogger(discard()),
			eventhubs.WithDialer(dialerFunc(func(context.Context, string, string) (net.Conn, error) {
				return nil, errors.New("proxy says no")
			})))
		if err == nil || !strings.Contains(err.Error(), "proxy says no") || !broker.IsRetryable(err) {
			t.Errorf("open = %v (retryable %v), want the dialer's error, retryable", err, broker.IsRetryable(err))
		}
	})
}
