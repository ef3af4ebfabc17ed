package emulator_test

import (
	"errors"
	"testing"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/isobroker/broker/eventhubs/emulator"
)

// TestLinksEndWithTheirToken: an event link lives only as long as a token
// covering its entity. A sender whose only token expires is detached with
// amqp:unauthorized-access; on another connection, a sender whose token
// was renewed before it expired keeps working past the first expiry.
func TestLinksEndWithTheirToken(t *testing.T) {
	e, _ := startEmulator(t, emulator.Config{Hubs: []emulator.HubConfig{{Name: "hub", Partitions: 1}}})
	ctx := ctxT(t, 30*time.Second)
	aud := "amqp://" + e.Addr() + "/hub"
	// SAS expiries are whole seconds: 3 s from now is 2 to 3 s of life.
	const life = 3 * time.Second

	attach := func() (*amqp.Conn, *amqp.Sender) {
		t.Helper()
		c := dial(t, e, nil)
		if code, desc := putTokenOn(t, c, "servicebus.windows.net:sastoken", emulator.SASToken(aud, e.KeyName(), e.Key(), life), aud); code != 202 {
			t.Fatalf("put-token: %d %s", code, desc)
		}
		snd, err := session(t, c).NewSender(ctx, "hub", nil)
		if err != nil {
			t.Fatal(err)
		}
		return c, snd
	}
	_, lapsing := attach()
	renewing, kept := attach()
	// Renew on the second connection before the first token expires.
	if code, desc := putTokenOn(t, renewing, "servicebus.windows.net:sastoken", emulator.SASToken(aud, e.KeyName(), e.Key(), time.Hour), aud); code != 202 {
		t.Fatalf("renewal put-token: %d %s", code, desc)
	}

	deadline := time.Now().Add(life + 5*time.Second)
	var lapseErr error
	for time.Now().Before(deadline) {
		if lapseErr = lapsing.Send(ctx, amqp.NewMessage([]byte("x")), nil); lapseErr != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	var le *amqp.LinkError
	if !errors.As(lapseErr, &le) || le.RemoteErr == nil || string(le.RemoteErr.Condition) != emulator.CondUnauthorizedAccess {
		t.Fatalf("send after the only token expired = %v, want a detach with %s", lapseErr, emulator.CondUnauthorizedAccess)
	}
	if err := kept.Send(ctx, amqp.NewMessage([]byte("renewed")), nil); err != nil {
		t.Fatalf("send on the link whose token was renewed: %v", err)
	}
}
