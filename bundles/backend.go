package bundles

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

// A bundle lives in one of four places (SPEC §7): a registry, an OCI layout directory, an OCI
// layout in a tar file, or such a tar as an S3 object. Each kind is a backend (registry.go,
// layout.go, archive.go, s3.go) that opens its places for reading (a Source) and for writing
// (a Sink). Everything above them (OpenSource, Copy, Mirror) works on Sources and Sinks and
// never asks which kind it has; conformance_test.go holds every backend to the same contract.

// backend is one kind of place.
type backend interface {
	// open opens the place at a for reading; it does not resolve a's reference.
	open(ctx context.Context, a Address, o Options) (Source, error)
	// create opens the place at a for writing.
	create(ctx context.Context, a Address, o Options) (Sink, error)
	// target opens the place at a for changes in place (ferry bundle sign), where the
	// backend can make them.
	target(ctx context.Context, a Address, o Options) (Target, error)
	// list expands a into the places it names, each opened on its own: an S3 prefix names
	// every archive under it, every other address itself.
	list(ctx context.Context, a Address, o Options) ([]Address, error)
}

var backends = map[Kind]backend{
	KindRegistry: registryBackend{},
	KindLayout:   layoutBackend{},
	KindTar:      archiveBackend{},
	KindS3:       s3Backend{},
}

// Transient reports an error that reading the same place again may not meet, by its type: the
// network (any net.Error: a refused or reset connection, a timeout, a name not resolved), or a
// registry or S3 server answering 5xx or 429. Anything else (not found, denied, content that
// does not check) is what the place holds.
func Transient(err error) bool {
	var (
		ne  net.Error
		reg *errcode.ErrorResponse
		s3  minio.ErrorResponse
	)
	busy := func(code int) bool { return code >= 500 || code == http.StatusTooManyRequests }
	switch {
	case err == nil:
		return false
	case errors.As(err, &ne):
		return true
	case errors.As(err, &reg):
		return busy(reg.StatusCode)
	case errors.As(err, &s3):
		return busy(s3.StatusCode)
	}
	return false
}

// onePlace is the list of a backend whose every address names one place.
type onePlace struct{}

func (onePlace) list(_ context.Context, a Address, _ Options) ([]Address, error) {
	return []Address{a}, nil
}

func backendOf(a Address) (backend, error) {
	b, ok := backends[a.Kind]
	if !ok {
		return nil, fmt.Errorf("%s: unknown address kind", a)
	}
	return b, nil
}

// Options say how to reach registries and S3. The zero value uses the Docker credentials
// file, HTTPS for every registry but loopback ones, and the standard AWS environment.
type Options struct {
	// PlainHTTP talks HTTP to every registry. Loopback registries (localhost, 127.0.0.1,
	// ::1) always use plain HTTP, as Docker does.
	PlainHTTP bool
	// DockerConfig is a Docker config.json with registry credentials; "" means the default
	// ($DOCKER_CONFIG/config.json or ~/.docker/config.json).
	DockerConfig string
	// Progress, when set, receives a progress line for long copies (a terminal); nil is quiet,
	// as CI logs want.
	Progress io.Writer
	// S3 endpoint and credentials; empty fields come from AWS_ENDPOINT_URL_S3 (or
	// AWS_ENDPOINT_URL), AWS_REGION, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
	S3Endpoint, S3Region, S3AccessKey, S3SecretKey string
	// CAFile is a PEM bundle of certificate authorities trusted for registries, besides
	// the system's (a site mirror with its own CA).
	CAFile string
	// S3CredentialsFile is an AWS shared credentials file (profile from AWS_PROFILE, else
	// "default"), read when the environment has no keys; "" means the AWS defaults
	// (AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials and ~/.aws/config).
	S3CredentialsFile string
	// StallTimeout bounds each open, stat and read of a layout directory or archive (a USB
	// stick): one that does not answer in time fails with ErrStalled (0 means
	// DefaultStallTimeout). Registries and S3 have their network timeouts instead.
	StallTimeout time.Duration
	// StagingDir is where a tar or S3 destination is assembled before it is written ("" means
	// the user's cache directory). What an interrupted copy staged there is reused by the
	// next copy to the same destination.
	StagingDir string
}

// Source is a store a bundle can be read from.
type Source interface {
	content.ReadOnlyStorage
	content.Resolver
	// Close releases what opening the source took (temporary files).
	Close() error
}

// Target is a store a bundle can be changed in (signed): a layout directory or a registry.
type Target interface {
	content.Storage
	content.Resolver
	content.Tagger
}

// A Sink is a place being written. What is copied into it reaches its address at Commit: a
// registry or layout directory has each blob as soon as it is pushed, a tar file or S3
// object is written whole at Commit from what was staged.
type Sink interface {
	oras.Target
	// Commit makes what was copied visible at the sink's address and says where each bundle
	// went, in the order they were copied.
	Commit(ctx context.Context) ([]Placed, error)
	// Close releases the sink. A sink closed without Commit keeps what it staged for the next
	// copy to the same address, which then sends only what is still missing.
	Close() error
	// add records a bundle copied in.
	add(p Placed)
}

// Placed is a bundle copied into a sink: the roots of what was copied with it, and where it
// can be read once the sink is committed.
type Placed struct {
	Name    string               `json:"name"`
	Version string               `json:"version"`
	Tag     string               `json:"tag"`
	Digest  string               `json:"digest"`
	Where   string               `json:"to"`
	Bytes   int64                `json:"bytes"`
	roots   []ocispec.Descriptor // the bundle (tagged), its images, signatures, referrers
	omit    func(digest.Digest) bool
}

// placedList is the part of a Sink every backend shares: the bundles copied in.
type placedList struct{ placed []Placed }

func (l *placedList) add(p Placed) { l.placed = append(l.placed, p) }

// OpenSource opens the store at a and resolves the bundle manifest it names. A store
// without a reference must hold exactly one bundle. Reads of a layout or tar are bound to
// ctx as well as to the context of each Fetch, and each has o.StallTimeout to answer.
func OpenSource(ctx context.Context, a Address, o Options) (Source, ocispec.Descriptor, error) {
	b, err := backendOf(a)
	if err != nil {
		return nil, ocispec.Descriptor{}, err
	}
	src, err := b.open(ctx, a, o)
	if err != nil {
		return nil, ocispec.Descriptor{}, err
	}
	ref := a.Reference
	if ref == "" {
		if ref, err = onlyBundleTag(ctx, src, a); err != nil {
			src.Close()
			return nil, ocispec.Descriptor{}, err
		}
	}
	desc, err := src.Resolve(ctx, ref)
	if err != nil {
		src.Close()
		return nil, ocispec.Descriptor{}, fmt.Errorf("%s: resolve %q: %w", a, ref, err)
	}
	return src, desc, nil
}

// Create opens the place at a for writing a bundle into; a names no reference or a tag,
// which each bundle copied in is given instead of its version.
func Create(ctx context.Context, a Address, o Options) (Sink, error) {
	b, err := backendOf(a)
	if err != nil {
		return nil, err
	}
	if strings.Contains(a.Reference, ":") {
		return nil, fmt.Errorf("%s: a destination takes a tag, not a digest", a)
	}
	return b.create(ctx, a, o)
}

// OpenTarget opens a writable store at a (an OCI layout directory or a registry) and resolves
// the bundle it names. A tar or S3 object is read-only: sign the layout or registry copy and
// export it again.
func OpenTarget(ctx context.Context, a Address, o Options) (Target, ocispec.Descriptor, error) {
	b, err := backendOf(a)
	if err != nil {
		return nil, ocispec.Descriptor{}, err
	}
	t, err := b.target(ctx, a, o)
	if err != nil {
		return nil, ocispec.Descriptor{}, err
	}
	ref := a.Reference
	if ref == "" {
		if ref, err = onlyBundleTag(ctx, nopCloser{t}, a); err != nil {
			return nil, ocispec.Descriptor{}, err
		}
	}
	desc, err := t.Resolve(ctx, ref)
	if err != nil {
		return nil, ocispec.Descriptor{}, fmt.Errorf("%s: resolve %q: %w", a, ref, err)
	}
	return t, desc, nil
}

// errInPlace is what target says for a place that cannot be changed where it is.
func errInPlace(a Address) error {
	return fmt.Errorf("%s: a %s cannot be changed in place; sign the layout directory or registry copy, then export it", a, a.Kind)
}

// Copy copies the bundle desc and its signatures from src to the address dst, tagging it
// there with dst's tag or, when dst names none, the bundle's version. It returns where the
// bundle went (for S3, the object key).
func Copy(ctx context.Context, src Source, desc ocispec.Descriptor, dst Address, o Options) (string, error) {
	sink, err := Create(ctx, dst, o)
	if err != nil {
		return "", err
	}
	defer sink.Close()
	if _, err := CopyBundle(ctx, src, desc, sink, CopyOptions{Tag: dst.Reference, Progress: o.Progress}); err != nil {
		return "", err
	}
	placed, err := sink.Commit(ctx)
	if err != nil {
		return "", err
	}
	return placed[0].Where, nil
}

// CopyOptions tune one CopyBundle.
type CopyOptions struct {
	// Tag is the bundle's tag at the destination ("" means its version).
	Tag string
	// Progress, when set, receives a progress line.
	Progress io.Writer
	// Omit, when set, leaves out the blobs it says yes to, manifests excepted (a thin copy).
	Omit func(digest.Digest) bool
}

// CopyBundle copies the bundle desc from src into dst: its graph, the images it carries
// (by digest, untagged: the signed config names them), its cosign signatures and
// attestations under the tag scheme (sha256-….sig, .att) and every OCI 1.1 referrer of it.
// A blob dst already has is not read again; each blob read is digest- and size-checked as
// it is written.
func CopyBundle(ctx context.Context, src Source, desc ocispec.Descriptor, dst Sink, co CopyOptions) (Placed, error) {
	b, err := Open(ctx, src, desc)
	if err != nil {
		return Placed{}, err
	}
	tag := co.Tag
	if tag == "" {
		tag = b.Metadata.Version
	}
	opts := oras.DefaultCopyGraphOptions
	// counted is src for the bulk of the copy, its bytes counted for the progress line; the
	// signatures below are read from src itself (counted hides its referrers API).
	var counted content.ReadOnlyStorage = src
	if co.Progress != nil {
		p := NewProgress(co.Progress, "copy "+b.Metadata.Name+":"+tag, TransferSize(ctx, src, desc, b.Metadata.Images))
		counted = Counted(src, p)
		// Blobs the destination already has count as done without being read.
		opts.OnCopySkipped = func(_ context.Context, d ocispec.Descriptor) error { p.Add(d.Size); return nil }
		defer p.Finish()
	}
	if co.Omit != nil {
		opts.PreCopy = func(_ context.Context, d ocispec.Descriptor) error {
			if !IsManifest(d.MediaType) && co.Omit(d.Digest) {
				return oras.SkipNode
			}
			return nil
		}
	}
	var copied atomic.Int64 // oras copies blobs in parallel
	onCopied := opts.PostCopy
	opts.PostCopy = func(ctx context.Context, d ocispec.Descriptor) error {
		copied.Add(d.Size)
		if onCopied != nil {
			return onCopied(ctx, d)
		}
		return nil
	}
	if err := oras.CopyGraph(ctx, counted, dst, desc, opts); err != nil {
		return Placed{}, fmt.Errorf("copy %s: %w", desc.Digest, err)
	}
	placed := Placed{Name: b.Metadata.Name, Version: b.Metadata.Version, Tag: tag, Digest: desc.Digest.String(), omit: co.Omit}
	placed.roots = append(placed.roots, withRefName(desc, tag))
	// Images two at a time, each with oras's three blobs in flight: an image of one or two
	// layers alone would leave the link idle. A blob two images share may be fetched by both;
	// the sink keeps one.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(imageConcurrency)
	for _, im := range b.Metadata.Images {
		g.Go(func() error {
			if err := oras.CopyGraph(gctx, counted, dst, im.Descriptor, opts); err != nil {
				return fmt.Errorf("copy image %s (%s): %w", im.Name, im.Descriptor.Digest, err)
			}
			return nil
		})
		placed.roots = append(placed.roots, im.Descriptor)
	}
	if err := g.Wait(); err != nil {
		return Placed{}, err
	}
	// Signatures and attestations stored as OCI 1.1 referrers travel too (their graph names
	// the bundle as subject, which is already there).
	if graph, ok := src.(content.ReadOnlyGraphStorage); ok {
		refs, err := registry.Referrers(ctx, graph, desc, "")
		if err != nil && !errors.Is(err, errdef.ErrNotFound) && !errors.Is(err, errdef.ErrUnsupported) {
			return Placed{}, fmt.Errorf("referrers of %s: %w", desc.Digest, err)
		}
		if len(refs) > MaxSignatures {
			return Placed{}, fmt.Errorf("referrers of %s: %d, over the limit of %d", desc.Digest, len(refs), MaxSignatures)
		}
		for _, r := range refs {
			if err := oras.CopyGraph(ctx, src, dst, r, opts); err != nil {
				return Placed{}, fmt.Errorf("copy referrer %s: %w", r.Digest, err)
			}
			placed.roots = append(placed.roots, r)
		}
	}
	// cosign's tag scheme: signatures and attestations by name.
	for _, t := range []string{SignatureTag(desc), AttestationTag(desc)} {
		d, err := src.Resolve(ctx, t)
		if err != nil {
			continue // none stored that way
		}
		if err := oras.CopyGraph(ctx, src, dst, d, opts); err != nil {
			return Placed{}, fmt.Errorf("copy %s: %w", t, err)
		}
		if err := dst.Tag(ctx, d, t); err != nil {
			return Placed{}, fmt.Errorf("tag %s: %w", t, err)
		}
		placed.roots = append(placed.roots, withRefName(d, t))
	}
	// The bundle's tag moves last: a node polling the destination never sees the new
	// revision before its signatures are there.
	if err := dst.Tag(ctx, desc, tag); err != nil {
		return Placed{}, fmt.Errorf("tag %s: %w", tag, err)
	}
	placed.Bytes = copied.Load()
	dst.add(placed)
	return placed, nil
}

// imageConcurrency is how many carried images CopyBundle copies at once.
const imageConcurrency = 2

// AttestationTag is the tag cosign stores the attestations of manifest d under.
func AttestationTag(d ocispec.Descriptor) string {
	return d.Digest.Algorithm().String() + "-" + d.Digest.Encoded() + ".att"
}

// SignatureTag is the tag cosign stores the signatures of manifest d under (SPEC §8).
func SignatureTag(d ocispec.Descriptor) string {
	return d.Digest.Algorithm().String() + "-" + d.Digest.Encoded() + ".sig"
}

// withRefName is d carrying tag as its OCI layout reference name.
func withRefName(d ocispec.Descriptor, tag string) ocispec.Descriptor {
	out := ocispec.Descriptor{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size, ArtifactType: d.ArtifactType}
	out.Annotations = map[string]string{ocispec.AnnotationRefName: tag}
	return out
}

// isBundleTag reports whether tag names a bundle, not a signature or attestation cosign
// stores under the tag scheme, nor a referrers fallback tag (sha256-…).
func isBundleTag(tag string) bool {
	return !strings.HasSuffix(tag, ".sig") && !strings.HasSuffix(tag, ".att") && !strings.HasPrefix(tag, "sha256-")
}

// BundleTags lists the tags of src that name bundles, in order.
func BundleTags(ctx context.Context, src Source, a Address) ([]string, error) {
	lister, ok := src.(interface {
		Tags(context.Context, string, func([]string) error) error
	})
	if !ok {
		return nil, fmt.Errorf("%s: cannot list tags; name a tag or digest", a)
	}
	var tags []string
	err := lister.Tags(ctx, "", func(ts []string) error {
		for _, t := range ts {
			if isBundleTag(t) {
				tags = append(tags, t)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: list tags: %w", a, err)
	}
	return tags, nil
}

// onlyBundleTag finds the one tag in a store that is not a signature.
func onlyBundleTag(ctx context.Context, src Source, a Address) (string, error) {
	tags, err := BundleTags(ctx, src, a)
	if err != nil {
		return "", err
	}
	switch len(tags) {
	case 1:
		return tags[0], nil
	case 0:
		return "", fmt.Errorf("%s: holds no tagged bundle", a)
	default:
		return "", fmt.Errorf("%s: holds %d bundles (%s); add :TAG to choose one", a, len(tags), strings.Join(tags, ", "))
	}
}

type readResolver interface {
	content.ReadOnlyStorage
	content.Resolver
}

// nopCloser is a store with nothing to release as a Source.
type nopCloser struct{ readResolver }

func (nopCloser) Close() error { return nil }

// Predecessors lists what refers to desc (OCI 1.1 referrers) when the wrapped store can.
func (n nopCloser) Predecessors(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	if g, ok := n.readResolver.(content.ReadOnlyGraphStorage); ok {
		return g.Predecessors(ctx, desc)
	}
	return nil, nil
}

// Tags lists tags when the wrapped store can.
func (n nopCloser) Tags(ctx context.Context, last string, fn func([]string) error) error {
	if l, ok := n.readResolver.(interface {
		Tags(context.Context, string, func([]string) error) error
	}); ok {
		return l.Tags(ctx, last, fn)
	}
	return errors.New("cannot list tags")
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
