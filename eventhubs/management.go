package eventhubs

import (
	"context"
	"fmt"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/isobroker/broker"
	"github.com/isobroker/broker/driver"
)

// HubProperties describes an event hub, as read from $management.
type HubProperties struct {
	// Name of the hub.
	Name string
	// CreatedAt is when the hub was created.
	CreatedAt time.Time
	// PartitionIDs lists the partitions.
	PartitionIDs []string
	// GeoReplicationFactor is above 1 for geo-replicated hubs (0 when the
	// service does not report it).
	GeoReplicationFactor int64
}

// PartitionProperties describes one partition, as read from $management.
type PartitionProperties struct {
	// Hub is the event hub's name.
	Hub string
	// PartitionID is the partition's id.
	PartitionID string
	// BeginSequenceNumber is the first retained sequence number.
	BeginSequenceNumber int64
	// LastEnqueuedSequenceNumber is the newest sequence number (-1 when
	// the partition never held an event).
	LastEnqueuedSequenceNumber int64
	// LastEnqueuedOffset is the newest offset.
	LastEnqueuedOffset string
	// LastEnqueuedTime is when the newest event was stored.
	LastEnqueuedTime time.Time
	// IsEmpty reports that the partition holds no event.
	IsEmpty bool
}

// HubProperties reads hub's properties ("" = the configured EventHub) over
// $management. It blocks until the reply arrives or ctx ends; retryable
// failures (connection loss, busy) are retried within Config.Retry.
func (b *Broker) HubProperties(ctx context.Context, hub string) (HubProperties, error) {
	var out HubProperties
	hub, err := b.hubOrDefault(hub)
	if err != nil {
		return out, err
	}
	err = b.withRetry(ctx, "management", hub, func(ctx context.Context, c *amqpConn) error {
		p, err := c.readHub(ctx, hub)
		out = p
		return err
	})
	return out, err
}

// PartitionProperties reads one partition's properties over $management,
// like HubProperties.
func (b *Broker) PartitionProperties(ctx context.Context, hub, partitionID string) (PartitionProperties, error) {
	var out PartitionProperties
	hub, err := b.hubOrDefault(hub)
	if err != nil {
		return out, err
	}
	err = b.withRetry(ctx, "management", hub+"/Partitions/"+partitionID, func(ctx context.Context, c *amqpConn) error {
		p, err := c.readPartition(ctx, hub, partitionID)
		out = p
		return err
	})
	return out, err
}

func (b *Broker) hubOrDefault(hub string) (string, error) {
	if hub == "" {
		hub = b.cfg.EventHub
	}
	if hub == "" {
		return "", fmt.Errorf("eventhubs: %w: no event hub given and no EntityPath configured", broker.ErrInvalidOption)
	}
	return hub, nil
}

// withRetry runs op on the live connection, retrying retryable failures
// with backoff within Config.Retry and ctx.
//
// The bounded retry loops (this one and Publish's) share retryDelay; the
// unbounded ones (a receiver's re-attach, the eager reconnect) use backoff
// directly.
func (b *Broker) withRetry(ctx context.Context, opName, entity string, op func(context.Context, *amqpConn) error) error {
	if b.isClosing() {
		return fmt.Errorf("eventhubs: %s: %w", opName, broker.ErrClosed)
	}
	for attempt := 0; ; attempt++ {
		c, err := b.getConn(ctx)
		if err == nil {
			err = op(ctx, c)
			if err == nil {
				return nil
			}
		}
		if b.isDead() {
			return fmt.Errorf("eventhubs: %s %q: %w", opName, entity, broker.ErrClosed)
		}
		err = wrapErr(opName, entity, err)
		act, _ := classify(err)
		if act == actReconnect {
			b.invalidate(c, err)
		}
		delay, again := b.retryDelay(attempt, act)
		if !again {
			return err
		}
		b.log.Debug("retrying", "op", opName, "entity", entity, "attempt", attempt+1, "action", act.String(), "delay", delay, "err", err)
		if !b.sleep(ctx, delay) {
			if ctx.Err() != nil {
				return fmt.Errorf("eventhubs: %s %q: %w (last error: %v)", opName, entity, ctx.Err(), err)
			}
			return fmt.Errorf("eventhubs: %s %q: %w", opName, entity, broker.ErrClosed)
		}
	}
}

// retryDelay decides what follows failed attempt (0-based) of a bounded
// operation whose error classify mapped to act: no retry (false) for
// fatal, ownership and context errors and once Config.Retry.MaxAttempts
// retries have run; otherwise the wait before the next attempt — none
// before the first retry after a lost connection or link, which is
// rebuilt at once, the backoff otherwise.
func (b *Broker) retryDelay(attempt int, act action) (time.Duration, bool) {
	switch act {
	case actContext, actFatal, actStolen:
		return 0, false
	}
	if attempt >= b.cfg.Retry.MaxAttempts {
		return 0, false
	}
	if attempt == 0 && act != actRetry {
		return 0, true
	}
	return b.backoff(attempt + 1), true
}

// mgmtRequest sends a READ to $management and returns the reply's map.
func (c *amqpConn) mgmtRequest(ctx context.Context, hub string, props map[string]any) (map[string]any, error) {
	entity := hub
	if p, ok := props["partition"]; ok {
		entity = fmt.Sprintf("%s/Partitions/%v", hub, p)
	}
	tok, err := c.b.cfg.getToken(ctx, c.b.cfg.audience(hub))
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, driver.MarkFatal(&Error{Op: "management", Entity: entity, Description: "the token source failed", sentinel: broker.ErrUnauthorized, cause: err, act: actFatal})
	}
	l, err := c.rpc(ctx, "$management")
	if err != nil {
		return nil, err
	}
	defer c.releaseRPC(l)
	ap := map[string]any{"operation": "READ", "name": hub, "security_token": tok.value}
	for k, v := range props {
		ap[k] = v
	}
	c.touch()
	resp, status, desc, err := l.call(ctx, c.b.life(), &amqp.Message{ApplicationProperties: ap, Value: amqp.Null{}})
	if err != nil {
		return nil, err
	}
	if status < 200 || status > 299 {
		return nil, statusError("management", entity, status, desc)
	}
	m, ok := toStringMap(resp.Value)
	if !ok {
		return nil, fmt.Errorf("eventhubs: management %q: reply body is %T, want a map", entity, resp.Value)
	}
	return m, nil
}

func (c *amqpConn) readHub(ctx context.Context, hub string) (HubProperties, error) {
	m, err := c.mgmtRequest(ctx, hub, map[string]any{"type": "com.microsoft:eventhub"})
	if err != nil {
		return HubProperties{}, err
	}
	p := HubProperties{Name: hub}
	if s, ok := m["name"].(string); ok {
		p.Name = s
	}
	if t, ok := m["created_at"].(time.Time); ok {
		p.CreatedAt = t
	}
	switch ids := m["partition_ids"].(type) {
	case []string:
		p.PartitionIDs = append([]string(nil), ids...)
	case []any:
		for _, v := range ids {
			p.PartitionIDs = append(p.PartitionIDs, fmt.Sprint(v))
		}
	}
	if len(p.PartitionIDs) == 0 {
		return p, fmt.Errorf("eventhubs: management %q: reply lists no partition_ids", hub)
	}
	p.GeoReplicationFactor, _ = toInt64(m["georeplication_factor"])
	return p, nil
}

func (c *amqpConn) readPartition(ctx context.Context, hub, id string) (PartitionProperties, error) {
	m, err := c.mgmtRequest(ctx, hub, map[string]any{"type": "com.microsoft:partition", "partition": id})
	if err != nil {
		return PartitionProperties{}, err
	}
	p := PartitionProperties{Hub: hub, PartitionID: id}
	var ok bool
	if p.BeginSequenceNumber, ok = toInt64(m["begin_sequence_number"]); !ok {
		return p, fmt.Errorf("eventhubs: management %q partition %s: begin_sequence_number missing", hub, id)
	}
	if p.LastEnqueuedSequenceNumber, ok = toInt64(m["last_enqueued_sequence_number"]); !ok {
		return p, fmt.Errorf("eventhubs: management %q partition %s: last_enqueued_sequence_number missing", hub, id)
	}
	p.LastEnqueuedOffset, _ = m["last_enqueued_offset"].(string)
	p.LastEnqueuedTime, _ = m["last_enqueued_time_utc"].(time.Time)
	p.IsEmpty, _ = m["is_partition_empty"].(bool)
	return p, nil
}

func toStringMap(v any) (map[string]any, bool) {
	switch m := v.(type) {
	case map[string]any:
		return m, true
	case map[any]any:
		out := make(map[string]any, len(m))
		for k, v := range m {
			out[fmt.Sprint(k)] = v
		}
		return out, true
	}
	return nil, false
}

func toInt64(v any) (int64, bool) {
	switch n := v.(type) {
	case int64:
		return n, true
	case int32:
		return int64(n), true
	case int16:
		return int64(n), true
	case int8:
		return int64(n), true
	case int:
		return int64(n), true
	case uint64:
		return int64(n), true
	case uint32:
		return int64(n), true
	}
	return 0, false
}
