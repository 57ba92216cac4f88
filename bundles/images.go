package bundles

import (
	"context"
	"fmt"
	"io"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry"
)

// MaxImageBlobs bounds the graph of one carried image (index, manifests, configs, layers).
const MaxImageBlobs = 10_000

// NormalizeImage turns an image name as Kubernetes manifests write it into a full reference:
// "nginx:1.25" is docker.io/library/nginx:1.25, a name without tag or digest gets :latest.
func NormalizeImage(name string) (registry.Reference, error) {
	ref := name
	first, _, hasSlash := strings.Cut(ref, "/")
	if !hasSlash || (!strings.ContainsAny(first, ".:") && first != "localhost") {
		if !hasSlash {
			ref = "library/" + ref
		}
		ref = "docker.io/" + ref
	}
	r, err := registry.ParseReference(ref)
	if err != nil {
		return r, fmt.Errorf("image %q: %w", name, err)
	}
	// Docker Hub's other spellings: index.docker.io is docker.io, and an official image
	// lives under library/ whichever way it is written.
	if r.Registry == "index.docker.io" {
		r.Registry = "docker.io"
	}
	if r.Registry == "docker.io" && !strings.Contains(r.Repository, "/") {
		r.Repository = "library/" + r.Repository
	}
	if r.Reference == "" {
		r.Reference = "latest"
	}
	return r, nil
}

// IsManifest reports whether mediaType is one of an image manifest or index (OCI or Docker's):
// content a registry serves under /manifests/ rather than /blobs/.
func IsManifest(mediaType string) bool {
	switch mediaType {
	case ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex, mediaTypeDockerManifest, mediaTypeDockerManifestList:
		return true
	}
	return false
}

// ImageBlobs walks the graph of a carried image in src (index → manifests → configs and
// layers) and returns every descriptor in it, the root first, each manifest read size- and
// digest-checked.
func ImageBlobs(ctx context.Context, src content.Fetcher, root ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	out := []ocispec.Descriptor{}
	seen := map[string]bool{}
	queue := []ocispec.Descriptor{root}
	for len(queue) > 0 {
		d := queue[0]
		queue = queue[1:]
		if seen[d.Digest.String()] {
			continue
		}
		seen[d.Digest.String()] = true
		if len(out) >= MaxImageBlobs {
			return nil, fmt.Errorf("image %s: more than %d blobs", root.Digest, MaxImageBlobs)
		}
		out = append(out, d)
		if IsManifest(d.MediaType) {
			if _, err := FetchLimited(ctx, src, d, MaxManifestBytes); err != nil {
				return nil, fmt.Errorf("image %s: %w", root.Digest, err)
			}
			children, err := content.Successors(ctx, src, d)
			if err != nil {
				return nil, fmt.Errorf("image %s: %w", root.Digest, err)
			}
			queue = append(queue, children...)
		}
	}
	return out, nil
}

// Check reads every blob of the bundle from src and checks it against the digest the
// signed manifest and config give: each component layer (and its files) and rendered layer,
// and each carried image's manifests, configs and layers, streamed.
func (b *Bundle) Check(ctx context.Context, src content.Fetcher) error {
	for i := range b.Metadata.Components {
		if err := b.CheckLayer(ctx, src, i); err != nil {
			return err
		}
		if err := b.CheckRendered(ctx, src, i); err != nil {
			return err
		}
	}
	var blobs []ocispec.Descriptor
	for _, im := range b.Metadata.Images {
		graph, err := ImageBlobs(ctx, src, im.Descriptor)
		if err != nil {
			return err
		}
		for _, d := range graph {
			if !IsManifest(d.MediaType) { // the walk read and checked those
				blobs = append(blobs, d)
			}
		}
	}
	return CheckBlobs(ctx, src, blobs, 2)
}

// CheckBlobs reads each blob of descs from src, streaming, and checks its size and digest:
// what a technician's `ferry bundle verify` does so that a damaged copy fails on the laptop,
// not on the node. Up to concurrency blobs are read at once (hashing is one core per blob).
func CheckBlobs(ctx context.Context, src content.Fetcher, descs []ocispec.Descriptor, concurrency int) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(max(concurrency, 1))
	for _, d := range descs {
		g.Go(func() error {
			if err := d.Digest.Validate(); err != nil || d.Size < 0 {
				return fmt.Errorf("blob %q: not a valid descriptor", d.Digest)
			}
			rc, err := src.Fetch(ctx, d)
			if err != nil {
				return fmt.Errorf("blob %s: %w", d.Digest, err)
			}
			defer rc.Close()
			vr := content.NewVerifyReader(rc, d)
			if _, err := io.CopyBuffer(io.Discard, vr, make([]byte, 1<<20)); err != nil {
				return fmt.Errorf("blob %s: %w", d.Digest, err)
			}
			if err := vr.Verify(); err != nil {
				return fmt.Errorf("blob %s: %w", d.Digest, err)
			}
			return nil
		})
	}
	return g.Wait()
}
