package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"golang.org/x/sync/errgroup"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/store"
	"github.com/ferrygitops/ferry/verify"
)

// Ingest admits the bundle desc from src into st if, and only if, its signatures satisfy
// policy. In order: verify the signatures over the manifest digest (reading only the
// signature manifest and payloads), read and validate the manifest and config (size- and
// digest-checked), then let the store copy the blobs, each checked while it streams, and
// apply the anti-downgrade rule. source names where the bundle came from, for the record.
func Ingest(ctx context.Context, st *store.Store, src bundles.Source, desc ocispec.Descriptor, policy verify.Policy, source string) (*store.Revision, error) {
	return IngestCounted(ctx, st, src, desc, policy, source, nil)
}

// IngestCounted is Ingest that counts the bytes it copies into the store in p (its total set
// to what the store lacks), for a progress line; p may be nil.
func IngestCounted(ctx context.Context, st *store.Store, src bundles.Source, desc ocispec.Descriptor, policy verify.Policy, source string, p *bundles.Progress) (*store.Revision, error) {
	res, err := verify.Bundle(ctx, src, desc, policy)
	if err != nil {
		return nil, err
	}
	b, err := bundles.Open(ctx, src, desc)
	if err != nil {
		return nil, err
	}
	if err := res.Scoped(b.Metadata.Name); err != nil {
		return nil, err
	}
	// Verify before write covers what the layers hold: each is read with the reader render
	// uses (names, types, sizes, no links, UTF-8), so a revision that is admitted can be read.
	// Two at a time: each check is one core (SHA-256, inflate, the tar walk).
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(2)
	for i := range b.Metadata.Components {
		g.Go(func() error { return b.CheckLayer(gctx, src, i) })
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("ingest %s revision %d: %w", b.Metadata.Name, b.Metadata.Revision, err)
	}
	record, err := json.Marshal(res)
	if err != nil {
		return nil, err
	}
	blobs := append([]ocispec.Descriptor{b.Manifest.Config}, b.Manifest.Layers...)
	blobs = append(blobs, res.SignatureBlobs()...)
	for _, im := range b.Metadata.Images {
		graph, err := bundles.ImageBlobs(ctx, src, im.Descriptor)
		if err != nil {
			return nil, err
		}
		blobs = append(blobs, graph...)
	}
	var need int64
	for _, d := range append([]ocispec.Descriptor{desc}, blobs...) {
		if !st.HasBlob(d.Digest) {
			need += d.Size
		}
	}
	p.SetTotal(need)
	rev, err := st.Admit(ctx, bundles.Counted(src, p), store.Admission{
		Name: b.Metadata.Name, Revision: b.Metadata.Revision, Version: b.Metadata.Version,
		Manifest: desc, Blobs: blobs, Source: source, Verification: record,
	})
	if err != nil {
		// The store's refusals name the bundle and revision already.
		if errors.Is(err, store.ErrDowngrade) || errors.Is(err, store.ErrEquivocation) {
			return nil, err
		}
		return nil, fmt.Errorf("ingest %s revision %d: %w", b.Metadata.Name, b.Metadata.Revision, err)
	}
	return rev, nil
}
