package rollout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ferrygitops/ferry/apply"
	"github.com/ferrygitops/ferry/store"
)

// Options configure a Manager. The zero value works.
type Options struct {
	// DeadlineMargin is added to the sum of a revision's health timeouts to make the
	// rollout's deadline, past which a rollout interrupted by a crash is not resumed but
	// rolled back; 0 means 1m.
	DeadlineMargin time.Duration
	// Log receives progress; nil discards it.
	Log *slog.Logger
}

// Manager runs the rollout transactions of the bundles kept in one store against the one
// cluster its applier reaches: it alone writes rollout state (transactions, revision
// states, inventories) to the store, and it runs one rollout, sync or removal at a time.
type Manager struct {
	st   *store.Store
	ap   *apply.Applier
	opts Options
	log  *slog.Logger
	// mu makes applies to the cluster one at a time (DESIGN: one apply at a time per
	// cluster), whatever number of bundles the daemon reconciles.
	mu sync.Mutex
}

// New returns a manager of the rollouts of the bundles in st, applied with ap.
func New(st *store.Store, ap *apply.Applier, opts Options) *Manager {
	if opts.DeadlineMargin <= 0 {
		opts.DeadlineMargin = time.Minute
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	return &Manager{st: st, ap: ap, opts: opts, log: opts.Log}
}

// Report says what a rollout or sync did.
type Report struct {
	Bundle       string        `json:"bundle"`
	Revision     uint64        `json:"revision"`
	State        store.State   `json:"state"`
	Applied      int           `json:"applied"`
	Unchanged    int           `json:"unchanged"`
	Pruned       int           `json:"pruned"`
	Drift        []apply.Drift `json:"drift,omitempty"`
	RolledBackTo uint64        `json:"rolledBackTo,omitempty"`
}

var (
	// ErrRolledBack is returned by Rollout when the revision failed and the last good one
	// was restored.
	ErrRolledBack = errors.New("rolled back")
	// ErrFailedBefore is returned by Rollout for a revision that already failed.
	ErrFailedBefore = errors.New("revision failed before; retry it explicitly")
	// ErrRolloutInProgress is returned by Remove while a rollout or rollback of the bundle
	// is open, and by Rollout while a removal is: the two would race. It is the caller's to
	// retry once the other is over.
	ErrRolloutInProgress = errors.New("a rollout is in progress")
	// ErrNotRunning is returned by Remove and Tree for a bundle with no running revision:
	// removed before, or never applied.
	ErrNotRunning = errors.New("no running revision")
)

// Paused reports a rollout stopped by the node rather than by its revision: shutting down
// (ctx done), the cluster out of reach, or the state directory not writable. Such a rollout
// stays open, its revision neither failed nor rolled back, and is resumed.
func Paused(ctx context.Context, err error) bool {
	return err != nil && (ctx.Err() != nil || apply.Transient(err) || store.WriteFailed(err))
}

// Ping asks the API server for its version (see apply.Applier.Ping).
func (m *Manager) Ping(ctx context.Context) error { return m.ap.Ping(ctx) }

// Pause records that the open rollout of bundle name stopped for the node's reasons (see
// Paused): its deadline stops running until the rollout goes on.
func (m *Manager) Pause(name string) error { return m.st.PauseTxn(name) }

// Rollout applies revision rev of bundle name and waits for it to be healthy. If it fails
// to apply or to become healthy, the last good revision is applied again (objects new in rev
// are pruned), rev is recorded failed with the reason, and the error wraps ErrRolledBack.
// A render error fails rev before anything is sent. The sequence is recorded in the store
// before the first object is sent, so Resume can finish it after a crash at any point.
func (m *Manager) Rollout(ctx context.Context, name string, rev uint64) (Report, error) {
	return m.rollout(ctx, name, rev, rolloutNew)
}

// Retry is Rollout for a revision that failed before: a failed revision is never tried
// again by itself, only when someone asks.
func (m *Manager) Retry(ctx context.Context, name string, rev uint64) (Report, error) {
	return m.rollout(ctx, name, rev, rolloutRetry)
}

// RollbackTo is Retry for a rollback someone asked for (ferry rollback): every newer revision
// that is verified or healthy is recorded rolled back in the transaction that opens the
// rollout of rev, so the node stays on rev until a newer revision arrives, and a crash at any
// point leaves either the old state or an open rollout of rev, never a newer revision
// waiting to be applied again.
func (m *Manager) RollbackTo(ctx context.Context, name string, rev uint64) (Report, error) {
	return m.rollout(ctx, name, rev, rolloutManual)
}

type rolloutMode int

const (
	rolloutNew    rolloutMode = iota // a revision not tried before
	rolloutRetry                     // a revision that may have failed before, on request
	rolloutManual                    // ferry rollback: retry, and supersede newer revisions
)

func (m *Manager) rollout(ctx context.Context, name string, rev uint64, mode rolloutMode) (Report, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	defer m.retain()
	rep := Report{Bundle: name, Revision: rev}
	b, err := m.st.GetBundle(name)
	if err != nil {
		return rep, err
	}
	r, err := m.st.GetRevision(name, rev)
	if err != nil {
		return rep, err
	}
	if b.Txn == nil && b.Current == rev && r.State == store.StateHealthy {
		if mode == rolloutManual {
			if err := m.st.Supersede(name, rev); err != nil {
				return rep, err
			}
		}
		return m.sync(ctx, r)
	}
	if b.Txn != nil && b.Txn.Phase == store.StateRemoving {
		return rep, fmt.Errorf("%s: %w: the removal of revision %d is unfinished; Resume finishes it first", name, ErrRolloutInProgress, b.Txn.Revision)
	}
	lastGood := b.LastGood
	inTxn := b.Txn != nil && b.Txn.Revision == rev
	if inTxn {
		lastGood = b.Txn.LastGood
		if b.Txn.Phase == store.StateFailed {
			return m.rollback(ctx, rep, lastGood, errors.New(b.Txn.Reason))
		}
	}
	if b.Txn != nil && !inTxn {
		return rep, fmt.Errorf("%s: the rollout of revision %d is unfinished; Resume finishes it first", name, b.Txn.Revision)
	}
	if mode == rolloutNew && !inTxn && (r.State == store.StateFailed || r.State == store.StateRolledBack) {
		return rep, fmt.Errorf("%s revision %d: %w", name, rev, ErrFailedBefore)
	}
	comps, err := m.build(ctx, r)
	if Paused(ctx, err) {
		return rep, err
	}
	if err != nil {
		rep.State = store.StateFailed
		if serr := m.st.SetState(name, rev, store.StateFailed, "render: "+err.Error()); serr != nil {
			return rep, errors.Join(err, serr)
		}
		return rep, fmt.Errorf("%s revision %d: %w", name, rev, err)
	}
	var total time.Duration
	for _, c := range comps {
		total += c.Timeout()
	}
	deadline := time.Now().Add(total + m.opts.DeadlineMargin)
	if inTxn && b.Txn.Phase == store.StateApplying {
		// Resuming keeps the first deadline, moved on only by the time the rollout was
		// paused (the API server or the state directory out of service): a node that
		// crashes again and again during a rollout must still fall back to the last good
		// revision in the end.
		deadline = b.Txn.DeadlineAt(time.Now())
	}
	begin := m.st.Begin
	if mode == rolloutManual {
		begin = m.st.BeginRollback
	}
	if err := begin(name, rev, deadline, fmt.Sprintf("last good %d, deadline %s", lastGood, deadline.UTC().Format(time.RFC3339))); err != nil {
		return rep, err
	}
	m.log.Info("applying", "bundle", name, "revision", rev, "lastGood", lastGood)
	// What the cluster held before rev (compared, then pruned if rev no longer has it), oldest
	// first; rev's own records (an interrupted attempt) are the newest.
	var before []uint64
	for _, x := range []uint64{lastGood, b.Current} {
		if x != rev {
			before = append(before, x)
		}
	}
	p, err := m.newPass(name, rev, comps, before, passRollout)
	if err != nil {
		return rep, err
	}
	rep, err = m.run(ctx, p)
	if err == nil {
		rep.State = store.StateHealthy
		note := fmt.Sprintf("applied %d, unchanged %d, pruned %d", rep.Applied, rep.Unchanged, rep.Pruned)
		m.log.Info("healthy", "bundle", name, "revision", rev, "applied", rep.Applied, "unchanged", rep.Unchanged, "pruned", rep.Pruned)
		return rep, m.st.SetState(name, rev, store.StateHealthy, note)
	}
	if Paused(ctx, err) {
		// Shutting down, the API server went away, or the state directory cannot be
		// written: the transaction stays open and Resume finishes it.
		return rep, err
	}
	m.log.Error("revision failed", "bundle", name, "revision", rev, "err", err)
	if serr := m.st.SetState(name, rev, store.StateFailed, err.Error()); serr != nil {
		return rep, errors.Join(err, serr)
	}
	rep.State = store.StateFailed
	if lastGood == 0 {
		return rep, fmt.Errorf("%s revision %d failed and there is no last good revision to roll back to: %w", name, rev, err)
	}
	return m.rollback(ctx, rep, lastGood, err)
}

// rollback applies lastGood again, prunes what the failed revision added, and records the
// failed revision rolled back.
func (m *Manager) rollback(ctx context.Context, rep Report, lastGood uint64, cause error) (Report, error) {
	name, rev := rep.Bundle, rep.Revision
	m.log.Warn("rolling back", "bundle", name, "revision", rev, "to", lastGood)
	r, err := m.st.GetRevision(name, lastGood)
	if err != nil {
		return rep, fmt.Errorf("roll back to %d: %w", lastGood, err)
	}
	comps, err := m.build(ctx, r)
	if err != nil {
		return rep, fmt.Errorf("roll back to %d: %w", lastGood, err)
	}
	// The failed revision's objects are compared and pruned against the good one's, every
	// one of them: the failed revision was never good, whatever its prune settings.
	p, err := m.newPass(name, lastGood, comps, []uint64{rev}, passRollback)
	if err != nil {
		return rep, err
	}
	back, err := m.run(ctx, p)
	if err != nil {
		return rep, fmt.Errorf("roll back to %d: %w (after: %v)", lastGood, err, cause)
	}
	rep.RolledBackTo, rep.State, rep.Pruned = lastGood, store.StateRolledBack, back.Pruned
	if err := m.st.SetState(name, rev, store.StateRolledBack, fmt.Sprintf("rolled back to %d", lastGood)); err != nil {
		return rep, err
	}
	m.log.Info("rolled back", "bundle", name, "revision", rev, "to", lastGood, "pruned", back.Pruned)
	return rep, fmt.Errorf("%s revision %d: %w to %d: %v", name, rev, ErrRolledBack, lastGood, cause)
}

// Resume finishes a rollout a crash interrupted: before its deadline the revision is applied
// again (every step is idempotent), after it, or if it had already failed, the last good
// revision is restored. An interrupted removal (see Remove) is finished. With no open
// transaction it does nothing.
func (m *Manager) Resume(ctx context.Context, name string) (Report, error) {
	b, err := m.st.GetBundle(name)
	if err != nil || b.Txn == nil {
		return Report{Bundle: name, Revision: b.Current}, err
	}
	if b.Txn.Phase == store.StateRemoving {
		// A removal is finished, never rolled out: the bundle was asked to go.
		rm, err := m.Remove(ctx, name)
		return Report{Bundle: rm.Bundle, Revision: rm.Revision, State: store.StateRemoved, Pruned: len(rm.Pruned) + len(rm.Releases)}, err
	}
	if b.Txn.Phase == store.StateApplying && time.Now().After(b.Txn.DeadlineAt(time.Now())) {
		reason := "interrupted, and its deadline passed before the node came back"
		if err := m.st.SetState(name, b.Txn.Revision, store.StateFailed, reason); err != nil {
			return Report{}, err
		}
		if b.Txn.LastGood == 0 {
			return Report{Bundle: name, Revision: b.Txn.Revision, State: store.StateFailed}, nil
		}
	}
	return m.Rollout(ctx, name, b.Txn.Revision)
}

// Sync brings the bundle's current, healthy revision back into the cluster: objects that
// drifted are corrected (or reported, in warn mode). With nothing changed it sends no write.
func (m *Manager) Sync(ctx context.Context, name string) (Report, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, err := m.st.GetBundle(name)
	if err != nil {
		return Report{}, err
	}
	if b.Txn != nil || b.Current == 0 || b.Current != b.LastGood {
		return Report{Bundle: name, Revision: b.Current}, fmt.Errorf("%s: no healthy revision to sync (a rollout is unfinished, failed, or none was applied)", name)
	}
	r, err := m.st.GetRevision(name, b.Current)
	if err != nil {
		return Report{Bundle: name, Revision: b.Current}, err
	}
	return m.sync(ctx, r)
}

func (m *Manager) sync(ctx context.Context, r *store.Revision) (Report, error) {
	rep := Report{Bundle: r.Name, Revision: r.Revision, State: store.StateHealthy}
	comps, err := m.build(ctx, r)
	if err != nil {
		return rep, err
	}
	p, err := m.newPass(r.Name, r.Revision, comps, nil, passSync)
	if err != nil {
		return rep, err
	}
	rep, err = m.run(ctx, p)
	rep.State = store.StateHealthy
	for _, d := range rep.Drift {
		m.log.Warn("drift", "bundle", r.Name, "revision", r.Revision, "object", d.Object.String(), "path", d.Path, "corrected", d.Corrected)
	}
	return rep, err
}

// build builds every component of a stored revision (see apply.Applier.Build), confined by
// the scopes recorded when it was admitted.
func (m *Manager) build(ctx context.Context, r *store.Revision) ([]apply.Component, error) {
	scopes, err := signerScopes(r)
	if err != nil {
		return nil, err
	}
	return m.ap.Build(ctx, apply.BuildOptions{Source: m.st, Manifest: r.Manifest, Bundle: r.Name, Scopes: scopes})
}

// retain applies the store's retention once a rollout moved the pointers.
func (m *Manager) retain() {
	if _, err := m.st.GC(); err != nil {
		m.log.Warn("store GC", "err", err)
	}
}

// Preview is apply.Applier.Preview for bundle b, not admitted, its layers read from src,
// compared with the running revision of the bundle of the same name. It writes nothing.
func (m *Manager) Preview(ctx context.Context, src apply.PreviewOptions) (apply.Plan, error) {
	name := src.Bundle.Metadata.Name
	if cur, err := m.st.GetBundle(name); err == nil {
		if src.Running, err = m.inventories(name, cur.Current); err != nil {
			return apply.Plan{}, err
		}
	} else if !errors.Is(err, store.ErrNotFound) {
		return apply.Plan{}, err
	}
	return m.ap.Preview(ctx, src)
}
