package bundles

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/memory"
)

const renderedCM = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: site\n"

// packedRendered packs a one-component bundle carrying rendered as its rendered layer.
func packedRendered(t *testing.T, rendered []byte) (*memory.Store, ocispec.Descriptor) {
	t.Helper()
	store := memory.New()
	meta := testMetadata()
	meta.Components[0].Rendered = true
	layer := pack(t, writeTree(t, map[string]string{"kustomization.yaml": "resources: []\n"}))
	desc, err := Pack(t.Context(), store, meta, [][]byte{layer, rendered})
	if err != nil {
		t.Fatal(err)
	}
	return store, desc
}

func TestRenderedLayerRoundTrip(t *testing.T) {
	gz, err := GzipRendered([]byte(renderedCM))
	if err != nil {
		t.Fatal(err)
	}
	again, _ := GzipRendered([]byte(renderedCM))
	if !bytes.Equal(gz, again) {
		t.Fatal("the same output compressed to different bytes")
	}
	store, desc := packedRendered(t, gz)
	b, err := Open(t.Context(), store, desc)
	if err != nil {
		t.Fatal(err)
	}
	d, ok := b.Rendered(0)
	if !ok || d.MediaType != RenderedType || d.Annotations[ocispec.AnnotationTitle] != "web.rendered.yaml.gz" || b.Manifest.Layers[0].MediaType != ComponentType {
		t.Fatalf("rendered %v %+v; layers %+v", ok, d, b.Manifest.Layers)
	}
	y, err := b.RenderedYAML(t.Context(), store, 0)
	if err != nil || string(y) != renderedCM {
		t.Fatalf("RenderedYAML = %q, %v", y, err)
	}
	if err := b.CheckRendered(t.Context(), store, 0); err != nil {
		t.Fatal(err)
	}
	if err := b.Check(t.Context(), store); err != nil {
		t.Fatal(err)
	}
	// A bundle without rendered layers has none to read.
	plain, pdesc, _ := packed(t)
	pb, err := Open(t.Context(), plain, pdesc)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := pb.Rendered(0); ok {
		t.Fatal("a bundle without rendered layers reports one")
	}
	if _, err := pb.RenderedYAML(t.Context(), plain, 0); err == nil {
		t.Fatal("read a rendered layer that is not there")
	}
}

func TestRenderedLayerRefusals(t *testing.T) {
	gzipped := func(b []byte) []byte {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zw.Write(b)
		zw.Close()
		return buf.Bytes()
	}
	good := gzipped([]byte(renderedCM))
	tests := []struct {
		name  string
		layer []byte
		want  string
	}{
		{"not gzip", []byte(renderedCM), "not gzip"},
		{"over the limit once decompressed", gzipped(bytes.Repeat([]byte("a"), MaxRenderedBytes+1)), "limit"},
		{"not UTF-8", gzipped([]byte("data: \xff\xfe\n")), "UTF-8"},
		{"a second gzip member", append(bytes.Clone(good), good...), "after the gzip stream"},
		{"bytes after the stream", append(bytes.Clone(good), 'x'), "after the gzip stream"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store, desc := packedRendered(t, tt.layer)
			b, err := Open(t.Context(), store, desc)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := b.RenderedYAML(t.Context(), store, 0); err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "component web") {
				t.Errorf("RenderedYAML: err = %v, want %q naming the component", err, tt.want)
			}
			if err := b.CheckRendered(t.Context(), store, 0); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("CheckRendered: err = %v, want %q", err, tt.want)
			}
			if err := b.Check(t.Context(), store); err == nil {
				t.Error("Check accepted the bundle")
			}
		})
	}
	t.Run("forged bytes", func(t *testing.T) {
		store, desc := packedRendered(t, good)
		b, err := Open(t.Context(), store, desc)
		if err != nil {
			t.Fatal(err)
		}
		d, _ := b.Rendered(0)
		evil := forging{Fetcher: store, forged: map[string][]byte{d.Digest.String(): gzipped([]byte(strings.Replace(renderedCM, "site", "evil", 1)))}}
		if _, err := b.RenderedYAML(t.Context(), evil, 0); err == nil || !strings.Contains(err.Error(), "digest") {
			t.Errorf("RenderedYAML: err = %v, want a digest mismatch", err)
		}
		if err := b.CheckRendered(t.Context(), evil, 0); err == nil {
			t.Error("CheckRendered accepted forged bytes")
		}
	})
	if _, err := GzipRendered(make([]byte, MaxRenderedBytes+1)); err == nil {
		t.Error("GzipRendered made a layer over the limit")
	}
}

// TestOpenRefusesMisplacedRenderedLayers: the manifest's layers must be the components'
// then exactly the rendered ones the signed config announces, each of its own type and
// titled with its component.
func TestOpenRefusesMisplacedRenderedLayers(t *testing.T) {
	gz, _ := GzipRendered([]byte(renderedCM))
	store, desc := packedRendered(t, gz)
	raw, err := content.FetchAll(t.Context(), store, desc)
	if err != nil {
		t.Fatal(err)
	}
	var good ocispec.Manifest
	if err := json.Unmarshal(raw, &good); err != nil {
		t.Fatal(err)
	}
	repack := func(mut func(*ocispec.Manifest)) ocispec.Descriptor {
		m := good
		m.Layers = append([]ocispec.Descriptor(nil), good.Layers...)
		m.Layers[0].Annotations = map[string]string{ocispec.AnnotationTitle: "web"}
		m.Layers[1].Annotations = map[string]string{ocispec.AnnotationTitle: "web.rendered.yaml.gz"}
		mut(&m)
		b, _ := json.Marshal(m)
		d := content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, b)
		if err := store.Push(t.Context(), d, bytes.NewReader(b)); err != nil && !strings.Contains(err.Error(), "exists") {
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
		{"rendered layer missing", func(m *ocispec.Manifest) { m.Layers = m.Layers[:1] }, "1 layers for 1 components and 1 rendered"},
		{"rendered layer typed as a component", func(m *ocispec.Manifest) { m.Layers[1].MediaType = ComponentType }, "layers[1] mediaType"},
		{"component layer typed as rendered", func(m *ocispec.Manifest) { m.Layers[0].MediaType = RenderedType }, "layers[0] mediaType"},
		{"layers swapped", func(m *ocispec.Manifest) { m.Layers[0], m.Layers[1] = m.Layers[1], m.Layers[0] }, "mediaType"},
		{"titled for another component", func(m *ocispec.Manifest) { m.Layers[1].Annotations[ocispec.AnnotationTitle] = "db.rendered.yaml.gz" }, "belongs to component web"},
		{"titled as the component layer", func(m *ocispec.Manifest) { m.Layers[1].Annotations[ocispec.AnnotationTitle] = "web" }, "belongs to component web"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { wantOpen(t, store, repack(tt.mut), tt.want) })
	}
}

func TestMetadataRefusesRenderedWhereTheNodeMustBuild(t *testing.T) {
	m := testMetadata()
	m.Components[0].Rendered = true
	m.Components[0].Kustomize.Decryption = &Decryption{Provider: "sops"}
	if err := m.Validate(); err == nil || !strings.Contains(err.Error(), "components[0].rendered") {
		t.Fatalf("err = %v, want rendered refused on a component with decryption", err)
	}
	h := testMetadata()
	h.Components[0] = Component{Name: "chart", Type: TypeHelm, Helm: &HelmSpec{Chart: "chart"}, Rendered: true}
	if err := h.Validate(); err == nil || !strings.Contains(err.Error(), "components[0].rendered") {
		t.Fatalf("err = %v, want rendered refused on a Helm component", err)
	}
}

// TestGunzipRenderedUTF8AcrossPieces: characters split between the 64 KiB pieces the check
// reads are accepted whole, and broken ones anywhere refused, the output left byte for byte.
func TestGunzipRenderedUTF8AcrossPieces(t *testing.T) {
	for _, pad := range []int{64<<10 - 1, 64<<10 - 2, 64<<10 - 3, 64 << 10, 3} {
		text := strings.Repeat("a", pad) + "ü€😀" + strings.Repeat("b", 64<<10) + "é"
		gz, _ := GzipRendered([]byte(text))
		var out bytes.Buffer
		if err := gunzipRendered(bytes.NewReader(gz), &out); err != nil || out.String() != text {
			t.Fatalf("pad %d: %v (got %d bytes of %d)", pad, err, out.Len(), len(text))
		}
		for _, bad := range []string{text[:len(text)-1], strings.Repeat("a", pad) + "\xe2\x82" + "x"} {
			gz, _ := GzipRendered([]byte(bad))
			if err := gunzipRendered(bytes.NewReader(gz), io.Discard); err == nil || !strings.Contains(err.Error(), "UTF-8") {
				t.Fatalf("pad %d: accepted broken UTF-8: %v", pad, err)
			}
		}
	}
}
