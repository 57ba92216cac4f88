package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

type crashed struct{}

// crashAt runs fn with the store stopping (as a crash would) at point, and reports whether it
// got there. The store is closed afterwards, as the process would have been.
func crashAt(t *testing.T, s *Store, point string, fn func()) {
	t.Helper()
	reached := false
	crashHook = func(p string) {
		if p == point {
			reached = true
			panic(crashed{})
		}
	}
	defer func() { crashHook = nil }()
	func() {
		defer func() {
			if r := recover(); r != nil {
				if _, ok := r.(crashed); !ok {
					panic(r)
				}
			}
		}()
		fn()
	}()
	s.Close()
	if !reached {
		t.Fatalf("crash point %s was not reached", point)
	}
}

// listedOnly checks that the content store holds exactly the blobs kept revisions list, and
// that no pending record is left.
func listedOnly(t *testing.T, s *Store) {
	t.Helper()
	listed := map[string]bool{}
	bs, _ := s.Bundles()
	for _, b := range bs {
		revs, err := s.Revisions(b.Name)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range revs {
			for _, d := range r.Blobs {
				listed[d.Digest.Encoded()] = true
			}
		}
	}
	files := blobFiles(t, s.Dir())
	if len(files) != len(listed) {
		t.Fatalf("%d blob files for %d listed blobs", len(files), len(listed))
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketMeta).Cursor()
		if k, _ := c.Seek([]byte("pending/")); strings.HasPrefix(string(k), "pending/") {
			t.Fatalf("pending record %s left", k)
		}
		return nil
	})
}

func TestCrashPoints(t *testing.T) {
	admit := func(t *testing.T, s *Store, rev uint64) error {
		src, a := admission(t, "site", rev, fmt.Sprintf("payload %d", rev))
		_, err := s.Admit(t.Context(), src, a)
		return err
	}
	t.Run("admission copied, not recorded", func(t *testing.T) {
		dir := t.TempDir()
		s := open(t, dir, Options{})
		admit(t, s, 1)
		crashAt(t, s, "admit:copied", func() { admit(t, s, 2) })
		s = open(t, dir, Options{})
		if _, err := s.GetRevision("site", 2); !errors.Is(err, ErrNotFound) {
			t.Fatalf("revision 2 after the crash: %v", err)
		}
		listedOnly(t, s)
		if err := admit(t, s, 2); err != nil {
			t.Fatalf("revision 2 offered again after the crash: %v", err)
		}
	})
	for _, point := range []string{"gc:records-dropped", "gc:files-removed"} {
		t.Run(point, func(t *testing.T) {
			dir := t.TempDir()
			s := open(t, dir, Options{Keep: 2})
			s.crashFree(t, func() {
				for rev := uint64(1); rev <= 4; rev++ {
					admit(t, s, rev)
				}
			})
			crashAt(t, s, point, func() { s.GC() })
			s = open(t, dir, Options{Keep: 2})
			revs, _ := s.Revisions("site")
			if len(revs) != 2 || revs[0].Revision != 3 {
				t.Fatalf("kept %d revisions after the crash, want 3 and 4", len(revs))
			}
			listedOnly(t, s)
		})
	}
	t.Run("restore: damaged file set aside, backup not yet copied", func(t *testing.T) {
		dir, _ := nodeWithHistory(t)
		truncateTo(t, filepath.Join(dir, dbFile), 3*int64(os.Getpagesize()))
		reached := false
		crashHook = func(p string) {
			if p == "restore:set-aside" {
				reached = true
				panic(crashed{})
			}
		}
		func() {
			defer func() { recover(); crashHook = nil }()
			Open(dir, Options{SpaceMargin: 1})
		}()
		if !reached {
			t.Fatal("crash point not reached")
		}
		// The lock of the crashed Open died with its process; here, with its file.
		s := open(t, dir, Options{LockTimeout: 100 * time.Millisecond})
		expectHistory(t, s)
	})
}

// crashFree runs fn with no crash hook (the setup of a crash test).
func (s *Store) crashFree(t *testing.T, fn func()) {
	t.Helper()
	crashHook = nil
	fn()
}

func TestBeginRollbackSupersedesNewerInOneTransaction(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	for rev := uint64(1); rev <= 3; rev++ {
		src, a := admission(t, "site", rev, fmt.Sprintf("p%d", rev))
		if _, err := s.Admit(t.Context(), src, a); err != nil {
			t.Fatal(err)
		}
	}
	for _, rev := range []uint64{1, 2} {
		s.Begin("site", rev, time.Now().Add(time.Hour), "")
		s.SetState("site", rev, StateHealthy, "")
	}
	gen, _ := s.Generation()
	if err := s.BeginRollback("site", 1, time.Now().Add(time.Hour), "manual"); err != nil {
		t.Fatal(err)
	}
	if after, _ := s.Generation(); after != gen+1 {
		t.Fatalf("BeginRollback took %d transactions, want 1", after-gen)
	}
	b, _ := s.GetBundle("site")
	if b.Txn == nil || b.Txn.Revision != 1 || b.Current != 1 {
		t.Fatalf("bundle %+v, want a rollout of 1 open", b)
	}
	for _, rev := range []uint64{2, 3} {
		if r, _ := s.GetRevision("site", rev); r.State != StateRolledBack {
			t.Fatalf("revision %d is %s, want rolled-back", rev, r.State)
		}
	}
}
