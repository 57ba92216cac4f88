package bundles

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// tagOrder is a sink that records the tags set on it, in order.
type tagOrder struct {
	Sink
	tags []string
}

func (t *tagOrder) Tag(ctx context.Context, d ocispec.Descriptor, ref string) error {
	t.tags = append(t.tags, ref)
	return t.Sink.Tag(ctx, d, ref)
}

// The bundle's tag is set after its signatures are copied: a node polling a registry that a
// copy is filling never sees the new revision unsigned.
func TestCopyTagsTheBundleLast(t *testing.T) {
	store, desc, _ := packed(t)
	if _, err := AppendSignature(t.Context(), store, desc, NewPayload("x", desc.Digest), "c2ln"); err != nil {
		t.Fatal(err)
	}
	dst, _ := ParseAddress(filepath.Join(t.TempDir(), "layout"))
	s, err := Create(t.Context(), dst, Options{})
	if err != nil {
		t.Fatal(err)
	}
	rec := &tagOrder{Sink: s}
	if _, err := CopyBundle(t.Context(), memSource{store}, desc, rec, CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	if len(rec.tags) != 2 || !strings.HasSuffix(rec.tags[0], ".sig") || rec.tags[1] != "1.4.0" {
		t.Fatalf("tags set in the order %v, want the signature's then the bundle's", rec.tags)
	}
}

// A mirror refused before it sent anything (its source is not there) leaves no staging
// behind; one that copied blobs keeps them for the next run (the conformance test).
func TestRefusedMirrorLeavesNoStaging(t *testing.T) {
	staging := filepath.Join(t.TempDir(), "staging")
	src, _ := ParseAddress(filepath.Join(t.TempDir(), "missing.tar"))
	dst, _ := ParseAddress(filepath.Join(t.TempDir(), "out.tar"))
	if _, err := Mirror(t.Context(), src, dst, Options{StagingDir: staging}, MirrorOptions{}); err == nil {
		t.Fatal("a mirror from a missing archive succeeded")
	}
	if left, _ := os.ReadDir(staging); len(left) != 0 {
		t.Fatalf("staging left behind: %v", left)
	}
}
