package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"golang.org/x/sync/errgroup"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ferrygitops/ferry/apply"
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
	b, res, err := check(ctx, src, desc, policy)
	if err != nil {
		return nil, err
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

// check is everything admission verifies before it writes: the signatures against policy,
// the manifest and config, the signing keys' scope over the bundle's name, and every layer
// read as render reads it. Ingest and Preview share it.
func check(ctx context.Context, src bundles.Source, desc ocispec.Descriptor, policy verify.Policy) (*bundles.Bundle, *verify.Result, error) {
	res, err := verify.Bundle(ctx, src, desc, policy)
	if err != nil {
		return nil, nil, err
	}
	b, err := bundles.Open(ctx, src, desc)
	if err != nil {
		return nil, nil, err
	}
	if err := res.Scoped(b.Metadata.Name); err != nil {
		return nil, nil, err
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
		return nil, nil, fmt.Errorf("ingest %s revision %d: %w", b.Metadata.Name, b.Metadata.Revision, err)
	}
	return b, res, nil
}

// Preview is what the node would do with a bundle, written nowhere: `ferry import --dry-run`
// and `ferry diff` on the node.
type Preview struct {
	Bundle   string          `json:"bundle"`
	Revision uint64          `json:"revision"`
	Version  string          `json:"version"`
	Digest   string          `json:"digest"`
	Signers  []verify.Signer `json:"signers"`
	// Running is the revision of the bundle the node runs now, 0 for none.
	Running uint64 `json:"running"`
	// Admission is "new" when the node would admit it, "held" when the node holds this
	// very revision already (an import changes nothing), "refused" when it would not admit
	// it (older than its newest revision, or the same revision number with other content).
	Admission string `json:"admission"`
	// NotAdmitted says why, when Admission is not "new".
	NotAdmitted string `json:"notAdmitted,omitempty"`
	// Plan is what rolling it out would change in the cluster now.
	Plan apply.Plan `json:"plan"`
}

// Preview verifies the bundle at ref against the node's trust policy exactly as an import
// does, then asks the engine what its rollout would change, without writing anything to the
// store or the cluster. An untrusted bundle is an error (verify.ErrUntrusted), as for import.
func (d *Daemon) Preview(ctx context.Context, ref string) (*Preview, error) {
	addr, err := bundles.ParseAddress(ref)
	if err != nil {
		return nil, err
	}
	src, desc, err := bundles.OpenSource(ctx, addr, bundles.Options{})
	if err != nil {
		return nil, err
	}
	defer src.Close()
	b, res, err := check(ctx, src, desc, d.policy)
	if err != nil {
		return nil, err
	}
	p := &Preview{Bundle: b.Metadata.Name, Revision: b.Metadata.Revision, Version: b.Metadata.Version, Digest: desc.Digest.String(), Signers: res.Signers}
	if cur, err := d.st.GetBundle(p.Bundle); err == nil {
		p.Running = cur.Current
	}
	p.Admission = "new"
	if err := d.st.CheckAdmission(p.Bundle, p.Revision, desc.Digest); err != nil && !errors.Is(err, store.ErrNotFound) {
		switch {
		case errors.Is(err, store.ErrAlreadyAdmitted):
			p.Admission = "held"
		case errors.Is(err, store.ErrDowngrade), errors.Is(err, store.ErrEquivocation):
			p.Admission = "refused"
		default:
			return nil, err
		}
		p.NotAdmitted = err.Error()
	}
	var scopes []*bundles.Scope
	for _, s := range res.Signers {
		if s.Scope != nil {
			scopes = append(scopes, s.Scope)
		}
	}
	if p.Plan, err = d.eng.Preview(ctx, src, b, scopes); err != nil {
		return nil, fmt.Errorf("%s revision %d would fail to roll out: %w", p.Bundle, p.Revision, err)
	}
	return p, nil
}
