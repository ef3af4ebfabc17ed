package rabbit_test

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/internal/secrettest"
	"github.com/isobroker/broker/rabbit"
)

// TestEveryHostFailedNamesEachCause: with a dead first host and a second
// that refuses the credentials, Open's error names both hosts' causes,
// wraps ErrUnauthorized and is not retryable (the refusal is the most
// specific cause); neither it, in any rendering, nor the logs show the
// password.
func TestEveryHostFailedNamesEachCause(t *testing.T) {
	node := shared.Node(t)
	leakCheck(t)
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	_ = dead.Close() // nothing listens there now: connection refused
	const secret = "not-the-password-9f3"
	url := fmt.Sprintf("amqp://guest:%s@%s,127.0.0.1:%d/", secret, deadAddr, node.Port())
	logs := &logBuffer{}
	_, err = rabbit.OpenURL(ctxFor(t, 30*time.Second), url, rabbit.WithLogger(logs.logger()))
	if err == nil {
		t.Fatal("open succeeded with a wrong password")
	}
	if !errors.Is(err, broker.ErrUnauthorized) {
		t.Errorf("error %v does not wrap ErrUnauthorized", err)
	}
	if broker.IsRetryable(err) {
		t.Errorf("error is both unauthorized and retryable: %v", err)
	}
	for _, host := range []string{deadAddr, fmt.Sprintf("127.0.0.1:%d", node.Port())} {
		if !strings.Contains(err.Error(), host) {
			t.Errorf("error does not name host %s: %v", host, err)
		}
	}
	if leak, ok := secrettest.Leak(secret, err); ok {
		t.Errorf("the password shows in %q", leak)
	}
	if strings.Contains(logs.String(), secret) {
		t.Errorf("the password shows in the logs:\n%s", logs)
	}
}
