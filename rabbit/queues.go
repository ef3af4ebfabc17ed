package rabbit

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/driver"
)

// QueueType is a Subscribe driver option (broker.WithDriverOption): the
// type of the queue a group subscription declares.
//
//   - Quorum, the default for group subscriptions: a replicated queue
//     that survives the loss of a minority of a cluster's nodes, counts
//     deliveries itself (so that a message whose consumer was lost while
//     handling it — or while holding it prefetched — counts as a failed
//     delivery) and dead-letters at least once. It is what RabbitMQ recommends for durable shared queues, and
//     classic mirrored queues, the older answer, are gone since 4.0.
//   - Classic: a single-node queue. Deliveries are counted by the
//     subscription (a failed delivery is republished with its count), so a
//     lost consumer's message is redelivered without being counted.
//   - Stream: an append-only log that delivered messages stay in, read
//     from a broker.StartAt position (earliest, an offset, a time; default
//     latest). A failed message cannot be requeued on a stream: the
//     handler is called again on it, after the redelivery delay, until it
//     succeeds or MaxDeliveries is reached, while the subscription's other
//     handlers go on.
//
// A private subscription (no group) always uses an exclusive classic
// queue; asking it for Quorum or Stream is ErrInvalidOption. A queue that
// already exists with another type (a classic queue declared before
// quorum became the default, say) makes Subscribe fail with
// ErrInvalidOption naming the difference: give the matching QueueType,
// another QueueName, or delete the queue.
type QueueType string

// The queue types.
const (
	Classic QueueType = "classic"
	Quorum  QueueType = "quorum"
	Stream  QueueType = "stream"
)

// SingleActiveConsumer is a Subscribe driver option: the group queue
// delivers to one member of the group at a time, the others standing by
// until it goes away (x-single-active-consumer). It keeps the queue's order
// across the group. It requires a group and a classic or quorum queue.
type SingleActiveConsumer bool

// Argument names of RabbitMQ queues and consumers.
const (
	argQueueType       = "x-queue-type"
	argDeliveryLimit   = "x-delivery-limit"
	argDeadLetterX     = "x-dead-letter-exchange"
	argDeadLetterKey   = "x-dead-letter-routing-key"
	argDeadLetterStrat = "x-dead-letter-strategy"
	argOverflow        = "x-overflow"
	argMessageTTL      = "x-message-ttl"
	argSingleActive    = "x-single-active-consumer"
	argStreamOffset    = "x-stream-offset"
)

// maxRetryQueues bounds the retry queues (one per delay step) a
// RedeliveryBackoff may need.
const maxRetryQueues = 32

// queuePlan is what a subscription declares: its queue, the retry queues
// of its redelivery delays and the dead-letter side.
type queuePlan struct {
	kind      QueueType
	single    bool
	limit     int // failed deliveries before dead-lettering; 0 = none
	deadTopic string
	delays    []time.Duration // the distinct redelivery delays, ascending; nil = none
}

// newQueuePlan resolves the queue options of a subscription with cfg.
func newQueuePlan(cfg broker.SubscribeConfig, topic string, kind QueueType, kindSet, single bool) (queuePlan, error) {
	p := queuePlan{kind: kind, single: single, limit: driver.MaxDeliveriesOr(cfg), deadTopic: driver.DeadLetterTopicOf(topic, cfg)}
	if !kindSet {
		p.kind = Quorum
		if cfg.Group == "" {
			p.kind = Classic
		}
	}
	switch p.kind {
	case Classic, Quorum, Stream:
	default:
		return p, fmt.Errorf("%w: QueueType %q, want %q, %q or %q", broker.ErrInvalidOption, string(p.kind), Classic, Quorum, Stream)
	}
	if cfg.Group == "" && p.kind != Classic {
		return p, fmt.Errorf("%w: QueueType %q needs a group (a private subscription's queue is exclusive, hence classic)", broker.ErrInvalidOption, string(p.kind))
	}
	if single && (cfg.Group == "" || p.kind == Stream) {
		return p, fmt.Errorf("%w: SingleActiveConsumer needs a group and a classic or quorum queue", broker.ErrInvalidOption)
	}
	if p.kind != Stream && cfg.Start.Kind != broker.StartLatest {
		return p, fmt.Errorf("start position %s: %w on a %s queue (only a QueueType(Stream) queue keeps history)", cfg.Start, broker.ErrUnsupported, p.kind)
	}
	if err := checkName("dead-letter topic (exchange name)", p.deadTopic); err != nil {
		return p, err
	}
	if r := cfg.Redelivery; r.Initial > 0 {
		for n := 1; ; n++ {
			d := retryDelay(r, n)
			if d < time.Millisecond {
				return p, fmt.Errorf("%w: redelivery delay %v is below RabbitMQ's 1ms TTL resolution", broker.ErrInvalidOption, d)
			}
			if len(p.delays) > 0 && d == p.delays[len(p.delays)-1] {
				break
			}
			p.delays = append(p.delays, d)
			if len(p.delays) > maxRetryQueues {
				return p, fmt.Errorf("%w: redelivery backoff %v..%v needs more than %d delay steps", broker.ErrInvalidOption, r.Initial, r.Max, maxRetryQueues)
			}
		}
	}
	return p, nil
}

// retryDelay is the delay before redelivery n (1-based) on RabbitMQ: the
// backoff's step n without jitter, so that each step has one retry queue
// of its own (a queue's TTL expires messages in order only when all of
// them wait as long).
func retryDelay(r broker.Backoff, n int) time.Duration {
	d := r.Initial
	for i := 1; i < n && d < r.Max; i++ {
		d *= 2
	}
	return min(d, r.Max)
}

// queueArgs are the arguments of the subscription's own queue on a server
// of major version serverMajor.
func (p queuePlan) queueArgs(serverMajor int) amqp.Table {
	args := amqp.Table{}
	if p.kind != Classic {
		args[argQueueType] = string(p.kind)
	}
	if p.single {
		args[argSingleActive] = true
	}
	if p.kind == Quorum {
		switch {
		case p.limit > 0:
			// The server dead-letters a message whose consumer was lost
			// during its last allowed delivery (it would deliver it limit+1
			// times); a failure the subscription sees is dead-lettered by
			// the subscription itself, with the handler's error.
			args[argDeliveryLimit] = p.limit - 1
			args[argDeadLetterX] = p.deadTopic
			// At least once: the message leaves the queue only once the
			// dead-letter queue has confirmed it.
			args[argDeadLetterStrat] = "at-least-once"
			args[argOverflow] = "reject-publish"
		case serverMajor >= 4:
			// RabbitMQ 4 limits quorum queues to 20 deliveries by default;
			// −1 lifts it. (3.x has no default limit and reads −1 as 0.)
			args[argDeliveryLimit] = -1
		}
	}
	if len(args) == 0 {
		return nil
	}
	return args
}

// retryQueue is the name of the queue that holds queue's messages for d
// before they return to it.
func retryQueue(queue string, d time.Duration) string {
	return queue + ".retry-" + d.String()
}

// retryArgs are the arguments of a retry queue: messages expire after d
// and are dead-lettered back into queue through the default exchange.
func (p queuePlan) retryArgs(queue string, d time.Duration) amqp.Table {
	args := amqp.Table{
		argMessageTTL:    d.Milliseconds(),
		argDeadLetterX:   "",
		argDeadLetterKey: queue,
	}
	if p.kind != Classic {
		args[argQueueType] = string(Quorum)
		args[argDeadLetterStrat] = "at-least-once"
		args[argOverflow] = "reject-publish"
	}
	return args
}

// keptPlan is the plan of the queue that keeps a dead-letter topic's
// messages: the one a default subscription in broker.DeadLetterGroup
// declares, so that such a reader finds it as it would declare it.
func keptPlan(deadTopic string) queuePlan {
	cfg := broker.SubscribeConfig{Group: broker.DeadLetterGroup}
	return queuePlan{kind: Quorum, limit: driver.MaxDeliveriesOr(cfg), deadTopic: broker.DeadLetterTopic(deadTopic)}
}

// keptQueue is the queue name of a topic's broker.DeadLetterGroup.
func keptQueue(deadTopic string) string { return deadTopic + "." + broker.DeadLetterGroup }

// streamOffset is the x-stream-offset consumer argument for start.
func streamOffset(start broker.Position) (any, error) {
	switch start.Kind {
	case broker.StartEarliest:
		return "first", nil
	case broker.StartLatest:
		return "next", nil
	case broker.StartTime:
		return start.Time, nil
	case broker.StartSequence:
		n := start.Sequence
		if !start.Inclusive {
			n++
		}
		return n, nil
	case broker.StartOffset:
		n, err := strconv.ParseInt(start.Offset, 10, 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%w: start offset %q is not a stream offset (a number >= 0)", broker.ErrInvalidOption, start.Offset)
		}
		if !start.Inclusive {
			n++
		}
		return n, nil
	}
	return nil, fmt.Errorf("%w: start position %s", broker.ErrInvalidOption, start)
}

// serverMajor is the major version the server announced (0 when unknown).
func serverMajor(c *amqp.Connection) int {
	v, _ := c.Properties["version"].(string)
	major, _, _ := strings.Cut(v, ".")
	n, _ := strconv.Atoi(major)
	return n
}

// declareError explains a failed queue declaration: an existing queue
// declared with other arguments is ErrInvalidOption naming the options
// that decide them.
func declareError(queue string, err error) error {
	var ae *amqp.Error
	if errors.As(err, &ae) && ae.Code == amqp.PreconditionFailed && strings.Contains(ae.Reason, "inequivalent arg") {
		return driver.MarkFatal(wire(err, broker.ErrInvalidOption,
			"rabbit: queue %q exists with other arguments (%s): subscribe with the options it was declared with (QueueType, SingleActiveConsumer, MaxDeliveries, DeadLetterTo, RedeliveryDelay), another QueueName, or delete it",
			queue, ae.Reason))
	}
	return wireError(fmt.Sprintf("rabbit: declare queue %q", queue), err)
}

// typeMismatch tells, when the declaration of queue as kind failed, whether
// the queue exists with another type: RabbitMQ names only the first
// argument that differs, so a declaration with the type alone asks (on a
// channel of its own, as a refusal closes it).
func typeMismatch(conn *amqp.Connection, queue string, kind QueueType, declared error) error {
	var ae *amqp.Error
	if !errors.As(declared, &ae) || ae.Code != amqp.PreconditionFailed {
		return nil
	}
	ch, err := conn.Channel()
	if err != nil {
		return nil
	}
	defer ch.Close()
	var args amqp.Table
	if kind != Classic {
		args = amqp.Table{argQueueType: string(kind)}
	}
	_, err = ch.QueueDeclare(queue, true, false, false, false, args)
	if !errors.As(err, &ae) || !strings.Contains(ae.Reason, "'"+argQueueType+"'") {
		return nil
	}
	current := string(Classic)
	if _, v, ok := strings.Cut(ae.Reason, "current is the value '"); ok {
		current, _, _ = strings.Cut(v, "'")
	}
	return driver.MarkFatal(wire(declared, broker.ErrInvalidOption,
		"rabbit: queue %q is a %s queue and this subscription declares a %s queue (x-queue-type): subscribe with QueueType(%q) to read it as it is, another QueueName, or delete it",
		queue, current, kind, current))
}
