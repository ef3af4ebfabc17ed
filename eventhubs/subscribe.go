package eventhubs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/driver"
)

// Driver options for Subscribe, passed with broker.WithDriverOption.
type (
	// OwnerLevel attaches the subscription's receivers with this owner
	// level (epoch). A receiver with an equal or higher owner level on the
	// same consumer group and partition takes the partition over; the
	// receiver that loses it ends cleanly (see OnOwnershipLost). Without
	// it the receivers are non-epoch receivers (at most 5 per partition
	// and consumer group).
	OwnerLevel int64

	// Partitions restricts the subscription to these partition ids
	// (default: every partition of the hub).
	Partitions []string

	// OnOwnershipLost is called, from the partition's goroutine, when a
	// partition's receiver loses ownership (amqp:link:stolen); err wraps
	// broker.ErrOwnershipLost. That partition stops; the others go on.
	// When every partition has stopped so, the subscription ends and its
	// Err reports the ownership loss. It must not block.
	OnOwnershipLost func(partitionID string, err error)

	// MaxHandlerRetries bounds how often the handler loop retries an event
	// whose handler returned an error (0, the default: until it succeeds
	// or the subscription ends). When the bound is reached the event is
	// skipped and logged at error level.
	MaxHandlerRetries int
)

// handler-loop backoff after a handler error.
const (
	handlerRetryBase = 20 * time.Millisecond
	handlerRetryMax  = 5 * time.Second
)

// Subscribe reads every partition of the event hub topic (or those of a
// Partitions option) in consumer group broker.Group (default "$Default";
// the group must exist) and hands the events to h: in order within a
// partition, one at a time per partition, and up to
// broker.Concurrency handler calls at once across partitions.
// broker.Prefetch is each receiver link's credit (default DefaultPrefetch).
//
// Start positions (broker.StartAt): latest (default: events enqueued
// after Subscribe returns), earliest, an offset, a sequence number or an
// enqueued time. Subscribe returns once every partition's receiver is
// attached; it blocks by ctx, retrying retryable failures within
// Config.Retry.
//
// Acknowledgement: Event Hubs has no per-message settlement. A handler
// error (or panic) is not checkpointed: the same event is handed to the
// handler again, after a backoff, with Metadata.Redelivered set and
// DeliveryCount counting, and the partition does not move on until it
// succeeds (see MaxHandlerRetries). Capabilities.Redelivery is false
// because the service itself never redelivers.
//
// Recovery: a detached link (amqp:link:detach-forced and the like) is
// re-attached at once; a lost connection is rebuilt at once; busy or
// timeout refusals are retried with backoff, without limit while the
// subscription runs. A re-attached receiver resumes after the last
// sequence number handed to the handler, so nothing is skipped (events
// prefetched but not yet handled are read again). amqp:link:stolen ends
// that partition only (OwnerLevel, OnOwnershipLost), logged at info, and
// is never retried. Fatal errors (unauthorized, not found) end the
// subscription; Err reports them.
func (b *Broker) Subscribe(ctx context.Context, topic string, h broker.Handler, opts ...broker.SubscribeOption) (broker.Subscription, error) {
	if b.isClosing() {
		return nil, fmt.Errorf("eventhubs: subscribe: %w", broker.ErrClosed)
	}
	cfg, err := driver.CheckSubscribe(topic, h, b.Capabilities(), opts...)
	if err != nil {
		return nil, fmt.Errorf("eventhubs: subscribe to %q: %w", topic, err)
	}
	cfg.Prefetch = driver.PrefetchOr(cfg, DefaultPrefetch)
	s := &subscription{b: b, hub: topic, cfg: cfg, h: h, group: cfg.Group}
	if s.group == "" {
		s.group = DefaultConsumerGroup
	}
	var bal *BalancedOption // load balancing (balanceoptions.go)
	for _, o := range cfg.DriverOptions {
		switch v := o.(type) {
		case BalancedOption:
			bal = &v
		case OwnerLevel:
			e := int64(v)
			s.epoch = &e
		case Partitions:
			s.only = slices.Clone(v)
			slices.Sort(s.only)
			if len(s.only) == 0 || len(slices.Compact(slices.Clone(s.only))) != len(s.only) {
				return nil, fmt.Errorf("eventhubs: subscribe to %q: %w: Partitions %v is empty or lists a partition twice", topic, broker.ErrInvalidOption, []string(v))
			}
		case OnOwnershipLost:
			s.onLost = v
		case MaxHandlerRetries:
			if v < 0 {
				return nil, fmt.Errorf("eventhubs: subscribe to %q: %w: MaxHandlerRetries %d is negative", topic, broker.ErrInvalidOption, v)
			}
			s.maxRetries = int(v)
		default:
			return nil, fmt.Errorf("eventhubs: subscribe to %q: %w: unknown driver option %T", topic, broker.ErrInvalidOption, o)
		}
	}
	if cfg.Start.Kind == broker.StartOffset && strings.ContainsAny(cfg.Start.Offset, "'\\") {
		return nil, fmt.Errorf("eventhubs: subscribe to %q: %w: start offset %q contains a quote or backslash", topic, broker.ErrInvalidOption, cfg.Start.Offset)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("eventhubs: subscribe to %q: %w", topic, err)
	}
	if bal != nil { // load-balanced member: balance.go
		return b.subscribeBalanced(ctx, s, *bal)
	}
	if !b.gate.Enter() {
		return nil, fmt.Errorf("eventhubs: subscribe: %w", broker.ErrClosed)
	}
	defer b.gate.Leave()
	b.noteHub(topic)
	start := time.Now()

	props, err := b.HubProperties(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("eventhubs: subscribe to %q: %w", topic, err)
	}
	ids := props.PartitionIDs
	if s.only != nil {
		for _, id := range s.only {
			if !slices.Contains(props.PartitionIDs, id) {
				return nil, fmt.Errorf("eventhubs: subscribe to %q: %w: partition %q does not exist (partitions: %v)", topic, broker.ErrNotFound, id, props.PartitionIDs)
			}
		}
		ids = s.only
	}
	s.init(ctx)
	s.parts = make([]*partitionReceiver, len(ids))
	for i, id := range ids {
		s.parts[i] = &partitionReceiver{s: s, id: id, name: s.name + "-" + id, ctx: s.StopContext()}
	}

	// Resolve start positions and attach every partition, in parallel.
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for i, p := range s.parts {
		wg.Go(func() { errs[i] = p.first(ctx) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		err = fmt.Errorf("eventhubs: subscribe to %q group %q: %w", topic, s.group, firstErr(errs))
		s.abandon(err)
		return nil, err
	}
	if !b.gate.Track(s.Subscription) {
		s.abandon(broker.ErrClosed)
		return nil, fmt.Errorf("eventhubs: subscribe: %w", broker.ErrClosed)
	}
	s.start()
	b.log.Info("subscribed", "hub", topic, "group", s.group, "partitions", len(ids), "start", cfg.Start.String(),
		"owner_level", epochString(s.epoch), "prefetch", cfg.Prefetch, "concurrency", cfg.Concurrency, "elapsed", time.Since(start))
	return s, nil
}

func firstErr(errs []error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

func epochString(e *int64) string {
	if e == nil {
		return "none"
	}
	return strconv.FormatInt(*e, 10)
}

// subscription is a running Subscribe: one goroutine per partition (and,
// when balanced, the balancer's); the lifecycle is driver.Subscription's.
type subscription struct {
	*driver.Subscription
	b          *Broker
	hub, group string
	cfg        broker.SubscribeConfig
	h          broker.Handler
	epoch      *int64
	only       []string
	onLost     OnOwnershipLost
	maxRetries int
	name       string
	parts      []*partitionReceiver
	bal        *balancer     // load balancer (balance.go), nil unless Balanced
	sem        chan struct{} // handler calls running at once

	mu      sync.Mutex
	running int // partitions that have not stopped for good
}

func (s *subscription) init(ctx context.Context) {
	s.name = "isobroker-" + randomID()[:8]
	s.Subscription = driver.NewSubscription(ctx, "eventhubs", s.hub, s.b.log)
	s.sem = make(chan struct{}, s.cfg.Concurrency)
}

// abandon releases the receivers of a Subscribe that failed with cause.
func (s *subscription) abandon(cause error) {
	s.Abandon(cause)
	for _, p := range s.parts {
		p.closeLink()
	}
}

func (s *subscription) start() {
	s.running = len(s.parts)
	for _, p := range s.parts {
		s.Go(p.run)
	}
	if s.bal != nil { // the balancer starts partitions as it claims them
		s.Go(s.bal.run)
	}
	s.Start(nil)
}

// partitionEnded notes a partition that stopped for good (ownership lost)
// and ends the subscription when none is left.
func (s *subscription) partitionEnded(err error) {
	s.mu.Lock()
	s.running--
	last := s.running == 0
	s.mu.Unlock()
	if last {
		s.Stop(fmt.Errorf("eventhubs: subscription to %q: every partition lost: %w", s.hub, err))
	}
}

// call runs the handler once on a copy of m.
func (s *subscription) call(m *broker.Message, attempt int) error {
	d := clone(m)
	d.Metadata.Redelivered = attempt > 0
	d.Metadata.DeliveryCount = attempt
	return s.Call(s.h, &broker.Delivery{Message: d, Group: s.cfg.Group})
}

// partitionReceiver reads one partition.
type partitionReceiver struct {
	s     *subscription
	id    string
	name  string
	start string // selector of the first attach

	lastSeq int64
	haveSeq bool

	// ctx ends when this partition must stop: s.recvCtx, or (balanced)
	// a child of it that the balancer cancels when it drops the partition.
	ctx context.Context
	// Balanced hooks (nil otherwise): acked is called after the handler
	// is done with an event; handover replaces s.partitionEnded after
	// amqp:link:stolen.
	acked    func(m *broker.Message)
	handover func(err error)

	conn *amqpConn
	sess *amqp.Session
	rcv  *amqp.Receiver
}

func (p *partitionReceiver) address() string {
	return p.s.hub + "/ConsumerGroups/" + p.s.group + "/Partitions/" + p.id
}

// first resolves the start position and attaches, within Subscribe's ctx.
func (p *partitionReceiver) first(ctx context.Context) error {
	s := p.s
	b := s.b
	pos := s.cfg.Start
	switch pos.Kind {
	case broker.StartLatest:
		// Pin "latest" to a sequence number, so that a re-attach after a
		// drop resumes there even if nothing was delivered yet.
		pp, err := b.PartitionProperties(ctx, s.hub, p.id)
		if err != nil {
			return err
		}
		p.start = seqSelector(pp.LastEnqueuedSequenceNumber, false)
	case broker.StartEarliest:
		p.start = "amqp.annotation.x-opt-offset > '-1'"
	case broker.StartOffset:
		p.start = fmt.Sprintf("amqp.annotation.x-opt-offset %s '%s'", op(pos.Inclusive), pos.Offset)
	case broker.StartSequence:
		p.start = seqSelector(pos.Sequence, pos.Inclusive)
	case broker.StartTime:
		p.start = fmt.Sprintf("amqp.annotation.x-opt-enqueued-time >= '%d'", pos.Time.UnixMilli())
	}
	return b.withRetry(ctx, "attach", p.address(), func(ctx context.Context, c *amqpConn) error {
		return p.attach(ctx, c)
	})
}

func op(inclusive bool) string {
	if inclusive {
		return ">="
	}
	return ">"
}

func seqSelector(seq int64, inclusive bool) string {
	return fmt.Sprintf("amqp.annotation.x-opt-sequence-number %s '%d'", op(inclusive), seq)
}

// selector is where the next attach starts: after the last handled event,
// or the initial position.
func (p *partitionReceiver) selector() string {
	if p.haveSeq {
		return seqSelector(p.lastSeq, false)
	}
	return p.start
}

// receiverLink is an attached receiver and the session it lives on.
type receiverLink struct {
	sess *amqp.Session
	rcv  *amqp.Receiver
}

// attach puts a token and attaches a receiver link on c, under the
// instance's lifetime: ctx bounds only the wait (see awaitBuilt), and a
// link attached after ctx ended is detached in the background.
func (p *partitionReceiver) attach(ctx context.Context, c *amqpConn) error {
	b := p.s.b
	sel := p.selector()
	l, err := awaitBuilt(ctx, b.life(), func(ctx context.Context) (receiverLink, error) {
		return p.attachLink(ctx, c, sel)
	}, func(l receiverLink) {
		closeReceiverAsync(l, b)
	})
	if err != nil {
		return err
	}
	p.conn, p.sess, p.rcv = c, l.sess, l.rcv
	return nil
}

// attachLink does attach's work by ctx, starting at selector sel.
func (p *partitionReceiver) attachLink(ctx context.Context, c *amqpConn, sel string) (receiverLink, error) {
	s := p.s
	b := s.b
	addr := p.address()
	start := time.Now()
	if err := c.putToken(ctx, b.cfg.audience(addr)); err != nil {
		return receiverLink{}, err
	}
	tokenDone := time.Since(start)
	sess, err := c.conn.NewSession(ctx, nil)
	if err != nil {
		return receiverLink{}, wrapErr("attach", addr, err)
	}
	props := map[string]any{propReceiverName: p.name}
	if s.epoch != nil {
		props[propEpoch] = *s.epoch
	}
	rcv, err := sess.NewReceiver(ctx, addr, &amqp.ReceiverOptions{
		Credit:              int32(min(s.cfg.Prefetch, 1<<20)),
		SettlementMode:      amqp.ReceiverSettleModeFirst.Ptr(),
		Filters:             []amqp.LinkFilter{amqp.NewSelectorFilter(sel)},
		Properties:          props,
		TargetAddress:       p.name,
		Name:                p.name + "-" + randomID()[:8],
		DesiredCapabilities: []string{capGeoReplication},
	})
	if err != nil {
		closeSessionAsync(sess, &b.wg)
		return receiverLink{}, wrapErr("attach", addr, err)
	}
	c.touch()
	b.log.Info("receiver attached", "conn", c.gen, "source", addr, "selector", sel, "owner_level", epochString(s.epoch),
		"put_token", tokenDone, "elapsed", time.Since(start))
	return receiverLink{sess: sess, rcv: rcv}, nil
}

// closeReceiverAsync detaches l and ends its session in the background,
// bounded, in b's tracker.
func closeReceiverAsync(l receiverLink, b *Broker) {
	b.wg.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), linkCloseTimeout)
		defer cancel()
		_ = l.rcv.Close(ctx)
		closeSessionAsync(l.sess, &b.wg)
	})
}

// closeLink detaches the receiver (bounded) and forgets it.
func (p *partitionReceiver) closeLink() {
	if p.rcv == nil {
		return
	}
	b := p.s.b
	rcv, sess := p.rcv, p.sess
	p.rcv, p.sess, p.conn = nil, nil, nil
	ctx, cancel := context.WithTimeout(context.Background(), linkCloseTimeout)
	defer cancel()
	stop := context.AfterFunc(b.deadCtx, cancel)
	defer stop()
	_ = rcv.Close(ctx)
	closeSessionAsync(sess, &b.wg)
}

// run receives and handles until the subscription stops or the partition
// is lost.
func (p *partitionReceiver) run() {
	s := p.s
	defer p.closeLink()
	failures := 0
	for {
		if p.stopped() {
			return
		}
		if p.rcv == nil {
			if !p.reattach(failures) {
				return
			}
		}
		msg, err := p.rcv.Receive(p.ctx, nil)
		if err != nil {
			if p.stopped() {
				return
			}
			failures++
			if !p.onError(err) {
				return
			}
			continue
		}
		failures = 0
		m := decodeEvent(msg, s.hub, p.id)
		if !p.handle(m) {
			return
		}
		p.lastSeq, p.haveSeq = m.Metadata.SequenceNumber, true
		if p.acked != nil {
			p.acked(m)
		}
	}
}

// stopped reports that the partition (or the whole subscription) stops.
func (p *partitionReceiver) stopped() bool { return p.ctx.Err() != nil }

// onError classifies a receive error; false ends the partition.
func (p *partitionReceiver) onError(err error) bool {
	s := p.s
	b := s.b
	werr := onLinkError("receive", p.address(), err)
	act, _ := classify(werr)
	cond := ""
	if ae, _ := remote(err); ae != nil {
		cond = string(ae.Condition)
	}
	switch act {
	case actStolen:
		p.lost(werr)
		return false
	case actFatal:
		b.log.Error("receiver failed", "source", p.address(), "condition", cond, "err", werr)
		s.Stop(werr)
		return false
	case actContext:
		return false
	case actReconnect:
		b.invalidate(p.conn, werr)
	}
	b.log.Info("receiver detached; re-attaching", "source", p.address(), "condition", cond, "action", act.String(),
		"resume", p.selector(), "err", werr)
	p.closeLink()
	return true
}

// lost ends the partition after amqp:link:stolen.
func (p *partitionReceiver) lost(err error) {
	s := p.s
	desc := ""
	var e *Error
	if errors.As(err, &e) {
		desc = e.Description
	}
	s.b.log.Info("partition ownership lost", "hub", s.hub, "group", s.group, "partition", p.id,
		"owner_level", epochString(s.epoch), "description", desc)
	if s.onLost != nil {
		func() {
			defer func() {
				if r := recover(); r != nil {
					s.b.log.Error("OnOwnershipLost panicked", "panic", r)
				}
			}()
			s.onLost(p.id, err)
		}()
	}
	if p.handover != nil {
		p.handover(err)
		return
	}
	s.partitionEnded(err)
}

// reattach attaches again with backoff until it works, the partition is
// lost or fatally refused, or the subscription stops.
func (p *partitionReceiver) reattach(failures int) bool {
	s := p.s
	b := s.b
	for attempt := failures; ; attempt++ {
		if attempt > 1 {
			if !b.sleep(p.ctx, b.backoff(attempt-1)) {
				return false
			}
		}
		c, err := b.getConn(p.ctx)
		if err == nil {
			err = p.attach(p.ctx, c)
		}
		if err == nil {
			return true
		}
		if p.stopped() || b.isDead() {
			return false
		}
		werr := wrapErr("attach", p.address(), err)
		switch act, _ := classify(werr); act {
		case actStolen:
			p.lost(werr)
			return false
		case actFatal:
			b.log.Error("receiver attach failed", "source", p.address(), "err", werr)
			s.Stop(werr)
			return false
		case actReconnect:
			b.invalidate(c, werr)
		}
		b.log.Info("receiver attach failed; retrying", "source", p.address(), "attempt", attempt+1, "err", werr)
	}
}

// handle runs the handler on m until it succeeds (or the retry bound is
// reached); false if the subscription stopped first.
func (p *partitionReceiver) handle(m *broker.Message) bool {
	s := p.s
	for attempt := 0; ; attempt++ {
		if p.stopped() {
			return false
		}
		select {
		case s.sem <- struct{}{}:
		case <-p.ctx.Done():
			return false
		}
		err := s.call(m, attempt)
		<-s.sem
		if err == nil {
			return true
		}
		if s.maxRetries > 0 && attempt >= s.maxRetries {
			s.b.log.Error("handler failed; event skipped", "hub", s.hub, "group", s.group, "partition", p.id,
				"sequence", m.Metadata.SequenceNumber, "attempts", attempt+1, "err", err)
			return true
		}
		delay := handlerRetryBase << min(attempt, 10)
		delay = min(delay, handlerRetryMax)
		s.b.log.Debug("handler failed; retrying the event", "hub", s.hub, "partition", p.id,
			"sequence", m.Metadata.SequenceNumber, "attempt", attempt+1, "delay", delay, "err", err)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-p.ctx.Done():
			t.Stop()
			return false
		}
	}
}
