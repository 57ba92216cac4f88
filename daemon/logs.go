package daemon

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// The daemon's own log, kept in memory for `ferry logs`: a technician on the node reads it
// through the API socket without journalctl's rights or knowing the unit's name. The
// journal (stdout) stays the record; this is the recent part of it, bounded.

// logKeep is how many records the daemon keeps in memory for `ferry logs`.
const logKeep = 2000

// LogRecord is one record of the daemon's log.
type LogRecord struct {
	Seq     uint64         `json:"seq"`
	Time    time.Time      `json:"time"`
	Level   string         `json:"level"`
	Message string         `json:"msg"`
	Attrs   map[string]any `json:"attrs,omitempty"`
}

// logRing holds the last logKeep records; changed is closed and replaced at each record, so
// a follower waits on it.
type logRing struct {
	mu      sync.Mutex
	recs    []LogRecord // oldest first
	next    uint64
	changed chan struct{}
}

func newLogRing() *logRing { return &logRing{next: 1, changed: make(chan struct{})} }

func (r *logRing) add(rec LogRecord) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec.Seq = r.next
	r.next++
	if len(r.recs) == logKeep {
		copy(r.recs, r.recs[1:])
		r.recs = r.recs[:logKeep-1]
	}
	r.recs = append(r.recs, rec)
	close(r.changed)
	r.changed = make(chan struct{})
}

// LogQuery selects records: after a sequence number, at a level or above, of one bundle
// (its "bundle" attribute), at most Limit of them (the newest).
type LogQuery struct {
	After  uint64
	Level  slog.Level
	Bundle string
	Limit  int
}

// since returns the records q selects and a channel closed when the next record arrives.
func (r *logRing) since(q LogQuery) ([]LogRecord, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := []LogRecord{}
	for _, rec := range r.recs {
		if rec.Seq <= q.After || levelOf(rec.Level) < q.Level {
			continue
		}
		if q.Bundle != "" && rec.Attrs["bundle"] != q.Bundle {
			continue
		}
		out = append(out, rec)
	}
	if q.Limit > 0 && len(out) > q.Limit {
		out = out[len(out)-q.Limit:]
	}
	return out, r.changed
}

// wait returns what q selects, waiting up to d for a first record when there is none yet
// (`ferry logs -f`), or until ctx ends.
func (r *logRing) wait(ctx context.Context, q LogQuery, d time.Duration) []LogRecord {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		recs, changed := r.since(q)
		if len(recs) > 0 || d <= 0 {
			return recs
		}
		select {
		case <-changed:
		case <-t.C:
			return recs
		case <-ctx.Done():
			return recs
		}
	}
}

func levelOf(s string) slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return slog.LevelInfo
	}
	return l
}

// ParseLogLevel reads debug, info, warn or error (any case), as slog names them.
func ParseLogLevel(s string) (slog.Level, error) {
	var l slog.Level
	err := l.UnmarshalText([]byte(s))
	return l, err
}

// ringHandler passes each record to next and keeps those at Info or above in ring.
type ringHandler struct {
	next  slog.Handler
	ring  *logRing
	attrs []slog.Attr // from WithAttrs, with their groups' prefix in the key
	group string      // the prefix of WithGroup, "a.b."
}

func (h *ringHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || h.next.Enabled(ctx, l)
}

func (h *ringHandler) Handle(ctx context.Context, rec slog.Record) error {
	var err error
	if h.next.Enabled(ctx, rec.Level) {
		err = h.next.Handle(ctx, rec)
	}
	if rec.Level < slog.LevelInfo {
		return err
	}
	attrs := map[string]any{}
	for _, a := range h.attrs {
		putAttr(attrs, "", a)
	}
	rec.Attrs(func(a slog.Attr) bool {
		putAttr(attrs, h.group, a)
		return true
	})
	if len(attrs) == 0 {
		attrs = nil
	}
	h.ring.add(LogRecord{Time: rec.Time.UTC(), Level: rec.Level.String(), Message: rec.Message, Attrs: attrs})
	return err
}

// putAttr flattens a into m, groups joined with dots as slog's text handler writes them.
func putAttr(m map[string]any, prefix string, a slog.Attr) {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += a.Key + "."
		}
		for _, g := range v.Group() {
			putAttr(m, p, g)
		}
		return
	}
	if a.Key == "" {
		return
	}
	switch v.Kind() {
	case slog.KindString:
		m[prefix+a.Key] = v.String()
	case slog.KindInt64, slog.KindUint64, slog.KindFloat64, slog.KindBool:
		m[prefix+a.Key] = v.Any()
	default: // durations, times, errors: as the text handler writes them
		m[prefix+a.Key] = v.String()
	}
}

func (h *ringHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.next = h.next.WithAttrs(as)
	c.attrs = append([]slog.Attr(nil), h.attrs...)
	for _, a := range as {
		a.Key = h.group + a.Key
		c.attrs = append(c.attrs, a)
	}
	return &c
}

func (h *ringHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.next = h.next.WithGroup(name)
	c.group = h.group + name + "."
	return &c
}
