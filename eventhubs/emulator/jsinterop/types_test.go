package jsinterop_test

import (
	"strings"
	"time"
)

// The JSON that conformance.mjs reads and prints. Bodies are []byte, which
// encoding/json carries as base64, as the script does.

// jsEventIn is an event for the SDK to send.
type jsEventIn struct {
	Body        []byte            `json:"body"`
	Properties  map[string]string `json:"properties,omitempty"`
	ContentType string            `json:"contentType,omitempty"`
	MessageID   string            `json:"messageId,omitempty"`
}

// jsBatch is one batch the SDK sends: to a partition key, a partition id,
// or (neither) the hub.
type jsBatch struct {
	PartitionKey *string     `json:"partitionKey,omitempty"`
	PartitionID  *string     `json:"partitionId,omitempty"`
	Events       []jsEventIn `json:"events"`
	// FillSize fills the batch, before Events, with events of this many
	// bytes (byte i%256 repeated, message ID fill-i) until it is full.
	FillSize int `json:"fillSize,omitempty"`
}

// jsPosition is an SDK EventPosition: "earliest", "latest", or one of
// offset, sequenceNumber and enqueuedOn (Unix ms).
type jsPosition any

type seqPos struct {
	SequenceNumber int64 `json:"sequenceNumber"`
	IsInclusive    bool  `json:"isInclusive,omitempty"`
}

type offsetPos struct {
	Offset      string `json:"offset"`
	IsInclusive bool   `json:"isInclusive,omitempty"`
}

type timePos struct {
	EnqueuedOn int64 `json:"enqueuedOn"`
}

// jsReceive asks the SDK's EventHubConsumerClient.subscribe for Count
// events from PartitionID (every partition when nil; PartitionCount is then
// how many must be attached before ThenSend).
type jsReceive struct {
	ConnectionString string     `json:"connectionString,omitempty"`
	ConsumerGroup    string     `json:"consumerGroup,omitempty"`
	PartitionID      *string    `json:"partitionId,omitempty"`
	PartitionCount   int        `json:"partitionCount,omitempty"`
	Position         jsPosition `json:"position"`
	Count            int        `json:"count"`
	ThenSend         []jsBatch  `json:"thenSend,omitempty"`
	StopOnError      bool       `json:"stopOnError,omitempty"`
	// TrackLastEnqueued sets the SDK's trackLastEnqueuedEventProperties.
	TrackLastEnqueued bool `json:"trackLastEnqueuedEventProperties,omitempty"`
}

// jsEvent is an event the SDK received.
type jsEvent struct {
	PartitionID     string         `json:"partitionId"`
	SequenceNumber  int64          `json:"sequenceNumber"`
	Offset          string         `json:"offset"`
	EnqueuedTimeUtc time.Time      `json:"enqueuedTimeUtc"`
	PartitionKey    *string        `json:"partitionKey"`
	Body            []byte         `json:"body"`
	Properties      map[string]any `json:"properties"`
	ContentType     *string        `json:"contentType"`
	MessageID       *string        `json:"messageId"`
}

// jsError is an error the SDK reported (an AggregateError has Errors).
type jsError struct {
	Name      string    `json:"name"`
	Code      string    `json:"code"`
	Retryable *bool     `json:"retryable"`
	Message   string    `json:"message"`
	Errors    []jsError `json:"errors"`
}

// leaves returns the innermost errors of e (e itself when it aggregates
// nothing).
func (e jsError) leaves() []jsError {
	if len(e.Errors) == 0 {
		return []jsError{e}
	}
	var out []jsError
	for _, x := range e.Errors {
		out = append(out, x.leaves()...)
	}
	return out
}

type jsReceived struct {
	Events       []jsEvent        `json:"events"`
	Errors       []jsError        `json:"errors"`
	LastEnqueued []jsLastEnqueued `json:"lastEnqueued"`
}

// jsLastEnqueued is the SDK's LastEnqueuedEventProperties after a batch.
type jsLastEnqueued struct {
	PartitionID    string    `json:"partitionId"`
	SequenceNumber *int64    `json:"sequenceNumber"`
	Offset         *string   `json:"offset"`
	EnqueuedOn     time.Time `json:"enqueuedOn"`
	RetrievedOn    time.Time `json:"retrievedOn"`
}

// jsHubProperties and jsPartitionProperties are the SDK's
// EventHubProperties and PartitionProperties.
type jsHubProperties struct {
	Name           string    `json:"name"`
	CreatedOn      time.Time `json:"createdOn"`
	PartitionIDs   []string  `json:"partitionIds"`
	IsGeoDrEnabled bool      `json:"isGeoDrEnabled"`
}

type jsPartitionProperties struct {
	EventHubName               string    `json:"eventHubName"`
	PartitionID                string    `json:"partitionId"`
	BeginningSequenceNumber    int64     `json:"beginningSequenceNumber"`
	LastEnqueuedSequenceNumber int64     `json:"lastEnqueuedSequenceNumber"`
	LastEnqueuedOffset         string    `json:"lastEnqueuedOffset"`
	LastEnqueuedOnUtc          time.Time `json:"lastEnqueuedOnUtc"`
	IsEmpty                    bool      `json:"isEmpty"`
}

func ptr[T any](v T) *T { return &v }

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

// byMessageID indexes events by message ID; duplicates are reported.
func byMessageID(evs []jsEvent) (map[string]jsEvent, []string) {
	out := map[string]jsEvent{}
	var dups []string
	for _, ev := range evs {
		id := deref(ev.MessageID)
		if _, ok := out[id]; ok {
			dups = append(dups, id)
		}
		out[id] = ev
	}
	return out, dups
}

func seqs(evs []jsEvent) []int64 {
	out := make([]int64, len(evs))
	for i, ev := range evs {
		out[i] = ev.SequenceNumber
	}
	return out
}

// wrongKey returns cs with its shared access key replaced.
func wrongKey(cs, key string) string {
	return strings.Replace(cs, "SharedAccessKey="+key, "SharedAccessKey=d3Jvbmcta2V5LWZvci10aGUtdGVzdA==", 1)
}
