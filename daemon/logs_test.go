package daemon

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestLogRing: the daemon's log reaches the journal handler unchanged and the ring keeps
// what ferry logs shows: info and above, attributes flat (groups dotted, WithAttrs
// included), selectable by level, bundle, sequence and count, bounded.
func TestLogRing(t *testing.T) {
	var journal bytes.Buffer
	ring := newLogRing()
	log := slog.New(&ringHandler{next: slog.NewJSONHandler(&journal, &slog.HandlerOptions{Level: slog.LevelDebug}), ring: ring})

	log.Debug("polling", "source", "usb")
	log.Info("admitted", "bundle", "edge", "revision", 3, "took", 1500*time.Millisecond)
	log.With("bundle", "other").WithGroup("rollout").Warn("slow", "component", "web")
	log.Error("rollout failed", "bundle", "edge", "err", errors.New("Deployment web: not ready"))

	if !strings.Contains(journal.String(), `"msg":"polling"`) || strings.Count(journal.String(), "\n") != 4 {
		t.Errorf("the journal does not get every record:\n%s", journal.String())
	}
	all, _ := ring.since(LogQuery{Level: slog.LevelInfo})
	if len(all) != 3 || all[0].Message != "admitted" || all[0].Seq != 1 {
		t.Fatalf("ring holds %+v, want the 3 records at info and above", all)
	}
	if a := all[0].Attrs; a["bundle"] != "edge" || a["revision"] != int64(3) || a["took"] != "1.5s" {
		t.Errorf("attributes of admitted: %#v", a)
	}
	if a := all[1].Attrs; a["bundle"] != "other" || a["rollout.component"] != "web" {
		t.Errorf("attributes of slow (WithAttrs, WithGroup): %#v", a)
	}
	for _, tc := range []struct {
		q    LogQuery
		want []string
	}{
		{LogQuery{Level: slog.LevelWarn}, []string{"slow", "rollout failed"}},
		{LogQuery{Level: slog.LevelInfo, Bundle: "edge"}, []string{"admitted", "rollout failed"}},
		{LogQuery{Level: slog.LevelInfo, After: 2}, []string{"rollout failed"}},
		{LogQuery{Level: slog.LevelInfo, Limit: 1}, []string{"rollout failed"}},
		{LogQuery{Level: slog.LevelError, Bundle: "other"}, nil},
	} {
		got, _ := ring.since(tc.q)
		var msgs []string
		for _, r := range got {
			msgs = append(msgs, r.Message)
		}
		if strings.Join(msgs, ",") != strings.Join(tc.want, ",") {
			t.Errorf("query %+v: %v, want %v", tc.q, msgs, tc.want)
		}
	}

	for i := range logKeep + 10 {
		log.Info("many", "i", i)
	}
	kept, _ := ring.since(LogQuery{Level: slog.LevelInfo})
	if len(kept) != logKeep || kept[len(kept)-1].Seq != uint64(3+logKeep+10) {
		t.Errorf("ring holds %d records ending at %d, want the last %d", len(kept), kept[len(kept)-1].Seq, logKeep)
	}
}

// TestLogRingWait: a follower's request returns the record that arrives while it waits, and
// returns empty when its context ends.
func TestLogRingWait(t *testing.T) {
	ring := newLogRing()
	log := slog.New(&ringHandler{next: slog.DiscardHandler, ring: ring})
	go func() {
		time.Sleep(50 * time.Millisecond)
		log.Info("later", "bundle", "edge")
	}()
	got := ring.wait(t.Context(), LogQuery{Level: slog.LevelInfo, Bundle: "edge"}, time.Minute)
	if len(got) != 1 || got[0].Message != "later" {
		t.Fatalf("wait returned %+v", got)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if got := ring.wait(ctx, LogQuery{Level: slog.LevelInfo, After: 1}, time.Minute); len(got) != 0 {
		t.Errorf("wait after its context ended returned %+v", got)
	}
}

// TestLogQueryRefusals: a wrong parameter of GET /v1/logs is named in the 400.
func TestLogQueryRefusals(t *testing.T) {
	for _, tc := range []struct{ query, want string }{
		{"level=loud", "parameter level"},
		{"after=-1", "parameter after"},
		{"limit=0", "parameter limit"},
		{"wait=forever", "parameter wait"},
	} {
		_, _, err := logQuery(httptest.NewRequest("GET", "/v1/logs?"+tc.query, nil))
		var ae *apiError
		if !errors.As(err, &ae) || ae.status != 400 || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want a 400 naming %s", tc.query, err, tc.want)
		}
	}
	q, wait, err := logQuery(httptest.NewRequest("GET", "/v1/logs?level=WARN&wait=1h&bundle=edge", nil))
	if err != nil || q.Level != slog.LevelWarn || wait != maxLogWait || q.Bundle != "edge" {
		t.Errorf("level=WARN&wait=1h&bundle=edge: %+v %s %v", q, wait, err)
	}
}
