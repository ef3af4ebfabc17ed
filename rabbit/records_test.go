package rabbit_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
)

// logRecord is one captured slog record: its message and its attributes,
// those added through Logger.With included (keys of groups are prefixed
// with "group.").
type logRecord struct {
	level slog.Level
	msg   string
	attrs map[string]slog.Value
}

func (r logRecord) str(key string) string {
	v, ok := r.attrs[key]
	if !ok {
		return ""
	}
	return v.String()
}

func (r logRecord) String() string {
	keys := make([]string, 0, len(r.attrs))
	for k, v := range r.attrs {
		keys = append(keys, k+"="+v.String())
	}
	return fmt.Sprintf("%s %q %s", r.level, r.msg, strings.Join(keys, " "))
}

// logRecords keeps every record (debug and up) logged through its logger,
// for tests that assert on lifecycle steps rather than on log text.
type logRecords struct {
	mu   sync.Mutex
	recs []logRecord
}

func (l *logRecords) logger() *slog.Logger { return slog.New(&recordHandler{store: l}) }

// len is the number of records so far: a mark for since.
func (l *logRecords) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.recs)
}

// since returns the records logged after mark (a len result) whose
// message is msg; every record after mark when msg is "".
func (l *logRecords) since(mark int, msg string) []logRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []logRecord
	for _, r := range l.recs[mark:] {
		if msg == "" || r.msg == msg {
			out = append(out, r)
		}
	}
	return out
}

type recordHandler struct {
	store  *logRecords
	attrs  []slog.Attr // from WithAttrs, keys already prefixed
	prefix string      // from WithGroup
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	rec := logRecord{level: r.Level, msg: r.Message, attrs: make(map[string]slog.Value, len(h.attrs)+r.NumAttrs())}
	for _, a := range h.attrs {
		rec.attrs[a.Key] = a.Value.Resolve()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.attrs[h.prefix+a.Key] = a.Value.Resolve()
		return true
	})
	h.store.mu.Lock()
	h.store.recs = append(h.store.recs, rec)
	h.store.mu.Unlock()
	return nil
}

func (h *recordHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append([]slog.Attr(nil), h.attrs...)
	for _, a := range as {
		c.attrs = append(c.attrs, slog.Attr{Key: h.prefix + a.Key, Value: a.Value})
	}
	return &c
}

func (h *recordHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.prefix = h.prefix + name + "."
	return &c
}
