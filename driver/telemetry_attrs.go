package driver

import (
	"slices"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// opKey names one operation's attributes: where, what, for which group
// and partition.
type opKey struct{ topic, typ, name, group, partition string }

// opAttrs are an operation's attributes, built once per Instruments and
// key, so that each message pays for neither the slice nor the metric
// attribute set (which the SDK would sort and hash every time).
type opAttrs struct {
	kvs []attribute.KeyValue     // read-only: base, destination, operation, group, partition
	ok  metric.MeasurementOption // kvs as a metric attribute set
}

// maxCachedOps bounds the cache of an Instruments: past it (a program
// publishing to ever new topics) attributes are built for each call.
const maxCachedOps = 4096

// op returns k's attributes, cached.
func (in *Instruments) op(k opKey) *opAttrs {
	if v, ok := in.ops.Load(k); ok {
		return v.(*opAttrs)
	}
	kvs := make([]attribute.KeyValue, 0, len(in.base)+5)
	kvs = append(kvs, in.base...)
	kvs = append(kvs,
		attribute.String(AttrDestination, k.topic),
		attribute.String(AttrOperationType, k.typ),
		attribute.String(AttrOperationName, k.name))
	if k.group != "" {
		kvs = append(kvs, attribute.String(AttrConsumerGroup, k.group))
	}
	if k.partition != "" {
		kvs = append(kvs, attribute.String(AttrPartition, k.partition))
	}
	a := &opAttrs{kvs: kvs, ok: metric.WithAttributeSet(attribute.NewSet(kvs...))}
	if in.nops.Load() < maxCachedOps {
		if v, loaded := in.ops.LoadOrStore(k, a); loaded {
			return v.(*opAttrs)
		}
		in.nops.Add(1)
	}
	return a
}

// measure is the metric attributes of the operation, with error.type
// errType when not empty.
func (a *opAttrs) measure(errType string) metric.MeasurementOption {
	if errType == "" {
		return a.ok
	}
	return metric.WithAttributes(append(slices.Clip(a.kvs), attribute.String(AttrErrorType, errType))...)
}
