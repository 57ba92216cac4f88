package store

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// TestRemove: BeginRemove and FinishRemove are one transaction each; the removal keeps every
// revision, leaves no current or last good one, removes a revision still waiting to be
// rolled out, and the next rollout clears the marker. A crash right after BeginRemove leaves
// the removal open, for package rollout to finish.
func TestRemove(t *testing.T) {
	admit := func(t *testing.T, s *Store, rev uint64) {
		t.Helper()
		src, a := admission(t, "site", rev, fmt.Sprintf("p%d", rev))
		if _, err := s.Admit(t.Context(), src, a); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	s := open(t, dir, Options{})
	admit(t, s, 1)
	s.Begin("site", 1, time.Now().Add(time.Hour), "")
	s.SetState("site", 1, StateHealthy, "")
	admit(t, s, 2) // admitted, not rolled out yet (a suspended bundle)

	for _, tc := range []struct {
		name     string
		err      error
		notFound bool
	}{
		{"unknown bundle", s.BeginRemove("elsewhere", 1), true},
		{"not the current revision", s.BeginRemove("site", 2), false},
		{"revision 0", s.BeginRemove("site", 0), false},
	} {
		if tc.err == nil || errors.Is(tc.err, ErrNotFound) != tc.notFound {
			t.Errorf("BeginRemove, %s: %v", tc.name, tc.err)
		}
	}
	if err := s.FinishRemove("site", "nothing open"); err != nil {
		t.Errorf("FinishRemove with no removal open: %v", err)
	}
	if b, _ := s.GetBundle("site"); b.Current != 1 || b.Txn != nil || !b.Removed.IsZero() {
		t.Fatalf("refusals changed the bundle: %+v", b)
	}

	gen, _ := s.Generation()
	var atCrash uint64
	crashAt(t, s, "remove:begun", func() {
		next := crashHook
		crashHook = func(p string) { atCrash, _ = s.Generation(); next(p) }
		if err := s.BeginRemove("site", 1); err != nil {
			t.Fatal(err)
		}
	})
	if atCrash != gen+1 {
		t.Fatalf("BeginRemove took %d transactions, want 1", atCrash-gen)
	}
	s = open(t, dir, Options{})
	b, _ := s.GetBundle("site")
	if b.Txn == nil || b.Txn.Phase != StateRemoving || b.Txn.Revision != 1 || b.Current != 1 {
		t.Fatalf("after a crash past BeginRemove: %+v, want the removal of 1 open", b)
	}
	if r, _ := s.GetRevision("site", 2); r.State != StateRemoved {
		t.Fatalf("revision 2, waiting to be rolled out, is %s after BeginRemove", r.State)
	}
	if err := s.BeginRemove("site", 1); err == nil {
		t.Fatal("a second BeginRemove was accepted while the first is open")
	}

	gen, _ = s.Generation()
	if err := s.FinishRemove("site", "removed: pruned 3"); err != nil {
		t.Fatal(err)
	}
	if after, _ := s.Generation(); after != gen+1 {
		t.Fatalf("FinishRemove took %d transactions, want 1", after-gen)
	}
	b, _ = s.GetBundle("site")
	if b.Txn != nil || b.Current != 0 || b.LastGood != 0 || b.Removed.IsZero() || b.Newest != 2 {
		t.Fatalf("after FinishRemove: %+v", b)
	}
	revs, _ := s.Revisions("site")
	if len(revs) != 2 || revs[0].State != StateRemoved || revs[0].History[len(revs[0].History)-1].Note != "removed: pruned 3" {
		t.Fatalf("history after the removal: %+v", revs)
	}
	evs, _ := s.Events(0, 100)
	if last := evs[len(evs)-1]; last.Reason != "Removed" || last.Revision != 1 {
		t.Fatalf("last event %+v, want Removed of revision 1", last)
	}

	// Retention keeps what it kept; the removal is not a reason to drop history.
	if _, err := s.GC(); err != nil {
		t.Fatal(err)
	}
	if revs, _ := s.Revisions("site"); len(revs) != 2 {
		t.Fatalf("GC after the removal kept %d revisions", len(revs))
	}

	// A revision admitted after the removal is verified (rolled out as usual); its rollout
	// clears the marker.
	admit(t, s, 3)
	if r, _ := s.GetRevision("site", 3); r.State != StateVerified {
		t.Fatalf("revision 3 admitted after the removal is %s", r.State)
	}
	s.Begin("site", 3, time.Now().Add(time.Hour), "")
	if b, _ := s.GetBundle("site"); b.Current != 3 || !b.Removed.IsZero() {
		t.Fatalf("after the next rollout began: %+v", b)
	}
}
