package daemon

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"oras.land/oras-go/v2/content/memory"

	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/store"
)

// A thin archive leaves out the blobs a node holds: the node that holds them admits it
// (reading those from its store), a node that does not refuses it, names what is missing,
// and writes nothing.
func TestThinArchiveIsAdmittedOnlyWhereTheRestIsHeld(t *testing.T) {
	k := newKey(t)
	src := memory.New()
	rev1 := makeBundle(t, src, "app", 1, "unchanged")
	sign(t, src, rev1, k)
	rev2 := makeBundle(t, src, "app", 2, "unchanged") // the same component layer
	sign(t, src, rev2, k)
	b2, err := bundles.Open(t.Context(), src, rev2)
	if err != nil {
		t.Fatal(err)
	}
	layer := b2.Manifest.Layers[0]

	node := openStore(t, t.TempDir())
	defer node.Close()
	if _, err := Ingest(t.Context(), node, memSource{src}, rev1, k.policy, "test"); err != nil {
		t.Fatal(err)
	}
	thin := filepath.Join(t.TempDir(), "thin.tar")
	dst, _ := bundles.ParseAddress(thin)
	sink, err := bundles.Create(t.Context(), dst, bundles.Options{StagingDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	omit := func(d digest.Digest) bool { return node.HasBlob(d) }
	if _, err := bundles.CopyBundle(t.Context(), memSource{src}, rev2, sink, bundles.CopyOptions{Omit: omit}); err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	sink.Close()
	open := func() (bundles.Source, error) {
		s, _, err := bundles.OpenSource(t.Context(), dst, bundles.Options{})
		return s, err
	}
	s, err := open()
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := s.Exists(t.Context(), layer); ok {
		t.Fatal("the thin archive holds the layer the node has")
	}
	s.Close()

	// A node without revision 1 refuses it and is left as it was.
	other := openStore(t, t.TempDir())
	defer other.Close()
	before := snapshot(t, other)
	s, _ = open()
	_, err = Ingest(t.Context(), other, s, rev2, k.policy, "test")
	s.Close()
	if !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), layer.Digest.String()) {
		t.Fatalf("err = %v, want ErrIncomplete naming %s", err, layer.Digest)
	}
	if after := snapshot(t, other); after != before {
		t.Fatalf("a refused thin archive changed the store:\n%s\nwas\n%s", after, before)
	}

	// The node that holds revision 1 admits it.
	s, _ = open()
	defer s.Close()
	rev, err := Ingest(t.Context(), node, s, rev2, k.policy, "test")
	if err != nil {
		t.Fatal(err)
	}
	if rev.Revision != 2 || rev.State != store.StateVerified {
		t.Fatalf("admitted %+v", rev)
	}
	if err := node.Check(); err != nil {
		t.Fatal(err)
	}
}
