package daemon

import (
	"context"
	"errors"
	"time"

	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/store"
	"github.com/ferrygitops/ferry/verify"
)

// Poller is one configured source's poller and the admission behind it, without the rest of
// the daemon (no reconcile loop, API, metrics or events): the daemon's own source code and
// Ingest into st, pass by pass. bench/fleet runs hundreds of them in one process to measure
// what a fleet polling one mirror costs the mirror. As the daemon's poller does, it remembers
// the candidates admitted or refused for good, so an unchanged source costs its poll only.
type Poller struct {
	src     source
	name    string
	st      *store.Store
	policy  verify.Policy
	handled map[string]bool
}

// NewPoller returns the poller of the source c (as Config.Validate accepts it) that admits
// into st what policy trusts.
func NewPoller(c SourceConfig, st *store.Store, policy verify.Policy) *Poller {
	return &Poller{src: newSource(c), name: c.Name, st: st, policy: policy, handled: map[string]bool{}}
}

// Interval is the time between two passes, the source's default when its config sets none.
func (p *Poller) Interval() time.Duration { return p.src.interval() }

// Pass polls the source once and admits each candidate not handled before, as one pass of the
// daemon's poller does, and returns the revisions it admitted. The error joins the poll's and
// the refusals'; a revision already held is no error. Pass must not be called concurrently.
func (p *Poller) Pass(ctx context.Context) ([]*store.Revision, error) {
	cands, err := p.src.poll(ctx)
	errs := []error{err}
	var revs []*store.Revision
	for _, c := range cands {
		if p.handled[c.key] {
			continue
		}
		rev, err := p.admit(ctx, c)
		switch {
		case err == nil:
			revs = append(revs, rev)
		case errors.Is(err, store.ErrDowngrade):
			// Held already (or older): nothing to do, as the daemon logs it at debug.
		case ctx.Err() != nil || retryable(err) || unsignedYet(c, err):
			errs = append(errs, err)
			continue // read again at the next pass
		default:
			errs = append(errs, err)
		}
		p.handled[c.key] = true
	}
	return revs, errors.Join(errs...)
}

func (p *Poller) admit(ctx context.Context, c candidate) (*store.Revision, error) {
	src, desc, err := bundles.OpenSource(ctx, c.addr, c.opts)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	return Ingest(ctx, p.st, src, desc, p.policy, p.name+": "+c.addr.String())
}
