package bundles

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
)

// MaxManifestBytes bounds a bundle or signature manifest read from outside.
const MaxManifestBytes = 4 << 20

// Pack stores the metadata and its layers in dst as a bundle manifest (SPEC §1) and returns
// the manifest's descriptor: one layer per component, then the rendered layer of each
// component marked rendered, in component order. It does not tag; the caller names it.
func Pack(ctx context.Context, dst content.Pusher, m *Metadata, layers [][]byte) (ocispec.Descriptor, error) {
	owners := layerOwners(m)
	if len(layers) != len(owners) {
		return ocispec.Descriptor{}, fmt.Errorf("pack: %d layers for %d components and %d rendered outputs", len(layers), len(m.Components), len(owners)-len(m.Components))
	}
	cfg, err := m.Marshal()
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	cfgDesc := content.NewDescriptorFromBytes(ConfigType, cfg)
	if err := pushIfAbsent(ctx, dst, cfgDesc, cfg); err != nil {
		return ocispec.Descriptor{}, err
	}
	descs := make([]ocispec.Descriptor, len(layers))
	for i, l := range layers {
		mt, title := ComponentType, m.Components[owners[i]].Name
		if i >= len(m.Components) {
			mt, title = RenderedType, RenderedTitle(title)
		}
		d := content.NewDescriptorFromBytes(mt, l)
		d.Annotations = map[string]string{ocispec.AnnotationTitle: title}
		if err := pushIfAbsent(ctx, dst, d, l); err != nil {
			return ocispec.Descriptor{}, err
		}
		descs[i] = d
	}
	// The created annotation is always set from the metadata, so oras never stamps the clock.
	return oras.PackManifest(ctx, dst, oras.PackManifestVersion1_1, ArtifactType, oras.PackManifestOptions{
		ConfigDescriptor:    &cfgDesc,
		Layers:              descs,
		ManifestAnnotations: m.Annotations(),
	})
}

func pushIfAbsent(ctx context.Context, dst content.Pusher, d ocispec.Descriptor, b []byte) error {
	if s, ok := dst.(content.ReadOnlyStorage); ok {
		if exists, err := s.Exists(ctx, d); err == nil && exists {
			return nil
		}
	}
	if err := dst.Push(ctx, d, bytes.NewReader(b)); err != nil && !errors.Is(err, errdef.ErrAlreadyExists) {
		return fmt.Errorf("push %s: %w", d.Digest, err)
	}
	return nil
}

// Bundle is a bundle read from a store and checked against SPEC §1–§4: the manifest, its
// metadata, and the descriptors of its component layers. Layers are read on demand.
type Bundle struct {
	Descriptor ocispec.Descriptor // of the manifest
	Manifest   ocispec.Manifest
	Metadata   *Metadata

	rendered []int // per component, the index of its rendered layer, or -1
}

// layerOwners returns, for each layer of a bundle with metadata m, the index of the component
// it belongs to: every component, then each rendered one again.
func layerOwners(m *Metadata) []int {
	owners := make([]int, 0, len(m.Components))
	for i := range m.Components {
		owners = append(owners, i)
	}
	for i, c := range m.Components {
		if c.Rendered {
			owners = append(owners, i)
		}
	}
	return owners
}

// ErrNotBundle is what Open says of a manifest that is not a Ferry bundle at all (another
// artifact or image), as opposed to a bundle that is damaged.
var ErrNotBundle = errors.New("not a Ferry bundle")

// Open reads and validates the bundle manifest desc from src: media types, artifact type,
// the config (fetched with its digest and size checked), the layer count and the annotations.
func Open(ctx context.Context, src content.Fetcher, desc ocispec.Descriptor) (*Bundle, error) {
	if desc.MediaType != ocispec.MediaTypeImageManifest {
		return nil, fmt.Errorf("bundle %s: media type %q is not an OCI image manifest: %w", desc.Digest, desc.MediaType, ErrNotBundle)
	}
	raw, err := FetchLimited(ctx, src, desc, MaxManifestBytes)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: manifest: %w", desc.Digest, err)
	}
	if err := checkJSON(raw); err != nil {
		return nil, fmt.Errorf("bundle %s: manifest: %w", desc.Digest, err)
	}
	var man ocispec.Manifest
	if err := json.Unmarshal(raw, &man); err != nil {
		return nil, fmt.Errorf("bundle %s: manifest: %w", desc.Digest, err)
	}
	if man.MediaType != ocispec.MediaTypeImageManifest || man.SchemaVersion != 2 {
		return nil, fmt.Errorf("bundle %s: manifest mediaType %q schemaVersion %d, want an OCI image manifest", desc.Digest, man.MediaType, man.SchemaVersion)
	}
	if man.ArtifactType != ArtifactType {
		return nil, fmt.Errorf("bundle %s: artifactType %q, want %s: %w", desc.Digest, man.ArtifactType, ArtifactType, ErrNotBundle)
	}
	if man.Config.MediaType != ConfigType {
		return nil, fmt.Errorf("bundle %s: config mediaType %q, want %s", desc.Digest, man.Config.MediaType, ConfigType)
	}
	cfg, err := FetchLimited(ctx, src, man.Config, MaxConfigBytes)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: config: %w", desc.Digest, err)
	}
	meta, err := ParseMetadata(cfg)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", desc.Digest, err)
	}
	owners := layerOwners(meta)
	if len(man.Layers) != len(owners) {
		return nil, fmt.Errorf("bundle %s: %d layers for %d components and %d rendered outputs", desc.Digest, len(man.Layers), len(meta.Components), len(owners)-len(meta.Components))
	}
	rendered := make([]int, len(meta.Components))
	for i := range rendered {
		rendered[i] = -1
	}
	for i, l := range man.Layers {
		want, title := ComponentType, meta.Components[owners[i]].Name
		if i >= len(meta.Components) {
			want, title = RenderedType, RenderedTitle(title)
			rendered[owners[i]] = i
		}
		if l.MediaType != want {
			return nil, fmt.Errorf("bundle %s: layers[%d] mediaType %q, want %s", desc.Digest, i, l.MediaType, want)
		}
		if l.Size < 0 || l.Size > MaxLayerBytes {
			return nil, fmt.Errorf("bundle %s: layers[%d] size %d out of range", desc.Digest, i, l.Size)
		}
		if t, ok := l.Annotations[ocispec.AnnotationTitle]; ok && t != title {
			return nil, fmt.Errorf("bundle %s: layers[%d] is titled %q but belongs to component %s (title %q)", desc.Digest, i, t, meta.Components[owners[i]].Name, title)
		}
	}
	for k, want := range meta.Annotations() {
		if got, ok := man.Annotations[k]; ok && got != want {
			return nil, fmt.Errorf("bundle %s: annotation %s is %q but the signed config says %q", desc.Digest, k, got, want)
		}
	}
	return &Bundle{Descriptor: desc, Manifest: man, Metadata: meta, rendered: rendered}, nil
}

// Layer fetches component i's layer, checking its digest and size, and reads its files.
func (b *Bundle) Layer(ctx context.Context, src content.Fetcher, i int) (Files, error) {
	if i < 0 || i >= len(b.Manifest.Layers) {
		return nil, fmt.Errorf("bundle %s: no component %d", b.Metadata.Name, i)
	}
	raw, err := FetchLimited(ctx, src, b.Manifest.Layers[i], MaxLayerBytes)
	if err != nil {
		return nil, fmt.Errorf("component %s: %w", b.Metadata.Components[i].Name, err)
	}
	files, err := ReadLayer(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("component %s: %w", b.Metadata.Components[i].Name, err)
	}
	return files, nil
}

// CheckLayer streams component layer i from src through its digest check and CheckLayer's
// checks, keeping nothing: a revision admitted is one whose layers can be read, at a memory
// cost that does not grow with the layer.
func (b *Bundle) CheckLayer(ctx context.Context, src content.Fetcher, i int) error {
	if i < 0 || i >= len(b.Manifest.Layers) {
		return fmt.Errorf("bundle %s: no component %d", b.Metadata.Name, i)
	}
	desc := b.Manifest.Layers[i]
	name := b.Metadata.Components[i].Name
	if desc.Size < 0 || desc.Size > MaxLayerBytes {
		return fmt.Errorf("component %s: %s: size %d over the %d-byte limit", name, desc.Digest, desc.Size, MaxLayerBytes)
	}
	if err := desc.Digest.Validate(); err != nil || desc.Digest.Algorithm() != digest.SHA256 {
		return fmt.Errorf("component %s: %q: not a sha256 digest", name, desc.Digest)
	}
	rc, err := src.Fetch(ctx, desc)
	if err != nil {
		return fmt.Errorf("component %s: %w", name, err)
	}
	defer rc.Close()
	vr := content.NewVerifyReader(rc, desc)
	lerr := CheckLayer(vr)
	// What the layer check left unread (it stops at the gzip stream's end, or at what it
	// refused) is read too: bytes that are not the signed ones are the first thing to say.
	_, err = io.Copy(io.Discard, vr)
	if err == nil {
		err = vr.Verify()
	}
	if err != nil {
		return fmt.Errorf("component %s: %s: %w", name, desc.Digest, err)
	}
	if lerr != nil {
		return fmt.Errorf("component %s: %w", name, lerr)
	}
	return nil
}

// FetchLimited fetches desc from src into memory, refusing a descriptor over limit and
// content whose size or digest differs from the descriptor's.
func FetchLimited(ctx context.Context, src content.Fetcher, desc ocispec.Descriptor, limit int64) ([]byte, error) {
	if desc.Size < 0 || desc.Size > limit {
		return nil, fmt.Errorf("%s: size %d over the %d-byte limit", desc.Digest, desc.Size, limit)
	}
	if err := desc.Digest.Validate(); err != nil || desc.Digest.Algorithm() != digest.SHA256 {
		return nil, fmt.Errorf("%q: not a sha256 digest", desc.Digest)
	}
	rc, err := src.Fetch(ctx, desc)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	// ReadAll checks size and digest; the extra byte of the limit catches a longer stream.
	b, err := content.ReadAll(io.LimitReader(rc, desc.Size+1), desc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", desc.Digest, err)
	}
	return b, nil
}
