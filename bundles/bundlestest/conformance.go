// Package bundlestest holds the contract every place a bundle lives keeps (a registry, an OCI
// layout directory, a tar file, an S3 object): the bundles package runs it against the
// layout and tar backends, the integration tests against the testbed's registry and S3
// server.
package bundlestest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/memory"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"

	"github.com/ferrygitops/ferry/bundles"
)

// Fixture is a bundle in memory with everything a copy must carry: one component layer, a
// carried image (index → manifest → config and layer), a cosign signature and attestation
// under the tag scheme, and an OCI 1.1 referrer.
type Fixture struct {
	Store    *memory.Store
	Bundle   ocispec.Descriptor
	Image    ocispec.Descriptor
	Referrer ocispec.Descriptor
	// Layer is the component layer, the blob the lying sources below tamper with.
	Layer ocispec.Descriptor
}

// NewFixture builds a Fixture; version is the bundle's version (its tag by default).
func NewFixture(t testing.TB, version string) *Fixture {
	t.Helper()
	ctx := context.Background()
	f := &Fixture{Store: memory.New()}
	push := func(mediaType string, b []byte) ocispec.Descriptor {
		d := content.NewDescriptorFromBytes(mediaType, b)
		if err := f.Store.Push(ctx, d, bytes.NewReader(b)); err != nil && !errors.Is(err, errdef.ErrAlreadyExists) {
			t.Fatal(err)
		}
		return d
	}
	manifest := func(m ocispec.Manifest) ocispec.Descriptor {
		m.SchemaVersion, m.MediaType = 2, ocispec.MediaTypeImageManifest
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		d := push(ocispec.MediaTypeImageManifest, b)
		d.ArtifactType = m.ArtifactType
		return d
	}
	// A carried image: an index over one platform manifest, its config and a 1 MiB layer.
	layer := push(ocispec.MediaTypeImageLayerGzip, bytes.Repeat([]byte("image layer "+version), 1<<16))
	cfg := push(ocispec.MediaTypeImageConfig, []byte(`{"architecture":"amd64","os":"linux"}`))
	im := manifest(ocispec.Manifest{Config: cfg, Layers: []ocispec.Descriptor{layer}})
	im.Platform = &ocispec.Platform{Architecture: "amd64", OS: "linux"}
	idx, err := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{im}})
	if err != nil {
		t.Fatal(err)
	}
	f.Image = push(ocispec.MediaTypeImageIndex, idx)

	var tree bytes.Buffer
	if err := bundles.PackFiles(t.TempDir(), ".", nil, &tree); err != nil {
		t.Fatal(err)
	}
	meta := &bundles.Metadata{
		SchemaVersion: bundles.SchemaVersion, Name: "conformance", Version: version, Revision: 1,
		Created:    time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC),
		Components: []bundles.Component{{Name: "web", Type: bundles.TypeKustomize, Kustomize: &bundles.KustomizeSpec{Path: "."}}},
		Images:     []bundles.Image{{Name: "registry.example/app:1", Descriptor: f.Image}},
	}
	if f.Bundle, err = bundles.Pack(ctx, f.Store, meta, [][]byte{tree.Bytes()}); err != nil {
		t.Fatal(err)
	}
	b, err := bundles.Open(ctx, f.Store, f.Bundle)
	if err != nil {
		t.Fatal(err)
	}
	f.Layer = b.Manifest.Layers[0]
	if err := f.Store.Tag(ctx, f.Bundle, version); err != nil {
		t.Fatal(err)
	}
	if _, err := bundles.AppendSignature(ctx, f.Store, f.Bundle, bundles.NewPayload("conformance", f.Bundle.Digest), "c2lnbmF0dXJl"); err != nil {
		t.Fatal(err)
	}
	// An attestation under the tag scheme and a referrer: content a copy carries unread.
	statement := push("application/vnd.dsse.envelope.v1+json", []byte(`{"payloadType":"application/vnd.in-toto+json","payload":"e30=","signatures":[]}`))
	empty := push(ocispec.MediaTypeEmptyJSON, []byte("{}"))
	att := manifest(ocispec.Manifest{Config: empty, Layers: []ocispec.Descriptor{statement}})
	if err := f.Store.Tag(ctx, att, bundles.AttestationTag(f.Bundle)); err != nil {
		t.Fatal(err)
	}
	subject := ocispec.Descriptor{MediaType: f.Bundle.MediaType, Digest: f.Bundle.Digest, Size: f.Bundle.Size}
	f.Referrer = manifest(ocispec.Manifest{ArtifactType: "application/vnd.example.sbom+json", Config: empty,
		Layers: []ocispec.Descriptor{push("application/json", []byte(`{"sbom":"`+version+`"}`))}, Subject: &subject})
	return f
}

// Source is the fixture's store as a bundles.Source.
func (f *Fixture) Source() bundles.Source { return memSource{f.Store} }

type memSource struct{ *memory.Store }

func (memSource) Close() error { return nil }

// Backend says how to reach one backend's places.
type Backend struct {
	// NewAddress returns the address of a place that does not exist yet (a repository, a
	// file, a key), for a destination or its tag name "" (the version is used).
	NewAddress func(t *testing.T) bundles.Address
	Options    bundles.Options
}

// Run holds the backend to the contract.
func Run(t *testing.T, be Backend) {
	t.Run("copy and read back", func(t *testing.T) { copyAndRead(t, be) })
	t.Run("an interrupted copy resumes", func(t *testing.T) { resume(t, be) })
	t.Run("a lying or truncated source writes nothing", func(t *testing.T) { lying(t, be) })
	t.Run("concurrent reads", func(t *testing.T) { concurrent(t, be) })
}

// put copies the fixture into a new place and commits it.
func put(t *testing.T, be Backend, f *Fixture, src bundles.Source) bundles.Address {
	t.Helper()
	a := be.NewAddress(t)
	sink, err := bundles.Create(t.Context(), a, be.Options)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	if _, err := bundles.CopyBundle(t.Context(), src, f.Bundle, sink, bundles.CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	placed, err := sink.Commit(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(placed) != 1 || placed[0].Digest != f.Bundle.Digest.String() || placed[0].Where == "" {
		t.Fatalf("placed %+v", placed)
	}
	return readable(t, a, placed[0].Where)
}

// readable is the address to read a committed bundle from: where the sink says it went.
func readable(t *testing.T, a bundles.Address, where string) bundles.Address {
	t.Helper()
	if a.Kind == bundles.KindRegistry {
		where = "oci://" + where
	}
	r, err := bundles.ParseAddress(where)
	if err != nil {
		t.Fatalf("where %q: %v", where, err)
	}
	return r
}

// putAndOpen copies the fixture into a new place and opens it; the source is closed when
// the test ends.
func putAndOpen(t *testing.T, be Backend, f *Fixture) (bundles.Address, bundles.Source, ocispec.Descriptor) {
	t.Helper()
	a := put(t, be, f, f.Source())
	src, desc, err := bundles.OpenSource(t.Context(), a, be.Options)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return a, src, desc
}

func copyAndRead(t *testing.T, be Backend) {
	f := NewFixture(t, "1.0.0")
	a, src, desc := putAndOpen(t, be, f)
	if desc.Digest != f.Bundle.Digest {
		t.Fatalf("resolved %s, want %s", desc.Digest, f.Bundle.Digest)
	}
	want := graph(t, f.Store, f)
	for _, d := range want {
		ok, err := src.Exists(t.Context(), d)
		if err != nil || !ok {
			t.Fatalf("Exists(%s %s) = %v, %v", d.MediaType, d.Digest, ok, err)
		}
		if got, wantB := fetch(t, src, d), fetch(t, f.Store, d); !bytes.Equal(got, wantB) {
			t.Fatalf("%s: %d bytes differ from the source's %d", d.Digest, len(got), len(wantB))
		}
	}
	absent := content.NewDescriptorFromBytes("application/octet-stream", []byte("not there"))
	if ok, err := src.Exists(t.Context(), absent); ok || err != nil {
		t.Fatalf("Exists(absent) = %v, %v", ok, err)
	}
	if rc, err := src.Fetch(t.Context(), absent); err == nil {
		rc.Close()
		t.Fatal("Fetch(absent) succeeded")
	}
	tags, err := bundles.BundleTags(t.Context(), src, a)
	if err != nil || strings.Join(tags, ",") != "1.0.0" {
		t.Fatalf("bundle tags %v, %v", tags, err)
	}
	for _, tag := range []string{bundles.SignatureTag(f.Bundle), bundles.AttestationTag(f.Bundle)} {
		if _, err := src.Resolve(t.Context(), tag); err != nil {
			t.Fatalf("resolve %s: %v", tag, err)
		}
	}
	sigs, err := bundles.ReadSignatures(t.Context(), src, desc)
	if err != nil || len(sigs.Layers) != 1 || sigs.Layers[0].Base64 != "c2lnbmF0dXJl" {
		t.Fatalf("signatures %+v, %v", sigs, err)
	}
	graphSrc, ok := src.(content.ReadOnlyGraphStorage)
	if !ok {
		t.Fatalf("%T lists no referrers", src)
	}
	refs, err := registry.Referrers(t.Context(), graphSrc, desc, "application/vnd.example.sbom+json")
	if err != nil || len(refs) != 1 || refs[0].Digest != f.Referrer.Digest {
		t.Fatalf("referrers %v, %v; want %s", refs, err, f.Referrer.Digest)
	}
	// And from this place to another of the same kind: the same bytes again.
	b := put(t, be, f, src)
	again, _, err := bundles.OpenSource(t.Context(), b, be.Options)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	for _, d := range want {
		if !bytes.Equal(fetch(t, again, d), fetch(t, f.Store, d)) {
			t.Fatalf("second copy: %s differs", d.Digest)
		}
	}
}

// graph is every blob a copy of the fixture must hold.
func graph(t *testing.T, src content.Fetcher, f *Fixture) []ocispec.Descriptor {
	t.Helper()
	var out []ocispec.Descriptor
	for _, ref := range []string{"1.0.0", bundles.SignatureTag(f.Bundle), bundles.AttestationTag(f.Bundle)} {
		d, err := f.Store.Resolve(t.Context(), ref)
		if err != nil {
			continue
		}
		g, err := bundles.ImageBlobs(t.Context(), src, d)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, g...)
	}
	for _, root := range []ocispec.Descriptor{f.Image, f.Referrer} {
		g, err := bundles.ImageBlobs(t.Context(), src, root)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, g...)
	}
	return out
}

func fetch(t *testing.T, src content.Fetcher, d ocispec.Descriptor) []byte {
	t.Helper()
	b, err := content.FetchAll(t.Context(), src, d)
	if err != nil {
		t.Fatalf("fetch %s: %v", d.Digest, err)
	}
	return b
}

// resume: a copy stopped after the image's layer, then the same copy again: the second
// reads no blob the first completed.
func resume(t *testing.T, be Backend) {
	f := NewFixture(t, "1.0.0")
	a := be.NewAddress(t)
	image, err := bundles.ImageBlobs(t.Context(), f.Store, f.Image)
	if err != nil {
		t.Fatal(err)
	}
	imageLayer := image[len(image)-1]
	stop := errors.New("unplugged")
	first := &countingSource{Source: f.Source(), fail: func(d ocispec.Descriptor) error {
		if d.Digest == f.Referrer.Digest {
			return stop // the copy stops after bundle and image
		}
		return nil
	}}
	sink, err := bundles.Create(t.Context(), a, be.Options)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bundles.CopyBundle(t.Context(), first, f.Bundle, sink, bundles.CopyOptions{}); !errors.Is(err, stop) {
		t.Fatalf("first copy: %v, want it stopped", err)
	}
	sink.Close()
	if first.count(imageLayer.Digest) != 1 {
		t.Fatalf("first copy read the image layer %d times", first.count(imageLayer.Digest))
	}
	second := &countingSource{Source: f.Source()}
	sink, err = bundles.Create(t.Context(), a, be.Options)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	if _, err := bundles.CopyBundle(t.Context(), second, f.Bundle, sink, bundles.CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	if n := second.count(imageLayer.Digest) + second.count(f.Layer.Digest); n != 0 {
		t.Fatalf("the resumed copy read %d blobs the first had completed", n)
	}
	if second.count(f.Referrer.Digest) == 0 {
		t.Fatal("the resumed copy did not copy what the first had not")
	}
	placed, err := sink.Commit(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	src, desc, err := bundles.OpenSource(t.Context(), readable(t, a, placed[0].Where), be.Options)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if desc.Digest != f.Bundle.Digest {
		t.Fatalf("resolved %s", desc.Digest)
	}
	for _, d := range graph(t, f.Store, f) {
		fetch(t, src, d) // every blob is there
	}
}

// lying: a source that serves other bytes for a blob, or too few, fails the copy; nothing is
// readable at the destination, and a good copy to the same place afterwards succeeds (the
// lie did not poison what was staged).
func lying(t *testing.T, be Backend) {
	f := NewFixture(t, "1.0.0")
	for name, alter := range map[string]func([]byte) []byte{
		"other bytes": func(b []byte) []byte { c := bytes.Clone(b); c[len(c)/2] ^= 0xff; return c },
		"truncated":   func(b []byte) []byte { return b[:len(b)/2] },
	} {
		t.Run(name, func(t *testing.T) {
			a := be.NewAddress(t)
			liar := &countingSource{Source: f.Source(), alter: func(d ocispec.Descriptor, b []byte) []byte {
				if d.Digest == f.Layer.Digest {
					return alter(b)
				}
				return b
			}}
			sink, err := bundles.Create(t.Context(), a, be.Options)
			if err != nil {
				t.Fatal(err)
			}
			_, err = bundles.CopyBundle(t.Context(), liar, f.Bundle, sink, bundles.CopyOptions{})
			sink.Close()
			if err == nil {
				t.Fatal("a copy from a lying source succeeded")
			}
			probe := a
			if probe.Kind != bundles.KindS3 {
				probe.Reference = "1.0.0"
			}
			if src, _, err := bundles.OpenSource(t.Context(), probe, be.Options); err == nil {
				src.Close()
				t.Fatal("the bundle is readable at the destination after a failed copy")
			}
			sink, err = bundles.Create(t.Context(), a, be.Options)
			if err != nil {
				t.Fatal(err)
			}
			defer sink.Close()
			if _, err := bundles.CopyBundle(t.Context(), f.Source(), f.Bundle, sink, bundles.CopyOptions{}); err != nil {
				t.Fatalf("a good copy after the lie: %v", err)
			}
			if _, err := sink.Commit(t.Context()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// concurrent: one source read from eight goroutines at once gives every reader the right
// bytes (run with -race).
func concurrent(t *testing.T, be Backend) {
	f := NewFixture(t, "1.0.0")
	_, src, desc := putAndOpen(t, be, f)
	blobs := graph(t, f.Store, f)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			for j := range blobs {
				d := blobs[(i+j)%len(blobs)]
				got, err := content.FetchAll(t.Context(), src, d)
				if err != nil {
					errs <- err
					return
				}
				if digest.FromBytes(got) != d.Digest {
					errs <- fmt.Errorf("%s: wrong bytes", d.Digest)
					return
				}
				if ok, err := src.Exists(t.Context(), d); !ok || err != nil {
					errs <- fmt.Errorf("exists %s: %v %v", d.Digest, ok, err)
					return
				}
			}
			if r, err := src.Resolve(t.Context(), "1.0.0"); err != nil || r.Digest != desc.Digest {
				errs <- fmt.Errorf("resolve: %v %v", r.Digest, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// countingSource counts the fetches of each blob, and can fail or alter them.
type countingSource struct {
	bundles.Source
	mu     sync.Mutex
	counts map[digest.Digest]int
	fail   func(ocispec.Descriptor) error
	alter  func(ocispec.Descriptor, []byte) []byte
	total  atomic.Int64
}

func (c *countingSource) Fetch(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	if c.fail != nil {
		if err := c.fail(d); err != nil {
			return nil, err
		}
	}
	c.mu.Lock()
	if c.counts == nil {
		c.counts = map[digest.Digest]int{}
	}
	c.counts[d.Digest]++
	c.mu.Unlock()
	c.total.Add(1)
	rc, err := c.Source.Fetch(ctx, d)
	if err != nil || c.alter == nil {
		return rc, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(c.alter(d, b))), nil
}

// Predecessors passes the referrers of the wrapped source on.
func (c *countingSource) Predecessors(ctx context.Context, d ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	return c.Source.(content.ReadOnlyGraphStorage).Predecessors(ctx, d)
}

func (c *countingSource) count(d digest.Digest) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts[d]
}

var _ oras.ReadOnlyTarget = memSource{}
