package store

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/memory"
	"oras.land/oras-go/v2/content/oci"
)

// admission stores a manifest and one blob in a memory source and describes them.
func admission(t testing.TB, name string, rev uint64, payload string) (*memory.Store, Admission) {
	t.Helper()
	src := memory.New()
	push := func(mt string, b []byte) ocispec.Descriptor {
		d := content.NewDescriptorFromBytes(mt, b)
		if err := src.Push(t.Context(), d, bytes.NewReader(b)); err != nil && !strings.Contains(err.Error(), "exists") {
			t.Fatal(err)
		}
		return d
	}
	blob := push("application/octet-stream", []byte(payload))
	man := push(ocispec.MediaTypeImageManifest, []byte(fmt.Sprintf(`{"rev":%d,"blob":%q}`, rev, blob.Digest)))
	return src, Admission{Name: name, Revision: rev, Version: "1.0.0", Manifest: man, Blobs: []ocispec.Descriptor{blob}, Source: "test"}
}

func open(t *testing.T, dir string, opts Options) *Store {
	t.Helper()
	if opts.SpaceMargin == 0 {
		opts.SpaceMargin = 1
	}
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func blobCount(t *testing.T, s *Store) int {
	t.Helper()
	e, err := os.ReadDir(filepath.Join(s.Dir(), "blobs", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	return len(e)
}

func TestOpenRefusesASecondHolder(t *testing.T) {
	dir := t.TempDir()
	open(t, dir, Options{})
	start := time.Now()
	_, err := Open(dir, Options{LockTimeout: 200 * time.Millisecond})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "another ferry daemon") {
		t.Fatalf("err = %v, want ErrLocked with a hint", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("the lock timeout was not honoured")
	}
}

func TestOpenRefusesAnotherSchema(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put([]byte("schema"), []byte("99")) })
	s.Close()
	if _, err := Open(dir, Options{}); err == nil || !strings.Contains(err.Error(), "schema 99") {
		t.Fatalf("err = %v, want the schema named", err)
	}
}

func TestAdmitAndAntiDowngrade(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	src, a := admission(t, "site", 5, "five")
	if _, err := s.Admit(t.Context(), src, a); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		rev     uint64
		payload string
		want    error
	}{
		{4, "older", ErrDowngrade},
		{5, "five", ErrAlreadyAdmitted},         // a replay of what is there (an ErrDowngrade too)
		{5, "five, but other", ErrEquivocation}, // same number, other digest
	} {
		src, a := admission(t, "site", tt.rev, tt.payload)
		before := blobCount(t, s)
		if _, err := s.Admit(t.Context(), src, a); !errors.Is(err, tt.want) {
			t.Fatalf("revision %d %q: err = %v, want %v", tt.rev, tt.payload, err, tt.want)
		}
		if blobCount(t, s) != before {
			t.Fatalf("refused admission left blobs behind")
		}
	}
	// Another bundle name has its own sequence.
	src, other := admission(t, "other", 1, "one")
	if _, err := s.Admit(t.Context(), src, other); err != nil {
		t.Fatal(err)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

func TestAdmitRefusesWhatDoesNotFit(t *testing.T) {
	s := open(t, t.TempDir(), Options{SpaceMargin: 1 << 62})
	src, a := admission(t, "site", 1, "x")
	if _, err := s.Admit(t.Context(), src, a); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("err = %v, want ErrNoSpace", err)
	}
	if blobCount(t, s) != 0 {
		t.Fatal("a refused admission wrote blobs")
	}
}

func TestRetentionKeepsCurrentAndLastGood(t *testing.T) {
	s := open(t, t.TempDir(), Options{Keep: 3})
	for rev := uint64(1); rev <= 8; rev++ {
		src, a := admission(t, "site", rev, fmt.Sprintf("payload %d", rev))
		if _, err := s.Admit(t.Context(), src, a); err != nil {
			t.Fatal(err)
		}
		if rev == 2 {
			if err := s.SetState("site", 2, StateHealthy, "rolled out"); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.SetState("site", 4, StateApplying, "rollback to 4"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GC(); err != nil {
		t.Fatal(err)
	}
	revs, err := s.Revisions("site")
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	for _, r := range revs {
		got = append(got, r.Revision)
	}
	if fmt.Sprint(got) != "[2 4 6 7 8]" {
		t.Fatalf("kept %v, want [2 4 6 7 8] (newest 3, last good 2, current 4)", got)
	}
	// Each kept revision has manifest + blob; nothing else survives.
	if n := blobCount(t, s); n != 2*len(got) {
		t.Fatalf("%d blobs for %d revisions", n, len(got))
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	if b, _ := s.GetBundle("site"); b.Newest != 8 || b.LastGood != 2 || b.Current != 4 {
		t.Fatalf("bundle record %+v", b)
	}
	// Deleted revisions stay below the anti-downgrade line.
	src, a := admission(t, "site", 3, "payload 3")
	if _, err := s.Admit(t.Context(), src, a); !errors.Is(err, ErrDowngrade) {
		t.Fatalf("re-admitting a collected revision: err = %v", err)
	}
}

func TestOpenRecoversFromACrash(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	src, a := admission(t, "site", 1, "kept")
	if _, err := s.Admit(t.Context(), src, a); err != nil {
		t.Fatal(err)
	}
	// What a crash mid-admission leaves: a half-written temp file and a whole blob that no
	// revision lists yet, named in the admission's pending record.
	orphan := digest.FromString("orphan")
	s.db.Update(func(tx *bolt.Tx) error {
		return putJSON(tx.Bucket(bucketMeta), pendingKey("site", 2), []digest.Digest{orphan})
	})
	s.Close()
	os.WriteFile(filepath.Join(dir, "tmp", "blob-123"), []byte("half"), 0o600)
	os.WriteFile(filepath.Join(dir, "blobs", "sha256", orphan.Encoded()), []byte("orphan"), 0o600)
	// A file no record names: kept, since the record that would name it may be the damage.
	stray := filepath.Join(dir, "blobs", "sha256", strings.Repeat("ab", 32))
	os.WriteFile(stray, []byte("stray"), 0o600)
	s = open(t, dir, Options{})
	if e, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(e) != 0 {
		t.Fatal("temp files survived recovery")
	}
	if _, err := os.Stat(filepath.Join(dir, "blobs", "sha256", orphan.Encoded())); !os.IsNotExist(err) {
		t.Fatal("the blob of an admission that never committed survived recovery")
	}
	if _, err := os.Stat(stray); err != nil {
		t.Fatal("recovery removed a blob no record names")
	}
	if _, err := s.GetRevision("site", 2); !errors.Is(err, ErrNotFound) {
		t.Fatalf("revision 2 half-admitted: %v", err)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetRevision("site", 1); err != nil {
		t.Fatal(err)
	}
}

func TestEventsRecordChanges(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	src, a := admission(t, "site", 1, "x")
	s.Admit(t.Context(), src, a)
	s.SetState("site", 1, StateApplying, "")
	s.SetState("site", 1, StateHealthy, "all Ready")
	ev, err := s.Events(0, 10)
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, e := range ev {
		reasons = append(reasons, e.Reason)
	}
	if strings.Join(reasons, ",") != "Admitted,applying,healthy" {
		t.Fatalf("events %v", reasons)
	}
	if later, _ := s.Events(ev[1].Seq, 10); len(later) != 1 {
		t.Fatalf("events after %d: %d", ev[1].Seq, len(later))
	}
}

func TestWriteFileAtomic(t *testing.T) {
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := WriteFileAtomic(p, []byte("a: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(p, []byte("a: 2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	fi, _ := os.Stat(p)
	if string(b) != "a: 2\n" || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%q %v", b, fi.Mode())
	}
	if e, _ := os.ReadDir(filepath.Dir(p)); len(e) != 1 {
		t.Fatalf("temp files left: %d entries", len(e))
	}
}

func TestStateDirIsAnOCILayout(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	src, a := admission(t, "site", 3, "x")
	if _, err := s.Admit(t.Context(), src, a); err != nil {
		t.Fatal(err)
	}
	layout, err := oci.NewFromFS(t.Context(), os.DirFS(s.Dir()))
	if err != nil {
		t.Fatalf("state dir is not an OCI layout: %v", err)
	}
	d, err := layout.Resolve(t.Context(), "site-3")
	if err != nil || d.Digest != a.Manifest.Digest {
		t.Fatalf("site-3 resolves to %v, %v; want %s", d.Digest, err, a.Manifest.Digest)
	}
}

// TestRollbackIsTheOnlyWayBack: moving the current revision back to a stored one is a state
// change, not an admission; the newest-admitted line stays where it was, so the old revision
// (or anything below the line) still cannot be admitted again.
func TestRollbackIsTheOnlyWayBack(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	for rev := uint64(1); rev <= 3; rev++ {
		src, a := admission(t, "site", rev, fmt.Sprintf("r%d", rev))
		if _, err := s.Admit(t.Context(), src, a); err != nil {
			t.Fatal(err)
		}
	}
	s.SetState("site", 3, StateFailed, "health checks failed")
	if err := s.SetState("site", 1, StateApplying, "rollback to 1"); err != nil {
		t.Fatal(err)
	}
	b, _ := s.GetBundle("site")
	if b.Current != 1 || b.Newest != 3 {
		t.Fatalf("after rollback: %+v", b)
	}
	src, a := admission(t, "site", 2, "r2 again")
	if _, err := s.Admit(t.Context(), src, a); !errors.Is(err, ErrEquivocation) {
		t.Fatalf("re-admitting below the line after a rollback: err = %v", err)
	}
	if err := s.SetState("site", 9, StateApplying, "rollback to a revision never stored"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("rollback to an unknown revision: err = %v", err)
	}
}

// TestRolloutTransaction: Begin opens "applying N, last good M, deadline T"; failed turns it
// to rolling back; rolled-back restores Current to M and closes it; inventories go with
// their revision at GC.
func TestRolloutTransaction(t *testing.T) {
	s := open(t, t.TempDir(), Options{Keep: 1})
	for rev := uint64(1); rev <= 2; rev++ {
		src, a := admission(t, "app", rev, fmt.Sprint("payload", rev))
		if _, err := s.Admit(t.Context(), src, a); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SetState("app", 1, StateHealthy, ""); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	if err := s.Begin("app", 2, deadline, "last good 1"); err != nil {
		t.Fatal(err)
	}
	if err := s.PutInventory("app", 2, "web", []byte(`{"x":1}`)); err != nil {
		t.Fatal(err)
	}
	b, _ := s.GetBundle("app")
	if b.Current != 2 || b.LastGood != 1 || b.Txn == nil || b.Txn.Revision != 2 || b.Txn.LastGood != 1 || b.Txn.Phase != StateApplying || !b.Txn.Deadline.Equal(deadline.UTC()) {
		t.Fatalf("after Begin: %+v %+v", b, b.Txn)
	}
	if err := s.SetState("app", 2, StateFailed, "not healthy"); err != nil {
		t.Fatal(err)
	}
	if b, _ = s.GetBundle("app"); b.Txn == nil || b.Txn.Phase != StateFailed || b.Txn.Reason != "not healthy" {
		t.Fatalf("after failed: %+v", b.Txn)
	}
	if err := s.SetState("app", 2, StateRolledBack, "rolled back to 1"); err != nil {
		t.Fatal(err)
	}
	if b, _ = s.GetBundle("app"); b.Current != 1 || b.Txn != nil {
		t.Fatalf("after rolled back: %+v", b)
	}
	if err := s.SetSuspended("app", true); err != nil {
		t.Fatal(err)
	}
	if b, _ = s.GetBundle("app"); !b.Suspended {
		t.Fatal("not suspended")
	}
	// Revision 2 is neither current nor last good and Keep is 1... it is the newest, kept;
	// revision 1 is current: both stay. A third revision makes 2 collectable.
	src, a := admission(t, "app", 3, "payload3")
	if _, err := s.Admit(t.Context(), src, a); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GC(); err != nil {
		t.Fatal(err)
	}
	if inv, _ := s.Inventories("app", 2); len(inv) != 0 {
		t.Fatalf("revision 2's inventory outlived it: %v", inv)
	}
	if err := s.PutInventory("app", 2, "web", nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("inventory for a collected revision: %v", err)
	}
}

// Blobs of every size around the direct-write alignment and chunk land whole and verified.
func TestWriteBlobSizes(t *testing.T) {
	st, err := Open(t.TempDir(), Options{SpaceMargin: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, n := range []int{0, 1, 4095, 4096, 4097, directChunk - 1, directChunk, directChunk + 1, 2*directChunk + 4099} {
		b := make([]byte, n)
		rand.Read(b)
		d := content.NewDescriptorFromBytes("application/octet-stream", b)
		if err := st.writeBlob(bytes.NewReader(b), d); err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		got, err := os.ReadFile(st.blobPath(d.Digest))
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("%d bytes: stored %d bytes, %v", n, len(got), err)
		}
		// One byte more than the descriptor says, or one byte changed: refused, nothing kept.
		bad := append(append([]byte{}, b...), 'x')
		bd := d
		bd.Digest = digest.FromBytes(append([]byte{}, b...))
		if err := st.writeBlob(bytes.NewReader(bad), bd); err == nil {
			t.Fatalf("%d bytes: a longer stream was accepted", n)
		}
	}
	if left, _ := os.ReadDir(filepath.Join(st.Dir(), "tmp")); len(left) != 0 {
		t.Errorf("tmp/ keeps %d files", len(left))
	}
}

// A blob the node already holds is not read from the source again; the Admitted event says
// how many were taken from the store.
func TestAdmitSaysWhichBlobsWereHeld(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	src, a := admission(t, "site", 1, "shared layer")
	if _, err := s.Admit(t.Context(), src, a); err != nil {
		t.Fatal(err)
	}
	src2, a2 := admission(t, "site", 2, "shared layer") // same blob, new manifest
	if _, err := s.Admit(t.Context(), src2, a2); err != nil {
		t.Fatal(err)
	}
	evs, err := s.Events(0, 10)
	if err != nil || len(evs) != 2 {
		t.Fatalf("events %v %v", evs, err)
	}
	if strings.Contains(evs[0].Message, "already on the node") || !strings.Contains(evs[1].Message, "1 of 2 blobs were already on the node") {
		t.Errorf("Admitted events:\n%s\n%s", evs[0].Message, evs[1].Message)
	}
}

func TestPausedTimeDoesNotCountAgainstTheDeadline(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	src, a := admission(t, "site", 1, "one")
	if _, err := s.Admit(t.Context(), src, a); err != nil {
		t.Fatal(err)
	}
	if err := s.PauseTxn("site"); err != nil { // no rollout open: nothing to pause
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute).UTC().Truncate(time.Second)
	if err := s.Begin("site", 1, deadline, ""); err != nil {
		t.Fatal(err)
	}
	s.PauseTxn("site")
	b, _ := s.GetBundle("site")
	paused := b.Txn.Paused
	if paused.IsZero() {
		t.Fatal("the pause was not recorded")
	}
	s.PauseTxn("site") // a second report keeps the first time
	if b, _ = s.GetBundle("site"); !b.Txn.Paused.Equal(paused) {
		t.Fatalf("paused moved from %s to %s", paused, b.Txn.Paused)
	}
	// An hour away (k3s down) moves the deadline by that hour.
	if got := b.Txn.DeadlineAt(paused.Add(time.Hour)); !got.Equal(deadline.Add(time.Hour)) {
		t.Fatalf("deadline after an hour paused = %s, want %s", got, deadline.Add(time.Hour))
	}
	// Resuming opens the rollout again with the deadline it was given, and runs.
	if err := s.Begin("site", 1, deadline.Add(time.Hour), ""); err != nil {
		t.Fatal(err)
	}
	if b, _ = s.GetBundle("site"); !b.Txn.Paused.IsZero() || !b.Txn.DeadlineAt(time.Now().Add(time.Hour)).Equal(deadline.Add(time.Hour)) {
		t.Fatalf("txn after resuming %+v", b.Txn)
	}
}

func TestWriteFailedNamesTheStateDirectoryErrors(t *testing.T) {
	for _, err := range []error{syscall.ENOSPC, syscall.EROFS, syscall.EDQUOT, syscall.EIO, fmt.Errorf("put inventory: %w", syscall.ENOSPC), ErrNoSpace} {
		if !WriteFailed(err) {
			t.Errorf("WriteFailed(%v) = false", err)
		}
	}
	for _, err := range []error{errors.New("no space left on device in a message only"), os.ErrNotExist, ErrDowngrade} {
		if WriteFailed(err) {
			t.Errorf("WriteFailed(%v) = true", err)
		}
	}
}
