package store

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// nodeWithHistory is a state directory holding revisions 1 and 2 of "site", 2 healthy, and
// the list of blob files it holds; the store is closed.
func nodeWithHistory(t *testing.T) (dir string, blobs []string) {
	t.Helper()
	dir = t.TempDir()
	s := open(t, dir, Options{})
	for i, payload := range []string{"one", "two"} {
		src, a := admission(t, "site", uint64(i+1), payload)
		if _, err := s.Admit(t.Context(), src, a); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Begin("site", 2, time.Now().Add(time.Hour), ""); err != nil {
		t.Fatal(err)
	}
	if err := s.SetState("site", 2, StateHealthy, ""); err != nil {
		t.Fatal(err)
	}
	s.Close()
	return dir, blobFiles(t, dir)
}

func blobFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, "blobs", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func truncateTo(t *testing.T, path string, size int64) {
	t.Helper()
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
}

// expectHistory checks that a reopened store still knows revision 2 healthy and current, and
// still refuses revision 1 (the anti-downgrade line).
func expectHistory(t *testing.T, s *Store) {
	t.Helper()
	b, err := s.GetBundle("site")
	if err != nil || b.Newest != 2 || b.Current != 2 || b.LastGood != 2 {
		t.Fatalf("bundle = %+v, %v; want revision 2 current and good", b, err)
	}
	src, a := admission(t, "site", 1, "one")
	if _, err := s.Admit(t.Context(), src, a); !errors.Is(err, ErrDowngrade) {
		t.Fatalf("revision 1 offered again: %v, want ErrDowngrade", err)
	}
}

func TestTruncatedDatabaseIsRestoredFromItsBackup(t *testing.T) {
	dir, blobs := nodeWithHistory(t)
	db := filepath.Join(dir, dbFile)
	truncateTo(t, db, 3*int64(os.Getpagesize())) // cuts pages in use

	s := open(t, dir, Options{})
	expectHistory(t, s)
	if got := blobFiles(t, dir); !slices.Equal(got, blobs) {
		t.Fatalf("blobs after restore %v, want %v", got, blobs)
	}
	evs, _ := s.Events(0, 100)
	if e := evs[len(evs)-1]; e.Reason != "StateRestored" || !strings.Contains(e.Message, backupFile) {
		t.Fatalf("last event %+v, want StateRestored naming the backup", e)
	}
	aside, _ := filepath.Glob(db + ".damaged-*")
	if len(aside) != 1 {
		t.Fatalf("damaged database kept aside as %v, want one file", aside)
	}
}

func TestDamagedDatabaseWithoutBackupIsRefusedNotReset(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, db string)
	}{
		{"truncated", func(t *testing.T, db string) { truncateTo(t, db, 3*int64(os.Getpagesize())) }},
		{"zero-length", func(t *testing.T, db string) { truncateTo(t, db, 0) }},
		{"missing", func(t *testing.T, db string) { os.Remove(db) }},
		{"not a database", func(t *testing.T, db string) { os.WriteFile(db, []byte("hello, bbolt"), 0o600) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, blobs := nodeWithHistory(t)
			os.Remove(filepath.Join(dir, backupFile))
			tc.damage(t, filepath.Join(dir, dbFile))
			_, err := Open(dir, Options{SpaceMargin: 1})
			if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), filepath.Join(dir, dbFile)) || !strings.Contains(err.Error(), "move "+dir+" away") {
				t.Fatalf("Open = %v, want ErrDamaged naming the file and what to do", err)
			}
			if got := blobFiles(t, dir); !slices.Equal(got, blobs) {
				t.Fatalf("blobs after a refused start %v, want %v (nothing deleted)", got, blobs)
			}
		})
	}
}

func TestEmptyDatabaseIsRestoredAndKeepsTheAntiDowngradeLine(t *testing.T) {
	dir, blobs := nodeWithHistory(t)
	truncateTo(t, filepath.Join(dir, dbFile), 0)
	s := open(t, dir, Options{})
	expectHistory(t, s)
	if got := blobFiles(t, dir); !slices.Equal(got, blobs) {
		t.Fatalf("blobs %v, want %v", got, blobs)
	}
}

func TestNewNodeStartsWithoutBackup(t *testing.T) {
	dir := t.TempDir()
	// A crash while bbolt first created the file leaves it empty; nothing was ever kept.
	os.WriteFile(filepath.Join(dir, dbFile), nil, 0o600)
	s := open(t, dir, Options{})
	if bs, err := s.Bundles(); err != nil || len(bs) != 0 {
		t.Fatalf("bundles %v, %v", bs, err)
	}
	if _, err := os.Stat(filepath.Join(dir, backupFile)); err != nil {
		t.Fatalf("a new node writes its first backup: %v", err)
	}
}

func TestBackupFollowsEachChange(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	src, a := admission(t, "site", 7, "seven")
	if _, err := s.Admit(t.Context(), src, a); err != nil {
		t.Fatal(err)
	}
	if err := s.SetSuspended("site", true); err != nil {
		t.Fatal(err)
	}
	b, err := bolt.Open(filepath.Join(dir, backupFile), 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	b.View(func(tx *bolt.Tx) error {
		got, err := getBundle(tx, "site")
		if err != nil || got.Newest != 7 || !got.Suspended {
			t.Fatalf("backup holds %+v, %v; want revision 7 admitted and the bundle suspended", got, err)
		}
		return nil
	})
}

// TestFlippedBytesNeverCostABlob damages data pages of the database as a failing disk would
// (16 random bytes) and opens it again, with and without a backup. Whatever the damage hits,
// Open must not panic, and no blob a revision listed may be deleted.
func TestFlippedBytesNeverCostABlob(t *testing.T) {
	outcomes := map[string]int{}
	defer func() { t.Logf("outcomes: %v", outcomes) }()
	for seed := range uint64(24) {
		dir, blobs := nodeWithHistory(t)
		if seed%2 == 1 {
			os.Remove(filepath.Join(dir, backupFile))
		}
		db := filepath.Join(dir, dbFile)
		bdb, err := bolt.Open(db, 0o600, &bolt.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		var used int
		bdb.View(func(tx *bolt.Tx) error { used = int(tx.Size()); return nil })
		bdb.Close()
		data, err := os.ReadFile(db)
		if err != nil {
			t.Fatal(err)
		}
		page := os.Getpagesize()
		rng := rand.New(rand.NewPCG(seed, 42))
		for range 16 {
			i := 2*page + rng.IntN(used-2*page) // in the pages in use, past the two meta pages
			data[i] ^= byte(1 + rng.IntN(255))
		}
		if err := os.WriteFile(db, data, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(dir, Options{SpaceMargin: 1})
		outcome := "refused"
		if err == nil {
			outcome = "opened"
			if evs, _ := s.Events(0, 1000); len(evs) > 0 && evs[len(evs)-1].Reason == "StateRestored" {
				outcome = "restored"
			}
			if _, err := s.GC(); err != nil {
				t.Logf("seed %d: GC: %v", seed, err)
			}
			s.Close()
		}
		outcomes[outcome]++
		if got := blobFiles(t, dir); !slices.Equal(got, blobs) {
			t.Fatalf("seed %d: blobs %v after damage, want %v (Open: %v)", seed, got, blobs, err)
		}
	}
}

func TestGCDeletesNothingWhenTheDatabaseNamesMissingBlobs(t *testing.T) {
	dir, blobs := nodeWithHistory(t)
	s := open(t, dir, Options{})
	// A blob no revision lists (it would be collected) and a listed one lost.
	stray := filepath.Join(dir, "blobs", "sha256", strings.Repeat("ab", 32))
	os.WriteFile(stray, []byte("stray"), 0o600)
	os.Remove(filepath.Join(dir, "blobs", "sha256", blobs[0]))
	for range 2 {
		if n, err := s.GC(); err != nil || n != 0 {
			t.Fatalf("GC = %d, %v; want nothing removed", n, err)
		}
	}
	if _, err := os.Stat(stray); err != nil {
		t.Fatal("GC removed a blob while the database disagreed with the content store")
	}
	evs, _ := s.Events(0, 100)
	held := 0
	for _, e := range evs {
		if e.Reason == "GCHeld" {
			held++
		}
	}
	if held != 1 {
		t.Fatalf("%d GCHeld events, want 1", held)
	}
}
