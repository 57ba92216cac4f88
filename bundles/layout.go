package bundles

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content/oci"
)

// layoutBackend is an OCI image layout directory (DIR[:tag|@digest]). It is read as a stick
// is (stick.go: every open and read with a deadline) and written in place through oras's
// layout store: a blob is renamed into blobs/ only once complete, so a copy that stops is
// resumed by copying again.
type layoutBackend struct{ onePlace }

func (layoutBackend) open(ctx context.Context, a Address, o Options) (Source, error) {
	return openLayout(ctx, a.Path, NewGuard(o.StallTimeout))
}

func (layoutBackend) create(ctx context.Context, a Address, _ Options) (Sink, error) {
	if err := os.MkdirAll(a.Path, 0o755); err != nil {
		return nil, err
	}
	s, err := oci.NewWithContext(ctx, a.Path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", a.Path, err)
	}
	return &layoutSink{Store: s, dir: a.Path}, nil
}

func (layoutBackend) target(ctx context.Context, a Address, _ Options) (Target, error) {
	if fi, err := os.Stat(filepath.Join(a.Path, "oci-layout")); err != nil || fi.IsDir() {
		return nil, fmt.Errorf("%s: not an OCI layout directory", a.Path)
	}
	return oci.NewWithContext(ctx, a.Path)
}

type layoutSink struct {
	*oci.Store
	placedList
	dir string
}

// Commit orders index.json (oras writes it in map order): a layout written twice holds the
// same bytes.
func (s *layoutSink) Commit(context.Context) ([]Placed, error) {
	if err := sortIndex(filepath.Join(s.dir, "index.json")); err != nil {
		return nil, err
	}
	for i := range s.placed {
		s.placed[i].Where = s.dir + ":" + s.placed[i].Tag
	}
	return s.placed, nil
}

func (s *layoutSink) Close() error { return nil }

// sortIndex orders index.json by tag and digest: oras writes it in map order, and an export
// should not differ from the last one only by that.
func sortIndex(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var idx ocispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	sortDescriptors(idx.Manifests)
	out, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	return os.WriteFile(path, out, 0o644)
}

// sortDescriptors orders index entries by reference name, then digest.
func sortDescriptors(ds []ocispec.Descriptor) {
	sort.Slice(ds, func(i, j int) bool {
		a, b := ds[i], ds[j]
		if ra, rb := a.Annotations[ocispec.AnnotationRefName], b.Annotations[ocispec.AnnotationRefName]; ra != rb {
			return ra < rb
		}
		return a.Digest < b.Digest
	})
}
