package images

import (
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"sort"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry"

	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/store"
)

// Store is what the endpoint reads: the store's records and content files.
type Store interface {
	Bundles() ([]store.Bundle, error)
	Revisions(name string) ([]store.Revision, error)
	Generation() (uint64, error)
	OpenBlob(d digest.Digest) (*os.File, error)
	Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error)
}

// Held is one image the node holds: its full name, the digest it resolves to, and which
// revisions carry it.
type Held struct {
	Name      string   `json:"name"`   // registry/repository:tag (or @digest), normalised
	Digest    string   `json:"digest"` // of the manifest or index
	Served    bool     `json:"served"` // its tag resolves now (a healthy or current revision carries it)
	Revisions []string `json:"revisions"`
}

// index is the endpoint's view of the store at one generation.
type index struct {
	repos map[string]*repo    // "docker.io/library/nginx"
	paths map[string][]string // "library/nginx" → the full names holding that path
	held  []Held
}

type repo struct {
	tags      map[string]tagged
	carried   map[string]bool                      // every tag a kept revision carries, served or not
	manifests map[digest.Digest]ocispec.Descriptor // manifests and indexes of the graphs
	blobs     map[digest.Digest]int64              // configs and layers of the graphs, with their sizes
}

// tagged is a tag's candidate target; rank orders candidates (higher wins).
type tagged struct {
	desc ocispec.Descriptor
	rank rank
}

type rank struct {
	current  bool
	revision uint64
	bundle   string
}

func (a rank) beats(b rank) bool {
	if a.current != b.current {
		return a.current
	}
	if a.revision != b.revision {
		return a.revision > b.revision
	}
	return a.bundle < b.bundle
}

// carriedImage is one image a revision carries, with its graph: what a revision's manifest
// says, which never changes for a digest, so it is read once per manifest.
type carriedImage struct {
	ref   registry.Reference
	root  ocispec.Descriptor
	graph []ocispec.Descriptor
}

// carriedBy reads the images a bundle manifest carries and walks their graphs in st.
func carriedBy(ctx context.Context, st Store, manifest ocispec.Descriptor) ([]carriedImage, error) {
	bun, err := bundles.Open(ctx, st, manifest)
	if err != nil {
		return nil, err
	}
	var out []carriedImage
	for _, im := range bun.Metadata.Images {
		ref, err := bundles.NormalizeImage(im.Name)
		if err != nil {
			return nil, err
		}
		graph, err := bundles.ImageBlobs(ctx, st, im.Descriptor)
		if err != nil {
			return nil, err
		}
		out = append(out, carriedImage{ref: ref, root: im.Descriptor, graph: graph})
	}
	return out, nil
}

// buildIndex reads every kept revision's record and the images it carries (through cache,
// by manifest digest; entries of revisions no longer kept are dropped from it). A revision
// whose records cannot be read contributes nothing and is reported in errs; the rest of the
// node's images are still served.
func buildIndex(ctx context.Context, st Store, cache map[digest.Digest][]carriedImage) (*index, []error) {
	idx := &index{repos: map[string]*repo{}, paths: map[string][]string{}}
	var errs []error
	bs, err := st.Bundles()
	if err != nil {
		return idx, []error{err}
	}
	type heldKey struct {
		repo, tag string
		digest    digest.Digest
	}
	heldAt := map[heldKey]*Held{}
	used := map[digest.Digest][]carriedImage{}
	defer func() {
		clear(cache)
		maps.Copy(cache, used)
	}()
	for _, b := range bs {
		revs, err := st.Revisions(b.Name)
		if err != nil {
			errs = append(errs, fmt.Errorf("bundle %s: %w", b.Name, err))
			continue
		}
		for _, r := range revs {
			ims, ok := cache[r.Manifest.Digest]
			if !ok {
				if ims, err = carriedBy(ctx, st, r.Manifest); err != nil {
					errs = append(errs, fmt.Errorf("%s revision %d: %w", r.Name, r.Revision, err))
					continue
				}
			}
			used[r.Manifest.Digest] = ims
			current := r.Revision == b.Current
			serves := current || r.State == store.StateHealthy
			for _, ci := range ims {
				ref, graph, im := ci.ref, ci.graph, bundles.Image{Descriptor: ci.root}
				name := ref.Registry + "/" + ref.Repository
				rp := idx.repos[name]
				if rp == nil {
					rp = &repo{tags: map[string]tagged{}, carried: map[string]bool{}, manifests: map[digest.Digest]ocispec.Descriptor{}, blobs: map[digest.Digest]int64{}}
					idx.repos[name] = rp
					idx.paths[ref.Repository] = append(idx.paths[ref.Repository], name)
				}
				for _, d := range graph {
					if bundles.IsManifest(d.MediaType) {
						rp.manifests[d.Digest] = ocispec.Descriptor{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size}
					} else {
						rp.blobs[d.Digest] = d.Size
					}
				}
				key := heldKey{repo: name, digest: im.Descriptor.Digest}
				if _, err := ref.Digest(); err != nil { // a tag, not a digest
					key.tag = ref.Reference
				}
				tag := key.tag
				h := heldAt[key]
				if h == nil {
					h = &Held{Name: name + "@" + key.digest.String(), Digest: key.digest.String()}
					if tag != "" {
						h.Name = name + ":" + tag
					}
					heldAt[key] = h
				}
				h.Revisions = append(h.Revisions, fmt.Sprintf("%s/%d", r.Name, r.Revision))
				if tag != "" {
					rp.carried[tag] = true
				}
				if tag == "" || !serves {
					continue
				}
				cand := tagged{desc: rp.manifests[im.Descriptor.Digest], rank: rank{current, r.Revision, r.Name}}
				if old, ok := rp.tags[tag]; !ok || cand.rank.beats(old.rank) {
					rp.tags[tag] = cand
				}
			}
		}
	}
	for _, names := range idx.paths {
		sort.Strings(names)
	}
	for k, h := range heldAt {
		if rp := idx.repos[k.repo]; rp != nil && k.tag != "" {
			h.Served = rp.tags[k.tag].desc.Digest == k.digest
		}
		sort.Strings(h.Revisions)
		idx.held = append(idx.held, *h)
	}
	sort.Slice(idx.held, func(i, j int) bool {
		if idx.held[i].Name != idx.held[j].Name {
			return idx.held[i].Name < idx.held[j].Name
		}
		return idx.held[i].Digest < idx.held[j].Digest
	})
	return idx, errs
}
