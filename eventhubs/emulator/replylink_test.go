package emulator_test

import (
	"testing"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/isobroker/broker/eventhubs/emulator"
	"github.com/isobroker/broker/internal/amqp10"
)

// rpcLinks opens a request sender to node and a reply receiver from it,
// with the given link name and target address (either may be empty).
func rpcLinks(t *testing.T, c *amqp.Conn, node, name, target string) (*amqp.Sender, *amqp.Receiver) {
	t.Helper()
	ctx := ctxT(t, 5*time.Second)
	s := session(t, c)
	snd, err := s.NewSender(ctx, node, nil)
	if err != nil {
		t.Fatal(err)
	}
	rcv, err := s.NewReceiver(ctx, node, &amqp.ReceiverOptions{Name: name, TargetAddress: target, Credit: 10,
		RequestedSenderSettleMode: amqp.SenderSettleModeSettled.Ptr()})
	if err != nil {
		t.Fatal(err)
	}
	return snd, rcv
}

// readRequest is a $management READ of hub's properties.
func readRequest(id, replyTo, hub, token string) *amqp.Message {
	m := amqp.NewMessage(nil)
	m.Data = nil
	m.Value = nil
	m.Properties = &amqp.MessageProperties{MessageID: id}
	if replyTo != "" {
		m.Properties.ReplyTo = amqp10.Ptr(replyTo)
	}
	m.ApplicationProperties = map[string]any{"operation": "READ", "name": hub, "type": "com.microsoft:eventhub", "security_token": token}
	return m
}

// putToken is a $cbs put-token request.
func putToken(id, replyTo, token, audience string) *amqp.Message {
	m := amqp.NewMessage(nil)
	m.Data = nil
	m.Value = token
	m.Properties = &amqp.MessageProperties{MessageID: id, ReplyTo: amqp10.Ptr(replyTo)}
	m.ApplicationProperties = map[string]any{"operation": "put-token", "type": "servicebus.windows.net:sastoken", "name": audience, "expiration": "0"}
	return m
}

func recvReply(t *testing.T, rcv *amqp.Receiver) (any, int32) {
	t.Helper()
	resp, err := rcv.Receive(ctxT(t, 5*time.Second), nil)
	if err != nil {
		t.Fatalf("no reply: %v", err)
	}
	code, _ := resp.ApplicationProperties["status-code"].(int32)
	return resp.Properties.CorrelationID, code
}

// TestReplyLinkFoundByName: like the service, the emulator sends an RPC
// reply to the receiver whose link name is the request's reply-to when no
// receiver has it as target address — the JavaScript SDK (rhea,
// @azure/core-amqp) names its $cbs reply link after reply-to and gives it no
// target address. Before, such requests were never answered.
func TestReplyLinkFoundByName(t *testing.T) {
	e, _ := startEmulator(t, emulator.Config{Hubs: []emulator.HubConfig{{Name: "hub", Partitions: 2}}})
	c := dial(t, e, nil)
	ctx := ctxT(t, 10*time.Second)
	aud := "amqp://" + e.Addr() + "/hub"
	token := emulator.SASToken(aud, e.KeyName(), e.Key(), time.Hour)

	snd, rcv := rpcLinks(t, c, "$cbs", "cbs-reply-by-name", "")
	if err := snd.Send(ctx, putToken("cbs-1", "cbs-reply-by-name", token, aud), nil); err != nil {
		t.Fatal(err)
	}
	if corr, code := recvReply(t, rcv); corr != "cbs-1" || code != 202 {
		t.Fatalf("$cbs reply by link name: correlation %v, status %d; want cbs-1, 202", corr, code)
	}

	snd, rcv = rpcLinks(t, c, "hub/$management", "mgmt-reply-by-name", "")
	if err := snd.Send(ctx, readRequest("mgmt-1", "mgmt-reply-by-name", "hub", token), nil); err != nil {
		t.Fatal(err)
	}
	if corr, code := recvReply(t, rcv); corr != "mgmt-1" || code != 200 {
		t.Fatalf("$management reply by link name: correlation %v, status %d; want mgmt-1, 200", corr, code)
	}
}

// TestReplyLinkTargetBeforeName: a receiver whose target address is the
// reply-to gets the reply even when another receiver is named after it, and
// a request without reply-to is answered on no link (it used to go to a
// receiver without target address, the empty address matching).
func TestReplyLinkTargetBeforeName(t *testing.T) {
	e, _ := startEmulator(t, emulator.Config{Hubs: []emulator.HubConfig{{Name: "hub", Partitions: 1}}})
	c := dial(t, e, nil)
	ctx := ctxT(t, 10*time.Second)
	token := emulator.SASToken("amqp://"+e.Addr()+"/hub", e.KeyName(), e.Key(), time.Hour)

	// byName is named "x" and has no target; byTarget has target "x".
	snd, byName := rpcLinks(t, c, "hub/$management", "x", "")
	_, byTarget := rpcLinks(t, c, "hub/$management", "other-name", "x")

	if err := snd.Send(ctx, readRequest("no-reply-to", "", "hub", token), nil); err != nil {
		t.Fatal(err)
	}
	if err := snd.Send(ctx, readRequest("to-x", "x", "hub", token), nil); err != nil {
		t.Fatal(err)
	}
	if corr, code := recvReply(t, byTarget); corr != "to-x" || code != 200 {
		t.Fatalf("target-address receiver: correlation %v, status %d; want to-x, 200", corr, code)
	}
	if err := byTarget.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// Now only the name matches. The connection answers requests in
	// order, so had either earlier request been answered on byName, its
	// reply would come first.
	if err := snd.Send(ctx, readRequest("to-x-again", "x", "hub", token), nil); err != nil {
		t.Fatal(err)
	}
	if corr, code := recvReply(t, byName); corr != "to-x-again" || code != 200 {
		t.Fatalf("receiver named x: first reply %v (status %d), want to-x-again", corr, code)
	}
}
