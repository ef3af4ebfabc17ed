package eventhubs

import (
	"context"
	"errors"
	"fmt"
	"math"
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

	// MaxHandlerRetries(n) is broker.MaxDeliveries(n+1): after the first
	// delivery and n retries, the event is dead-lettered (see Subscribe).
	// 0 is the default (broker.DefaultMaxDeliveries). Giving a positive n
	// together with broker.MaxDeliveries or broker.UnlimitedDeliveries is
	// refused with broker.ErrInvalidOption.
	//
	// Deprecated: use broker.MaxDeliveries, which every adapter honours.
	// (Before dead-lettering existed, an event that reached this bound was
	// skipped; it is now published to the dead-letter hub.)
	MaxHandlerRetries int
)

// The handler loop's backoff between the deliveries of a failing event
// when the subscription sets no broker.RedeliveryDelay: 20 ms, doubling,
// at most 1 s. The cap keeps the default poison handling
// (broker.DefaultMaxDeliveries deliveries, then the dead-letter hub) near
// 14 s instead of the minute a longer cap would take.
const (
	handlerRetryBase = 20 * time.Millisecond
	handlerRetryMax  = time.Second
)

// Subscribe reads every partition of the event hub topic (or those of a
// Partitions option) in consumer group broker.Group (default "$Default";
// the group must exist) and hands the events to h: in order within a
// partition, one at a time per partition, and up to
// broker.Concurrency handler calls at once across partitions.
// broker.Prefetch is each receiver link's credit; without it the credit is
// sized to the round trip (DefaultPrefetch on a nearby service, more at a
// distance: see PrefetchRate).
//
// Start positions (broker.StartAt): latest (default: events enqueued
// after Subscribe returns), earliest, an offset, a sequence number or an
// enqueued time. Subscribe returns once every partition's receiver is
// attached; it blocks by ctx, retrying retryable failures within
// Config.Retry.
//
// Acknowledgement: Event Hubs has no per-message settlement. A handler
// error (or panic) is not checkpointed: the same event is handed to the
// handler again, in place, with Metadata.Redelivered set and
// DeliveryCount counting, and its partition does not move on meanwhile —
// a partition is an ordered log, so a failing event blocks the events
// behind it on that partition (and only there: the other partitions, and
// the handler slots of broker.Concurrency, go on). Capabilities.Redelivery
// is false because the service itself never redelivers.
//
// Poison events (Capabilities.DeadLetter, RedeliveryDelay): the wait
// before each new delivery is broker.RedeliveryDelay's (or
// RedeliveryBackoff's step), and without either 20 ms doubling up to 1 s.
// After broker.MaxDeliveries deliveries (default
// broker.DefaultMaxDeliveries; broker.UnlimitedDeliveries retries for as
// long as the subscription runs) the event is published, through this
// Broker's connection, to the dead-letter topic — another event hub of the
// namespace, broker.DeadLetterTo or broker.DeadLetterTopic(topic) — with
// its ID, key, body, content type and properties (less PartitionIDHeader)
// and the headers broker.HeaderOriginalTopic, HeaderOriginalGroup (the
// consumer group, "$Default" when none was given), HeaderDeliveryCount
// and HeaderLastError; then the partition moves on past it (and, Balanced,
// checkpoints past it). The dead-letter hub and its broker.DeadLetterGroup
// ("kept") consumer group must exist: the adapter does not create them
// (consumer groups are made through Azure's management plane, not AMQP).
// A dead-letter publish that fails is retried — with Config.Backoff while
// the failure is retryable, every Backoff.Max (logged at error level)
// when it is not, such as a missing hub — and the partition waits: the
// event is never skipped. The delivery count lives in the subscription:
// a partition read again after a restart or a hand-over (from its last
// checkpoint) counts from 1. A subscription stopped while an event waits
// to be delivered again (or to be dead-lettered again after a failed
// attempt) neither passes over nor checkpoints it; a dead-letter publish
// under way when Close is called is waited for like a running handler.
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
	autoPrefetch := cfg.Prefetch == 0
	cfg.Prefetch = driver.PrefetchOr(cfg, DefaultPrefetch)
	s := &subscription{b: b, hub: topic, cfg: cfg, h: h, group: cfg.Group, autoPrefetch: autoPrefetch}
	if s.group == "" {
		s.group = DefaultConsumerGroup
	}
	var bal *BalancedOption // load balancing (balanceoptions.go)
	handlerRetries := 0     // the deprecated MaxHandlerRetries
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
			handlerRetries = int(v)
		default:
			return nil, fmt.Errorf("eventhubs: subscribe to %q: %w: unknown driver option %T", topic, broker.ErrInvalidOption, o)
		}
	}
	if handlerRetries > 0 {
		if cfg.MaxDeliveries != 0 {
			return nil, fmt.Errorf("eventhubs: subscribe to %q: %w: MaxHandlerRetries(%d) and MaxDeliveries/UnlimitedDeliveries both bound the deliveries; use MaxDeliveries alone",
				topic, broker.ErrInvalidOption, handlerRetries)
		}
		s.cfg.MaxDeliveries = handlerRetries + 1
		if handlerRetries == math.MaxInt {
			s.cfg.MaxDeliveries = handlerRetries
		}
	}
	s.limit = driver.MaxDeliveriesOr(s.cfg)
	s.deadTopic = driver.DeadLetterTopicOf(topic, s.cfg)
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
	// autoPrefetch: no broker.Prefetch was given, so cfg.Prefetch is the
	// floor of a credit sized to the round trip (PrefetchRate).
	autoPrefetch bool
	epoch        *int64
	only         []string
	onLost       OnOwnershipLost
	limit        int    // deliveries of an event before it is dead-lettered (0: no limit)
	deadTopic    string // the dead-letter hub
	name         string
	parts        []*partitionReceiver
	bal          *balancer     // load balancer (balance.go), nil unless Balanced
	sem          chan struct{} // handler calls running at once

	mu      sync.Mutex
	running int // partitions that have not stopped for good
}

func (s *subscription) init(ctx context.Context) {
	s.name = "isobroker-" + randomID()[:8]
	s.Subscription = driver.NewSubscription(ctx, "eventhubs", s.hub, s.b.log)
	s.Instrument(s.b.ins, s.group)
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

// call runs the handler once on a copy of m; the caller ends the
// returned Processing.
func (s *subscription) call(m *broker.Message, attempt int) (driver.Processing, error) {
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
	began := time.Now()
	sess, err := c.conn.NewSession(ctx, nil)
	if err != nil {
		return receiverLink{}, wrapErr("attach", addr, err)
	}
	rtt := time.Since(began) // the session begin's round trip
	credit := s.cfg.Prefetch
	if s.autoPrefetch {
		credit = driver.PrefetchForRoundTrip(credit, rtt, PrefetchRate, MaxAutoPrefetch)
	}
	props := map[string]any{propReceiverName: p.name}
	if s.epoch != nil {
		props[propEpoch] = *s.epoch
	}
	rcv, err := sess.NewReceiver(ctx, addr, &amqp.ReceiverOptions{
		Credit:              int32(min(credit, 1<<20)),
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
		"credit", credit, "round_trip", rtt, "put_token", tokenDone, "elapsed", time.Since(start))
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
		proc, ok := p.handle(m)
		if !ok {
			return
		}
		began := proc.SettleStart()
		p.lastSeq, p.haveSeq = m.Metadata.SequenceNumber, true
		if p.acked != nil {
			p.acked(m)
		}
		proc.Settled("checkpoint", began, nil)
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

// handle runs the handler on m until it succeeds or, after s.limit
// deliveries, m is dead-lettered; false if the partition stopped first
// (m is then neither passed over nor checkpointed). On success it returns
// the last call's Processing for the caller to settle ("checkpoint": the
// event is marked done, and the checkpoint may advance past it, written
// by the checkpointer on its own schedule); a failed call that will be
// retried in place ends its span with the handler's error, and a
// dead-lettered event is settled here ("dead_letter").
func (p *partitionReceiver) handle(m *broker.Message) (driver.Processing, bool) {
	s := p.s
	for n := 1; ; n++ { // n: the delivery about to be made
		if p.stopped() {
			return driver.Processing{}, false
		}
		select {
		case s.sem <- struct{}{}:
		case <-p.ctx.Done():
			return driver.Processing{}, false
		}
		proc, err := s.call(m, n-1)
		<-s.sem
		if err == nil {
			return proc, true
		}
		if s.limit > 0 && n >= s.limit {
			began := proc.SettleStart()
			ok := p.deadLetter(proc.Within(s.HandlerContext()), m, n, err)
			var serr error
			if !ok {
				serr = broker.ErrClosed
			}
			proc.Settled("dead_letter", began, serr)
			return driver.Processing{}, ok
		}
		proc.End()
		delay := s.redeliveryDelay(n)
		s.b.log.Debug("handler failed; retrying the event", "hub", s.hub, "group", s.group, "partition", p.id,
			"sequence", m.Metadata.SequenceNumber, "deliveries", n, "delay", delay, "err", err)
		if !p.wait(delay) {
			return driver.Processing{}, false
		}
	}
}

// redeliveryDelay is the wait after failed delivery n (1-based): the
// subscription's redelivery delay, or the handler loop's own backoff.
func (s *subscription) redeliveryDelay(n int) time.Duration {
	if s.cfg.Redelivery.Initial > 0 {
		return driver.RedeliveryDelayOf(s.cfg, n)
	}
	return min(handlerRetryBase<<min(n-1, 10), handlerRetryMax)
}

// wait waits d; false if the partition stopped first.
func (p *partitionReceiver) wait(d time.Duration) bool { return driver.Sleep(d, p.ctx.Done()) }

// deadLetter publishes the dead-letter copy of m, whose delivery n failed
// with last, to the dead-letter hub, until that works (true) or the
// partition stops (false). Each attempt runs under ctx (the handlers' context, carrying the process span),
// so that Close waits for it as for a handler; the waits between attempts
// end when the partition stops. A retryable failure is tried again after
// Config.Backoff's step, any other (a missing hub, a refused token) every
// Backoff.Max, logged at error level: the partition waits, the event is
// never dropped.
func (p *partitionReceiver) deadLetter(ctx context.Context, m *broker.Message, n int, last error) bool {
	s := p.s
	b := s.b
	dl := driver.DeadLetter(&broker.Delivery{Message: m, Group: s.cfg.Group}, s.hub, s.group, n, last)
	// A property of this name, set by another client, is not ours to
	// keep: Publish would send the copy to that partition of the
	// dead-letter hub (or refuse it, with a key).
	delete(dl.Headers, PartitionIDHeader)
	log := b.log.With("hub", s.hub, "group", s.group, "partition", p.id, "sequence", m.Metadata.SequenceNumber,
		"id", m.ID, "deliveries", n, "dead_letter_hub", s.deadTopic)
	for attempt := 1; ; attempt++ {
		if p.stopped() {
			return false
		}
		err := b.Publish(ctx, s.deadTopic, dl)
		if err == nil {
			log.Warn("event dead-lettered", "attempts", attempt, "err", dl.Headers[broker.HeaderLastError])
			return true
		}
		if p.stopped() || errors.Is(err, broker.ErrClosed) || ctx.Err() != nil {
			log.Info("dead-lettering stopped with the subscription; the event stays unprocessed", "err", err)
			return false
		}
		delay := b.backoff(attempt)
		if broker.IsRetryable(err) {
			log.Warn("dead-lettering failed; retrying", "attempt", attempt, "delay", delay, "err", err)
		} else {
			delay = b.cfg.Backoff.Max
			log.Error("dead-lettering failed; the partition waits and retries", "attempt", attempt, "delay", delay, "err", err)
		}
		if !p.wait(delay) {
			return false
		}
	}
}
