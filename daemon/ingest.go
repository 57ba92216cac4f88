package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"golang.org/x/sync/errgroup"
	"oras.land/oras-go/v2/errdef"

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
	c, err := check(ctx, st, src, desc, policy)
	if err != nil {
		return nil, err
	}
	b, res, blobs := c.bundle, c.result, c.blobs
	record, err := json.Marshal(res)
	if err != nil {
		return nil, err
	}
	var need int64
	for _, d := range append([]ocispec.Descriptor{desc}, blobs...) {
		if !st.HasBlob(d.Digest) {
			need += d.Size
		}
	}
	p.SetTotal(need)
	rev, err := st.Admit(ctx, bundles.Counted(c.src, p), store.Admission{
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

// checked is a bundle that passed check: what was verified, the source to read it from
// (the node's store behind it) and every blob an admission copies.
type checked struct {
	bundle *bundles.Bundle
	result *verify.Result
	src    bundles.Source
	blobs  []ocispec.Descriptor
}

// check is everything admission verifies before it writes: the signatures against policy,
// the manifest and config, the signing keys' scope over the bundle's name, the provenance
// their scopes require (SLSA attestations by the policy's keys), that every blob
// is in the source or already in the store (a thin archive leaves those out), and every
// layer read as render reads it. Ingest and Preview share it.
func check(ctx context.Context, st *store.Store, src bundles.Source, desc ocispec.Descriptor, policy verify.Policy) (*checked, error) {
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
	if err := res.Attested(ctx, src, desc, policy, b.Metadata); err != nil {
		return nil, err
	}
	held := heldSource{src, st}
	blobs := append([]ocispec.Descriptor{b.Manifest.Config}, b.Manifest.Layers...)
	blobs = append(blobs, res.SignatureBlobs()...)
	for _, im := range b.Metadata.Images {
		graph, err := bundles.ImageBlobs(ctx, held, im.Descriptor)
		if err != nil {
			return nil, err
		}
		blobs = append(blobs, graph...)
	}
	if err := held.complete(ctx, b, blobs); err != nil {
		return nil, err
	}
	// Verify before write covers what the layers hold: each is read with the reader render
	// uses (names, types, sizes, no links, UTF-8), so a revision that is admitted can be read.
	// Two at a time: each check is one core (SHA-256, inflate, the tar walk).
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(2)
	for i := range b.Metadata.Components {
		g.Go(func() error {
			if err := b.CheckLayer(gctx, held, i); err != nil {
				return err
			}
			return b.CheckRendered(gctx, held, i)
		})
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("ingest %s revision %d: %w", b.Metadata.Name, b.Metadata.Revision, err)
	}
	return &checked{bundle: b, result: res, src: held, blobs: blobs}, nil
}

// heldSource is a bundle's source with the node's store behind it: a blob the source lacks
// is read from the store when the store holds it. A thin archive (ferry bundle export
// --receipt) leaves out what the node's receipt says it holds. Store blobs were digest-checked
// when written and are checked again wherever they are read.
type heldSource struct {
	bundles.Source
	st *store.Store
}

func (h heldSource) Fetch(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	rc, err := h.Source.Fetch(ctx, d)
	if errors.Is(err, errdef.ErrNotFound) && h.st.HasBlob(d.Digest) {
		return h.st.Fetch(ctx, d)
	}
	return rc, err
}

func (h heldSource) Exists(ctx context.Context, d ocispec.Descriptor) (bool, error) {
	if h.st.HasBlob(d.Digest) {
		return true, nil
	}
	return h.Source.Exists(ctx, d)
}

// complete refuses the bundle unless every blob is in the source or the store, naming what
// is missing: nothing is written for a thin archive made for another node or an older state.
func (h heldSource) complete(ctx context.Context, b *bundles.Bundle, blobs []ocispec.Descriptor) error {
	var missing []string
	var bytes int64
	for _, d := range blobs {
		if h.st.HasBlob(d.Digest) {
			continue
		}
		ok, err := h.Source.Exists(ctx, d)
		if err != nil {
			return fmt.Errorf("ingest %s revision %d: blob %s: %w", b.Metadata.Name, b.Metadata.Revision, d.Digest, err)
		}
		if !ok {
			missing = append(missing, d.Digest.String())
			bytes += d.Size
		}
	}
	if len(missing) == 0 {
		return nil
	}
	shown := missing
	if len(shown) > 5 {
		shown = append(shown[:5:5], fmt.Sprintf("and %d more", len(missing)-5))
	}
	return fmt.Errorf("%w: %s revision %d: %d blobs (%d bytes) are neither in it nor on this node: %s; "+
		"export it again from this node's latest receipt, or whole", ErrIncomplete, b.Metadata.Name, b.Metadata.Revision, len(missing), bytes, strings.Join(shown, ", "))
}

// ErrIncomplete is a bundle that lacks blobs the node does not hold either: a thin archive
// made against another node's receipt, or a copy cut short.
var ErrIncomplete = errors.New("incomplete bundle")

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
// does, then asks the applier what its rollout would change, without writing anything to the
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
	c, err := check(ctx, d.st, src, desc, d.policy)
	if err != nil {
		return nil, err
	}
	b, res := c.bundle, c.result
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
	if p.Plan, err = d.eng.Preview(ctx, apply.PreviewOptions{Source: c.src, Bundle: b, Scopes: res.Scopes()}); err != nil {
		return nil, fmt.Errorf("%s revision %d would fail to roll out: %w", p.Bundle, p.Revision, err)
	}
	return p, nil
}
