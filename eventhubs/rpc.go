package eventhubs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/Azure/go-amqp"
)

// randomID returns a random UUID-formatted string.
func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// rpcLink is a request/response link pair on a node such as $cbs or
// $management: a sender to the node, a receiver from it whose target is
// a private reply-to address, and a reader goroutine that routes replies
// by correlation-id. It lives as long as its session, or until the
// connection's supervisor retires it once no call has used it for keep.
type rpcLink struct {
	addr    string
	replyTo string
	sess    *amqp.Session
	snd     *amqp.Sender
	rcv     *amqp.Receiver

	mu      sync.Mutex
	pending map[string]chan *amqp.Message
	dead    bool
	users   int           // calls holding the link (acquire … release)
	idleAt  time.Time     // when users last dropped to zero
	retired bool          // released for idleness: takes no new calls
	keep    time.Duration // how long it stays attached without calls
	done    chan struct{} // closed when the reader has exited
	err     error         // why the reader exited; read after done
}

// newRPCLink attaches the pair on a new session of conn, by ctx (the
// request link's slot builds it under the instance's lifetime); the reader
// runs in wg.
func newRPCLink(ctx context.Context, conn *amqp.Conn, addr string, wg *tracker) (*rpcLink, error) {
	start := time.Now()
	sess, err := conn.NewSession(ctx, nil)
	if err != nil {
		return nil, err
	}
	r := &rpcLink{
		addr:    addr,
		replyTo: fmt.Sprintf("%s-reply-%s", addr, randomID()),
		sess:    sess,
		pending: make(map[string]chan *amqp.Message),
		idleAt:  time.Now(),
		done:    make(chan struct{}),
	}
	caps := []string(nil)
	if addr == "$management" {
		caps = []string{"com.microsoft:georeplication"}
	}
	r.snd, err = sess.NewSender(ctx, addr, &amqp.SenderOptions{DesiredCapabilities: caps})
	if err != nil {
		closeSessionAsync(sess, wg)
		return nil, err
	}
	r.rcv, err = sess.NewReceiver(ctx, addr, &amqp.ReceiverOptions{
		TargetAddress:             r.replyTo,
		Credit:                    100,
		SettlementMode:            amqp.ReceiverSettleModeFirst.Ptr(),
		RequestedSenderSettleMode: amqp.SenderSettleModeSettled.Ptr(),
		DesiredCapabilities:       caps,
	})
	if err != nil {
		closeSessionAsync(sess, wg)
		return nil, err
	}
	r.keep = keepFor(time.Since(start))
	wg.Add(1)
	go r.read(wg)
	return r, nil
}

// read routes replies until the receiver ends (its session or connection
// closed).
func (r *rpcLink) read(wg *tracker) {
	defer wg.Done()
	for {
		msg, err := r.rcv.Receive(context.Background(), nil)
		if err != nil {
			r.mu.Lock()
			r.dead, r.err = true, err
			r.pending = nil
			r.mu.Unlock()
			close(r.done)
			return
		}
		if msg.Properties == nil {
			continue
		}
		id := fmt.Sprint(msg.Properties.CorrelationID)
		r.mu.Lock()
		ch := r.pending[id]
		delete(r.pending, id)
		r.mu.Unlock()
		if ch != nil {
			ch <- msg // buffered
		}
	}
}

// alive reports whether r can take new calls.
func (r *rpcLink) alive() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.dead && !r.retired
}

// acquire reserves r for one call; it reports false when r was retired
// or died since the caller got it. Every true acquire needs a release.
func (r *rpcLink) acquire() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dead || r.retired {
		return false
	}
	r.users++
	return true
}

// release ends the call acquire reserved r for.
func (r *rpcLink) release() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.users--
	if r.users == 0 {
		r.idleAt = time.Now()
	}
}

// keepFor is how long a request link that took attach to attach stays
// attached without calls: as long as attaching another would take, within
// [requestLinkMinIdle, requestLinkMaxIdle]. Waiting longer than a new
// attach costs is never worth the link's memory; waiting that long costs a
// burst of calls at most twice what the best choice in hindsight would.
func keepFor(attach time.Duration) time.Duration {
	return min(max(attach, requestLinkMinIdle), requestLinkMaxIdle)
}

// idleUntil returns when r will have been idle for its keep, and false
// while a call holds it (or it has already died or been retired).
func (r *rpcLink) idleUntil() (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.idleUntilLocked()
}

func (r *rpcLink) idleUntilLocked() (time.Time, bool) {
	if r.users > 0 || r.dead || r.retired {
		return time.Time{}, false
	}
	return r.idleAt.Add(r.keep), true
}

// retireIfIdle retires r when no call has held it for its keep; it
// reports whether it did. A retired link takes no new calls: the caller
// closes it.
func (r *rpcLink) retireIfIdle(now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if until, ok := r.idleUntilLocked(); !ok || now.Before(until) {
		return false
	}
	r.retired = true
	return true
}

// call sends req and waits for the reply by ctx and life. The request is
// written under life (the link is shared, and go-amqp makes a write's ctx
// deadline the socket's write deadline: a short one would fail the whole
// connection); ctx bounds only the wait. It returns the reply's status
// code and description besides the message.
func (r *rpcLink) call(ctx context.Context, life lifetime, req *amqp.Message) (*amqp.Message, int32, string, error) {
	id := randomID()
	if req.Properties == nil {
		req.Properties = &amqp.MessageProperties{}
	}
	req.Properties.MessageID = id
	req.Properties.ReplyTo = &r.replyTo
	ch := make(chan *amqp.Message, 1)
	r.mu.Lock()
	if r.dead {
		err := r.err
		r.mu.Unlock()
		return nil, 0, "", err
	}
	r.pending[id] = ch
	r.mu.Unlock()
	forget := func() {
		r.mu.Lock()
		delete(r.pending, id)
		r.mu.Unlock()
	}
	_, err := awaitBuilt(ctx, life, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, r.snd.Send(ctx, req, nil)
	}, nil)
	if err != nil {
		forget()
		if ctx.Err() != nil {
			return nil, 0, "", ctx.Err()
		}
		if life.ctx.Err() != nil {
			return nil, 0, "", context.Canceled
		}
		return nil, 0, "", err
	}
	select {
	case resp := <-ch:
		status, desc := replyStatus(resp)
		return resp, status, desc, nil
	case <-r.done:
		return nil, 0, "", r.err
	case <-ctx.Done():
		forget()
		return nil, 0, "", ctx.Err()
	case <-life.ctx.Done():
		forget()
		return nil, 0, "", context.Canceled
	}
}

// replyStatus reads status-code (int32, or any integer) and
// status-description from a reply.
func replyStatus(m *amqp.Message) (int32, string) {
	var status int32
	var desc string
	for k, v := range m.ApplicationProperties {
		switch k {
		case "status-code", "statusCode":
			switch n := v.(type) {
			case int32:
				status = n
			case int64:
				status = int32(n)
			case int:
				status = int32(n)
			case int16:
				status = int32(n)
			case uint32:
				status = int32(n)
			}
		case "status-description", "statusDescription":
			if s, ok := v.(string); ok {
				desc = s
			}
		}
	}
	return status, desc
}
