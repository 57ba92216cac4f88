package bundles

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/memory"
)

func testMetadata() *Metadata {
	return &Metadata{
		SchemaVersion: SchemaVersion,
		Name:          "edge-apps",
		Version:       "1.4.0",
		Revision:      42,
		Created:       time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC),
		Source:        Provenance{URL: "https://git.example.com/site.git", Commit: strings.Repeat("ab", 20)},
		Components:    []Component{{Name: "web", Type: "kustomize", Kustomize: &KustomizeSpec{Path: ".", Prune: true}}},
	}
}

func packed(t *testing.T) (*memory.Store, ocispec.Descriptor, []byte) {
	t.Helper()
	store := memory.New()
	layer := pack(t, writeTree(t, map[string]string{"kustomization.yaml": "resources: []\n"}))
	desc, err := Pack(t.Context(), store, testMetadata(), [][]byte{layer})
	if err != nil {
		t.Fatal(err)
	}
	return store, desc, layer
}

func TestPackOpenRoundTrip(t *testing.T) {
	store, desc, _ := packed(t)
	_, desc2, _ := packed(t)
	if desc.Digest != desc2.Digest {
		t.Fatalf("same inputs gave %s and %s", desc.Digest, desc2.Digest)
	}
	b, err := Open(t.Context(), store, desc)
	if err != nil {
		t.Fatal(err)
	}
	if b.Metadata.Revision != 42 || b.Manifest.Annotations[AnnotationRevision] != "42" ||
		b.Manifest.Annotations[AnnotationCreated] != "2026-11-25T10:00:00Z" {
		t.Fatalf("opened %+v / %v", b.Metadata, b.Manifest.Annotations)
	}
	files, err := b.Layer(t.Context(), store, 0)
	if err != nil {
		t.Fatal(err)
	}
	if f, ok := files.Get("kustomization.yaml"); !ok || string(f.Data) != "resources: []\n" {
		t.Fatalf("layer files %+v", files)
	}
}

// forging serves other bytes for some digests, as a hostile registry or a corrupted stick
// would; everything else comes from the real store.
type forging struct {
	content.Fetcher
	forged map[string][]byte
}

func (f forging) Fetch(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	if b, ok := f.forged[d.Digest.String()]; ok {
		return io.NopCloser(bytes.NewReader(b)), nil
	}
	return f.Fetcher.Fetch(ctx, d)
}

func TestOpenRefusesTamperedContent(t *testing.T) {
	store, desc, layer := packed(t)
	raw, err := content.FetchAll(t.Context(), store, desc)
	if err != nil {
		t.Fatal(err)
	}
	var man ocispec.Manifest
	if err := json.Unmarshal(raw, &man); err != nil {
		t.Fatal(err)
	}
	cfg, err := content.FetchAll(t.Context(), store, man.Config)
	if err != nil {
		t.Fatal(err)
	}
	forge := func(d ocispec.Descriptor, b []byte) forging {
		return forging{Fetcher: store, forged: map[string][]byte{d.Digest.String(): b}}
	}

	t.Run("config with same size", func(t *testing.T) {
		evil := bytes.Replace(cfg, []byte(`"revision":42`), []byte(`"revision":99`), 1)
		if _, err := Open(t.Context(), forge(man.Config, evil), desc); err == nil || !strings.Contains(err.Error(), "digest") {
			t.Fatalf("err = %v, want the forged config refused on its digest", err)
		}
	})
	t.Run("config longer than declared", func(t *testing.T) {
		if _, err := Open(t.Context(), forge(man.Config, append(cfg, ' ')), desc); err == nil {
			t.Fatal("accepted a config longer than its descriptor")
		}
	})
	t.Run("layer", func(t *testing.T) {
		evil := bytes.Clone(layer)
		evil[len(evil)/2] ^= 0xff
		b, err := Open(t.Context(), forge(man.Layers[0], evil), desc)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Layer(t.Context(), forge(man.Layers[0], evil), 0); err == nil || !strings.Contains(err.Error(), "digest") {
			t.Fatalf("err = %v, want a digest mismatch", err)
		}
	})
	t.Run("manifest", func(t *testing.T) {
		evil := bytes.Replace(raw, []byte(`"dev.ferry.bundle.revision":"42"`), []byte(`"dev.ferry.bundle.revision":"43"`), 1)
		if _, err := Open(t.Context(), forge(desc, evil), desc); err == nil || !strings.Contains(err.Error(), "digest") {
			t.Fatalf("err = %v, want the forged manifest refused", err)
		}
	})
}

func TestOpenRefusesWhatIsNotABundle(t *testing.T) {
	ctx := t.Context()
	store := memory.New()
	meta := testMetadata()
	cfg, err := meta.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	cfgDesc := content.NewDescriptorFromBytes(ConfigType, cfg)
	if err := store.Push(ctx, cfgDesc, bytes.NewReader(cfg)); err != nil {
		t.Fatal(err)
	}
	layer := pack(t, writeTree(t, map[string]string{"a.yaml": "x"}))
	layerDesc := content.NewDescriptorFromBytes(ComponentType, layer)
	if err := store.Push(ctx, layerDesc, bytes.NewReader(layer)); err != nil {
		t.Fatal(err)
	}
	manifest := func(mut func(*ocispec.Manifest)) ocispec.Descriptor {
		m := ocispec.Manifest{
			Versioned: specsVersioned(), MediaType: ocispec.MediaTypeImageManifest, ArtifactType: ArtifactType,
			Config: cfgDesc, Layers: []ocispec.Descriptor{layerDesc}, Annotations: meta.Annotations(),
		}
		mut(&m)
		b, _ := json.Marshal(m)
		d := content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, b)
		if err := store.Push(ctx, d, bytes.NewReader(b)); err != nil && !strings.Contains(err.Error(), "exists") {
			t.Fatal(err)
		}
		return d
	}
	tests := []struct {
		name string
		mut  func(*ocispec.Manifest)
		want string
	}{
		{"control", func(*ocispec.Manifest) {}, ""},
		{"other artifact type", func(m *ocispec.Manifest) { m.ArtifactType = "application/vnd.cncf.helm.chart" }, "artifactType"},
		{"other config type", func(m *ocispec.Manifest) { m.Config.MediaType = "application/vnd.oci.image.config.v1+json" }, "config mediaType"},
		{"extra layer", func(m *ocispec.Manifest) { m.Layers = append(m.Layers, layerDesc) }, "2 layers for 1 components"},
		{"other layer type", func(m *ocispec.Manifest) { m.Layers[0].MediaType = "application/octet-stream" }, "layers[0] mediaType"},
		{"annotation contradicts config", func(m *ocispec.Manifest) { m.Annotations[AnnotationRevision] = "43" }, "signed config says"},
		{"huge declared config", func(m *ocispec.Manifest) { m.Config.Size = 1 << 40 }, "limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { wantOpen(t, store, manifest(tt.mut), tt.want) })
	}
}

// wantOpen opens desc from src: it must succeed when want is "", else fail saying want.
func wantOpen(t *testing.T, src content.Fetcher, desc ocispec.Descriptor, want string) {
	t.Helper()
	_, err := Open(t.Context(), src, desc)
	if want == "" {
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want %q", err, want)
	}
}

func TestParseMetadataRefusals(t *testing.T) {
	good, err := testMetadata().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, json, want string
	}{
		{"unknown field", strings.Replace(string(good), `"name"`, `"owner":"x","name"`, 1), "unknown field"},
		{"trailing data", string(good) + "{}", "after the JSON"},
		{"zero revision", strings.Replace(string(good), `"revision":42`, `"revision":0`, 1), "revision"},
		{"negative revision", strings.Replace(string(good), `"revision":42`, `"revision":-1`, 1), "revision"},
		{"bad version", strings.Replace(string(good), `"1.4.0"`, `"latest"`, 1), "version"},
		{"bad commit", strings.Replace(string(good), strings.Repeat("ab", 20), "HEAD", 1), "source.commit"},
		{"component type", strings.Replace(string(good), `"kustomize"`, `"terraform"`, 1), "components[0].type"},
		{"schema", strings.Replace(string(good), `"schemaVersion":1`, `"schemaVersion":2`, 1), "schemaVersion"},
		{"too big", string(good) + strings.Repeat(" ", MaxConfigBytes), "limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseMetadata([]byte(tt.json)); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
	if _, err := ParseMetadata(good); err != nil {
		t.Fatalf("control: %v", err)
	}
}

func FuzzParseMetadata(f *testing.F) {
	good, _ := testMetadata().Marshal()
	f.Add(good)
	f.Add([]byte(`{"schemaVersion":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseMetadata(b)
		if err != nil {
			return
		}
		// Whatever is accepted must survive a round trip unchanged.
		again, err := m.Marshal()
		if err != nil {
			t.Fatalf("accepted metadata does not marshal: %v", err)
		}
		m2, err := ParseMetadata(again)
		if err != nil || m2.Revision != m.Revision || m2.Name != m.Name {
			t.Fatalf("round trip changed the metadata: %v", err)
		}
	})
}

func specsVersioned() specs.Versioned { return specs.Versioned{SchemaVersion: 2} }

func TestParseMetadataRefusesAmbiguousJSON(t *testing.T) {
	good, _ := testMetadata().Marshal()
	// Two revisions: encoding/json would keep the second, another reader the first.
	dup := strings.Replace(string(good), `"revision":42`, `"revision":1,"revision":42`, 1)
	if _, err := ParseMetadata([]byte(dup)); err == nil || !strings.Contains(err.Error(), "duplicate key") {
		t.Fatalf("err = %v, want duplicate key refused", err)
	}
	// Keys that differ only in case land in one Go field: also duplicates.
	cased := strings.Replace(string(good), `"revision":42`, `"revision":42,"Revision":1`, 1)
	if _, err := ParseMetadata([]byte(cased)); err == nil || !strings.Contains(err.Error(), "duplicate key") {
		t.Fatalf("err = %v, want a case-folded duplicate refused", err)
	}
	if err := checkJSON([]byte("{\"name\":\"\xff\"}")); err == nil || !strings.Contains(err.Error(), "UTF-8") {
		t.Fatalf("err = %v, want invalid UTF-8 refused", err)
	}
	deep := strings.Repeat("[", 100) + strings.Repeat("]", 100)
	if err := checkJSON([]byte(deep)); err == nil || !strings.Contains(err.Error(), "deeper") {
		t.Fatalf("err = %v, want nesting refused", err)
	}
}

func TestCopyReportsProgressOnlyWhenAsked(t *testing.T) {
	store, desc, _ := packed(t)
	for _, progress := range []bool{false, true} {
		var out bytes.Buffer
		o := Options{}
		if progress {
			o.Progress = &out
		}
		dst, err := ParseAddress(t.TempDir() + "/b.tar")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Copy(t.Context(), memSource{store}, desc, dst, o); err != nil {
			t.Fatal(err)
		}
		if got := out.String(); progress != (strings.Contains(got, "copy edge-apps:1.4.0:") && strings.Contains(got, "(100%)")) {
			t.Fatalf("progress=%v, output %q", progress, got)
		}
	}
}

type memSource struct{ *memory.Store }

func (memSource) Close() error { return nil }

// FuzzOpen feeds arbitrary bytes to Open as a bundle manifest (with a valid config beside it):
// it must refuse or return a bundle whose invariants hold, never panic.
func FuzzOpen(f *testing.F) {
	store := memory.New()
	meta := testMetadata()
	cfg, _ := meta.Marshal()
	cfgDesc := content.NewDescriptorFromBytes(ConfigType, cfg)
	store.Push(context.Background(), cfgDesc, bytes.NewReader(cfg))
	good, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		ArtifactType: ArtifactType, Config: cfgDesc, Layers: []ocispec.Descriptor{{MediaType: ComponentType, Digest: cfgDesc.Digest, Size: 10}},
		Annotations: meta.Annotations()})
	f.Add(good)
	f.Add([]byte(`{"schemaVersion":2}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		d := content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, b)
		src := forging{Fetcher: store, forged: map[string][]byte{d.Digest.String(): b}}
		bundle, err := Open(context.Background(), src, d)
		if err != nil {
			return
		}
		if len(bundle.Manifest.Layers) != len(bundle.Metadata.Components) || bundle.Manifest.ArtifactType != ArtifactType {
			t.Fatalf("accepted an inconsistent bundle: %+v", bundle.Manifest)
		}
	})
}

// FuzzCheckArchive: whatever tar bytes a stick holds, the archive check refuses them or
// accepts only clean layout paths, regular files and directories, the same through the
// stick's reader as through the file; and each file lies where the check says, so a blob read
// at its offset is what tar reads.
func FuzzCheckArchive(f *testing.F) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "oci-layout", Typeflag: tar.TypeReg, Size: 2, Mode: 0o644})
	tw.Write([]byte("{}"))
	tw.Close()
	f.Add(buf.Bytes())
	f.Add([]byte("not a tar"))
	buf.Reset()
	tw = tar.NewWriter(&buf)
	long := "blobs/sha256/" + strings.Repeat("ab", 60) // a PAX header before its data
	for _, e := range []struct{ name, data string }{{"oci-layout", "{}"}, {"blobs/", ""}, {long, strings.Repeat("x", 700)}, {"index.json", "[]"}} {
		h := &tar.Header{Name: e.name, Typeflag: tar.TypeReg, Size: int64(len(e.data)), Mode: 0o644}
		if strings.HasSuffix(e.name, "/") {
			h.Typeflag = tar.TypeDir
		}
		tw.WriteHeader(h)
		tw.Write([]byte(e.data))
	}
	tw.Close()
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(t.TempDir(), "a.tar")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		r := newStallReader(t.Context(), path, bytes.NewReader(b), 0, int64(len(b)), time.Minute)
		defer r.Close()
		entries, err := checkArchive(r, int64(len(b)), path)
		if ferr := CheckArchive(path); (err == nil) != (ferr == nil) {
			t.Fatalf("the stick's reader says %v, the file %v", err, ferr)
		}
		if err != nil {
			return
		}
		tr := tar.NewReader(bytes.NewReader(b))
		for {
			h, err := tr.Next()
			if err != nil {
				return
			}
			if h.Typeflag != tar.TypeReg && h.Typeflag != tar.TypeDir {
				t.Fatalf("accepted entry type %q", h.Typeflag)
			}
			name, err := cleanEntryName(strings.TrimPrefix(h.Name, "./"))
			if err != nil {
				t.Fatalf("accepted entry %q", h.Name)
			}
			if h.Typeflag == tar.TypeReg {
				data, err := io.ReadAll(tr)
				e, ok := entries[name]
				if err != nil || !ok || !bytes.Equal(b[e.off:e.off+e.size], data) {
					t.Fatalf("entry %q: the bytes at its offset are not what tar reads (%v)", h.Name, err)
				}
			}
		}
	})
}

// The progress line shows bytes done of the total, the rate and the time left.
func TestProgressLine(t *testing.T) {
	var out bytes.Buffer
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	p := NewProgress(&out, "copy 1.0.0", 4<<30)
	p.now = func() time.Time { return now }
	p.start = now
	now = now.Add(2 * time.Second)
	p.Add(1 << 30)
	line := out.String()
	for _, want := range []string{"copy 1.0.0: 1.00 GiB / 4.00 GiB (25%)", "512.0 MiB/s", "6s left"} {
		if !strings.Contains(line, want) {
			t.Errorf("progress %q lacks %q", line, want)
		}
	}
	now = now.Add(100 * time.Millisecond)
	p.Add(1) // within 200ms of the last line: not redrawn
	if out.String() != line {
		t.Errorf("redrawn after 100ms: %q", out.String())
	}
	var silent *Progress = NewProgress(nil, "x", 1)
	silent.Add(5)
	silent.Finish()
}
