package bundles

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"
)

// MirrorOptions tune one Mirror.
type MirrorOptions struct {
	// All copies every bundle of the source (every bundle tag of a repository, layout or
	// archive; every archive under an S3 prefix), each under its own tag.
	All bool
	// Omit, when set, leaves out the blobs it says yes to, manifests excepted: a thin copy
	// for a node whose receipt says it holds them.
	Omit func(digest.Digest) bool
	// Progress, when set, receives a progress line per bundle.
	Progress io.Writer
}

// Mirror copies the bundle src names, or with All every bundle it holds, with images,
// signatures, attestations and referrers, into dst, and commits dst once. Blobs dst already
// has are not sent; an interrupted mirror run again sends only what is still missing.
func Mirror(ctx context.Context, src, dst Address, o Options, mo MirrorOptions) (*MirrorResult, error) {
	sink, err := Create(ctx, dst, o)
	if err != nil {
		return nil, err
	}
	res := &MirrorResult{}
	defer sink.Close()
	co := CopyOptions{Tag: dst.Reference, Progress: mo.Progress, Omit: mo.Omit}
	if !mo.All {
		s, desc, err := OpenSource(ctx, src, o)
		if err != nil {
			return nil, err
		}
		defer s.Close()
		if _, err := CopyBundle(ctx, s, desc, sink, co); err != nil {
			return nil, err
		}
		return res.commit(ctx, sink)
	}
	if dst.Reference != "" {
		return nil, fmt.Errorf("%s: --all keeps each bundle's tag; name no tag in the destination", dst)
	}
	b, err := backendOf(src)
	if err != nil {
		return nil, err
	}
	places, err := b.list(ctx, src, o)
	if err != nil {
		return nil, err
	}
	n := 0
	for _, p := range places {
		if err := res.mirrorAll(ctx, b, p, sink, o, co, &n); err != nil {
			return nil, err
		}
	}
	if n == 0 {
		return nil, fmt.Errorf("%s: holds no bundle", src)
	}
	return res.commit(ctx, sink)
}

// MirrorResult is what a Mirror copied, and the tags it left alone (not bundles).
type MirrorResult struct {
	Placed  []Placed `json:"bundles"`
	Skipped []string `json:"skipped,omitempty"`
}

func (r *MirrorResult) commit(ctx context.Context, sink Sink) (*MirrorResult, error) {
	placed, err := sink.Commit(ctx)
	if err != nil {
		return nil, err
	}
	r.Placed = placed
	return r, nil
}

// mirrorAll copies every bundle tag of the place p into sink.
func (res *MirrorResult) mirrorAll(ctx context.Context, b backend, p Address, sink Sink, o Options, co CopyOptions, n *int) error {
	s, err := b.open(ctx, p, o)
	if err != nil {
		return err
	}
	defer s.Close()
	tags, err := BundleTags(ctx, s, p)
	if err != nil {
		return err
	}
	for _, tag := range tags {
		desc, err := s.Resolve(ctx, tag)
		if err != nil {
			return fmt.Errorf("%s: resolve %q: %w", p, tag, err)
		}
		if _, err := Open(ctx, s, desc); err != nil {
			// Not every tag of a registry repository is a bundle: a chart or image beside it
			// is left alone, and said so.
			if errors.Is(err, ErrNotBundle) {
				res.Skipped = append(res.Skipped, p.String()+":"+tag)
				continue
			}
			return fmt.Errorf("%s:%s: %w", p, tag, err)
		}
		c := co
		c.Tag = tag
		if _, err := CopyBundle(ctx, s, desc, sink, c); err != nil {
			return fmt.Errorf("%s:%s: %w", p, tag, err)
		}
		*n++
	}
	return nil
}
