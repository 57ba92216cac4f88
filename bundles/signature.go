package bundles

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"
)

// Signature storage, the way cosign stores it (SPEC §8).
const (
	// SimpleSigningType is the media type of a signature layer: its content is the payload.
	SimpleSigningType = "application/vnd.dev.cosign.simplesigning.v1+json"
	// SignatureAnnotation holds the base64 signature over the payload on each layer.
	SignatureAnnotation = "dev.cosignproject.cosign/signature"
	// CertificateAnnotation, ChainAnnotation and BundleAnnotation carry a keyless
	// signature's certificate (PEM), its intermediate chain (PEM) and the transparency log's
	// signed entry (Rekor bundle JSON), as cosign writes them.
	CertificateAnnotation = "dev.sigstore.cosign/certificate"
	ChainAnnotation       = "dev.sigstore.cosign/chain"
	BundleAnnotation      = "dev.sigstore.cosign/bundle"
	// CosignPayloadType is critical.type in the payload.
	CosignPayloadType = "cosign container image signature"
	// SignatureArtifactType is the artifact type of a signature stored as an OCI 1.1
	// referrer, as cosign's --registry-referrers-mode=oci-1-1 writes it.
	SignatureArtifactType = "application/vnd.dev.cosign.artifact.sig.v1+json"
	// MaxSignatures bounds the layers of a signature manifest read from outside.
	MaxSignatures = 64
	// MaxPayloadBytes bounds one signed payload.
	MaxPayloadBytes = 64 << 10
)

// kind is one of the two things cosign stores beside an image: signatures (simple-signing
// payloads) and attestations (DSSE envelopes). Both live in a manifest under a tag named
// after the image's digest and, in OCI 1.1 mode, as referrers of the image.
type kind struct {
	name         string // for messages
	tag          func(ocispec.Descriptor) string
	artifactType string // of a referrer
	layerType    string
	limit        int64 // of one layer
	// signed is true when each layer's signature is in its SignatureAnnotation (simple
	// signing); a DSSE envelope carries its own.
	signed bool
}

var (
	signatureKind = kind{name: "signature", tag: SignatureTag, artifactType: SignatureArtifactType,
		layerType: SimpleSigningType, limit: MaxPayloadBytes, signed: true}
	attestationKind = kind{name: "attestation", tag: AttestationTag, artifactType: AttestationArtifactType,
		layerType: DSSEType, limit: MaxEnvelopeBytes}
)

// SimpleSigning is cosign's signed payload. Field order and types match what cosign
// marshals, so json.Marshal of this struct gives the bytes cosign signs.
type SimpleSigning struct {
	Critical struct {
		Identity struct {
			DockerReference string `json:"docker-reference"`
		} `json:"identity"`
		Image struct {
			DockerManifestDigest string `json:"docker-manifest-digest"`
		} `json:"image"`
		Type string `json:"type"`
	} `json:"critical"`
	Optional map[string]any `json:"optional"`
}

// NewPayload returns the payload that signs manifest d, claiming identity (the repository a
// bundle is published under, or its name).
func NewPayload(identity string, d digest.Digest) []byte {
	var p SimpleSigning
	p.Critical.Identity.DockerReference = identity
	p.Critical.Image.DockerManifestDigest = d.String()
	p.Critical.Type = CosignPayloadType
	b, _ := json.Marshal(p) // fixed struct of strings: cannot fail
	return b
}

// ParsePayload decodes a payload read from outside and checks that it claims manifest want.
// A payload signed for another digest is refused: a valid signature over it proves nothing
// about this bundle.
func ParsePayload(b []byte, want digest.Digest) (*SimpleSigning, error) {
	if len(b) > MaxPayloadBytes {
		return nil, fmt.Errorf("signature payload: %d bytes, over the %d-byte limit", len(b), MaxPayloadBytes)
	}
	if err := checkJSON(b); err != nil {
		return nil, fmt.Errorf("signature payload: %w", err)
	}
	var p SimpleSigning
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("signature payload: %w", err)
	}
	if p.Critical.Type != CosignPayloadType {
		return nil, fmt.Errorf("signature payload: critical.type %q, want %q", p.Critical.Type, CosignPayloadType)
	}
	if p.Critical.Image.DockerManifestDigest != want.String() {
		return nil, fmt.Errorf("signature payload: signs %q, not this bundle (%s)", p.Critical.Image.DockerManifestDigest, want)
	}
	return &p, nil
}

// SignatureLayer is one signature: the payload and its base64 signature.
type SignatureLayer struct {
	Descriptor ocispec.Descriptor // of the payload blob
	Payload    []byte
	Base64     string
}

// Signatures is the signature manifest of a bundle and its simple-signing layers.
type Signatures struct {
	Descriptor ocispec.Descriptor // of the tag-scheme signature manifest; zero if there is none
	Manifest   ocispec.Manifest
	Layers     []SignatureLayer
	// Referrers are the blobs of signature manifests found as OCI 1.1 referrers.
	Referrers []ocispec.Descriptor
	// referrerManifests are those manifests, read.
	referrerManifests []Signatures
}

// Manifests returns every signature manifest read (tag scheme first, then referrers), each
// with its descriptor and content.
func (s *Signatures) Manifests() []Signatures {
	var out []Signatures
	if s.Descriptor.Digest != "" {
		out = append(out, Signatures{Descriptor: s.Descriptor, Manifest: s.Manifest})
	}
	return append(out, s.referrerManifests...)
}

// Blobs lists everything the signatures are stored as: manifests, configs and payloads.
func (s *Signatures) Blobs() []ocispec.Descriptor {
	var out []ocispec.Descriptor
	if s.Descriptor.Digest != "" {
		out = append(out, s.Descriptor, s.Manifest.Config)
		out = append(out, s.Manifest.Layers...)
	}
	return append(out, s.Referrers...)
}

// ReadSignatures fetches the signature manifest for bundle d from src and every layer's
// payload, digest- and size-checked. It returns ErrNoSignatures when there is none.
//
// Signatures stored as OCI 1.1 referrers of d (artifact type SignatureArtifactType) count
// too, where src can list them (registries, through the referrers API or its tag fallback;
// OCI layouts and tars): their layers are added after the tag's, without duplicates.
func ReadSignatures(ctx context.Context, src interface {
	content.Fetcher
	content.Resolver
}, d ocispec.Descriptor) (*Signatures, error) {
	return readAll(ctx, src, d, signatureKind)
}

func readAll(ctx context.Context, src interface {
	content.Fetcher
	content.Resolver
}, d ocispec.Descriptor, k kind) (*Signatures, error) {
	sigDesc, man, layers, err := readSignatures(ctx, src, d, k)
	if err != nil && !errors.Is(err, ErrNoSignatures) {
		return nil, err
	}
	sigs := &Signatures{Descriptor: sigDesc, Manifest: man, Layers: layers}
	refs, rerr := referrerSignatures(ctx, src, d, k)
	if rerr != nil {
		return nil, rerr
	}
	for _, r := range refs {
		sigs.referrerManifests = append(sigs.referrerManifests, Signatures{Descriptor: r.Descriptor, Manifest: r.Manifest})
		sigs.Referrers = append(sigs.Referrers, r.Descriptor, r.Manifest.Config)
		for _, l := range r.Layers {
			dup := false
			for _, have := range sigs.Layers {
				dup = dup || (have.Descriptor.Digest == l.Descriptor.Digest && have.Base64 == l.Base64)
			}
			if !dup {
				sigs.Layers = append(sigs.Layers, l)
			}
			sigs.Referrers = append(sigs.Referrers, l.Descriptor)
		}
	}
	if len(sigs.Layers) == 0 {
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w (no %s by tag or referrer)", ErrNoSignatures, k.name)
	}
	return sigs, nil
}

// referrerSignatures reads the signature manifests that refer to d, if src can list them.
func referrerSignatures(ctx context.Context, src any, d ocispec.Descriptor, k kind) ([]Signatures, error) {
	graph, ok := src.(content.ReadOnlyGraphStorage)
	if !ok {
		return nil, nil
	}
	refs, err := registry.Referrers(ctx, graph, d, k.artifactType)
	if err != nil {
		// A registry without the referrers API and without the fallback tag is not an error:
		// it simply holds no referrers.
		if errors.Is(err, errdef.ErrNotFound) || errors.Is(err, errdef.ErrUnsupported) {
			return nil, nil
		}
		return nil, fmt.Errorf("%s referrers of %s: %w", k.name, d.Digest, err)
	}
	if len(refs) > MaxSignatures {
		return nil, fmt.Errorf("%s referrers of %s: %d, over the limit of %d", k.name, d.Digest, len(refs), MaxSignatures)
	}
	var out []Signatures
	for _, r := range refs {
		man, layers, err := readSignatureManifest(ctx, src.(content.Fetcher), r, r.Digest.String(), k)
		if err != nil {
			return nil, err
		}
		if man.Subject == nil || man.Subject.Digest != d.Digest {
			continue // a referrer that does not name this bundle as its subject is not one of its signatures
		}
		out = append(out, Signatures{Descriptor: r, Manifest: man, Layers: layers})
	}
	return out, nil
}

func readSignatures(ctx context.Context, src interface {
	content.Fetcher
	content.Resolver
}, d ocispec.Descriptor, k kind) (ocispec.Descriptor, ocispec.Manifest, []SignatureLayer, error) {
	tag := k.tag(d)
	sigDesc, err := src.Resolve(ctx, tag)
	if err != nil {
		return ocispec.Descriptor{}, ocispec.Manifest{}, nil, fmt.Errorf("%w (%s: %v)", ErrNoSignatures, tag, err)
	}
	man, layers, err := readSignatureManifest(ctx, src, sigDesc, tag, k)
	if err != nil {
		return sigDesc, man, nil, err
	}
	if len(layers) == 0 {
		return sigDesc, man, nil, fmt.Errorf("%w (%s holds no %s layer)", ErrNoSignatures, tag, k.layerType)
	}
	return sigDesc, man, layers, nil
}

// readSignatureManifest reads one signature (or attestation) manifest and its payloads.
func readSignatureManifest(ctx context.Context, src content.Fetcher, sigDesc ocispec.Descriptor, name string, k kind) (ocispec.Manifest, []SignatureLayer, error) {
	var man ocispec.Manifest
	raw, err := FetchLimited(ctx, src, sigDesc, MaxManifestBytes)
	if err != nil {
		return man, nil, fmt.Errorf("%s manifest %s: %w", k.name, name, err)
	}
	if err := checkJSON(raw); err != nil {
		return man, nil, fmt.Errorf("%s manifest %s: %w", k.name, name, err)
	}
	if err := json.Unmarshal(raw, &man); err != nil {
		return man, nil, fmt.Errorf("%s manifest %s: %w", k.name, name, err)
	}
	if len(man.Layers) > MaxSignatures {
		return man, nil, fmt.Errorf("%s manifest %s: %d layers, over the limit of %d", k.name, name, len(man.Layers), MaxSignatures)
	}
	var out []SignatureLayer
	for _, l := range man.Layers {
		if l.MediaType != k.layerType {
			continue
		}
		b64 := l.Annotations[SignatureAnnotation]
		if b64 == "" && k.signed {
			continue
		}
		payload, err := FetchLimited(ctx, src, l, k.limit)
		if err != nil {
			return man, nil, fmt.Errorf("%s manifest %s: payload: %w", k.name, name, err)
		}
		out = append(out, SignatureLayer{Descriptor: l, Payload: payload, Base64: b64})
	}
	return man, out, nil
}

// ErrNoSignatures is returned when a bundle carries no signature at all.
var ErrNoSignatures = errors.New("bundle is not signed")

// AppendSignature stores a signature for bundle d in dst under the cosign tag, adding it to
// the signatures already there (an identical one is not added twice), in the manifest shape
// cosign writes so that either tool can add to what the other wrote.
func AppendSignature(ctx context.Context, dst interface {
	content.Storage
	content.Resolver
	content.Tagger
}, d ocispec.Descriptor, payload []byte, b64 string) (ocispec.Descriptor, error) {
	return AppendSignatureWith(ctx, dst, d, payload, b64, nil)
}

// AppendSignatureWith is AppendSignature with more layer annotations, such as the signing
// certificate, its chain and the transparency-log bundle of a keyless signature
// (CertificateAnnotation, ChainAnnotation, BundleAnnotation).
func AppendSignatureWith(ctx context.Context, dst interface {
	content.Storage
	content.Resolver
	content.Tagger
}, d ocispec.Descriptor, payload []byte, b64 string, annotations map[string]string) (ocispec.Descriptor, error) {
	a := map[string]string{SignatureAnnotation: b64}
	maps.Copy(a, annotations)
	return appendLayer(ctx, dst, d, signatureKind, payload, a)
}

// appendLayer adds one layer (payload, with its annotations) to d's manifest of kind k,
// under k's tag and as a referrer, unless an identical layer is there already.
func appendLayer(ctx context.Context, dst interface {
	content.Storage
	content.Resolver
	content.Tagger
}, d ocispec.Descriptor, k kind, payload []byte, annotations map[string]string) (ocispec.Descriptor, error) {
	var layers []ocispec.Descriptor
	if existing, err := readAll(ctx, dst, d, k); err == nil {
		for _, s := range existing.Layers {
			if bytes.Equal(s.Payload, payload) && s.Base64 == annotations[SignatureAnnotation] {
				return ocispec.Descriptor{}, nil
			}
			layers = append(layers, s.Descriptor)
		}
	} else if !errors.Is(err, ErrNoSignatures) {
		return ocispec.Descriptor{}, err
	}
	pd := content.NewDescriptorFromBytes(k.layerType, payload)
	pd.Annotations = annotations
	if err := pushIfAbsent(ctx, dst, pd, payload); err != nil {
		return ocispec.Descriptor{}, err
	}
	layers = append(layers, pd)

	// cosign's config: an image config with one history entry and diff_id per layer.
	type history struct {
		Created string `json:"created"`
	}
	cfg := struct {
		Architecture string    `json:"architecture"`
		Created      string    `json:"created"`
		History      []history `json:"history"`
		OS           string    `json:"os"`
		RootFS       struct {
			Type    string   `json:"type"`
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
		Config struct{} `json:"config"`
	}{Created: "0001-01-01T00:00:00Z", History: []history{}}
	cfg.RootFS.Type = "layers"
	for _, l := range layers {
		cfg.History = append(cfg.History, history{Created: "0001-01-01T00:00:00Z"})
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, l.Digest.String())
	}
	cfgBytes, _ := json.Marshal(cfg)
	cd := content.NewDescriptorFromBytes(ocispec.MediaTypeImageConfig, cfgBytes)
	if err := pushIfAbsent(ctx, dst, cd, cfgBytes); err != nil {
		return ocispec.Descriptor{}, err
	}
	man := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cd, Layers: layers}
	man.SchemaVersion = 2
	mb, err := json.Marshal(man)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	md := content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, mb)
	if err := pushIfAbsent(ctx, dst, md, mb); err != nil {
		return ocispec.Descriptor{}, err
	}
	if err := dst.Tag(ctx, md, k.tag(d)); err != nil {
		return ocispec.Descriptor{}, err
	}
	// The same layer as an OCI 1.1 referrer of the bundle, as cosign's oci-1-1 mode
	// stores it, for tools that look there. A registry without the referrers API gets the
	// referrers tag (sha256-<hex>) from oras.
	empty := ocispec.DescriptorEmptyJSON
	if err := pushIfAbsent(ctx, dst, empty, empty.Data); err != nil {
		return ocispec.Descriptor{}, err
	}
	ref := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: k.artifactType,
		Config: ocispec.Descriptor{MediaType: empty.MediaType, Digest: empty.Digest, Size: empty.Size},
		Layers: []ocispec.Descriptor{pd}, Subject: &d}
	ref.SchemaVersion = 2
	rb, err := json.Marshal(ref)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	rd := content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, rb)
	rd.ArtifactType = k.artifactType
	if err := pushIfAbsent(ctx, dst, rd, rb); err != nil {
		return ocispec.Descriptor{}, err
	}
	return md, nil
}
