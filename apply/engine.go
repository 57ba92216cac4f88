package apply

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"helm.sh/helm/v3/pkg/release"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"oras.land/oras-go/v2/content"
	kyaml "sigs.k8s.io/kustomize/kyaml/yaml"

	"github.com/ferrygitops/ferry/apply/render"
	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/store"
)

// Options configure an Engine. The zero value works.
type Options struct {
	Env
	// Concurrency bounds requests in flight; 0 means 32.
	Concurrency int
	// PollInterval is how often health and deletions are checked; 0 means 1s.
	PollInterval time.Duration
	// FailureWindow is how long an object must stay Failed before it counts; 0 means 5s.
	FailureWindow time.Duration
	// DefaultTimeout bounds a component's health wait when it sets no timeout; 0 means 5m.
	DefaultTimeout time.Duration
	// DeadlineMargin is added to the sum of a revision's health timeouts to make the
	// rollout's deadline, past which a rollout interrupted by a crash is not resumed but
	// rolled back; 0 means 1m.
	DeadlineMargin time.Duration
	// Log receives progress; nil discards it.
	Log *slog.Logger
	// DefaultServiceAccount is the service account (in each component's namespace) that
	// components without serviceAccountName run as, like kustomize-controller's
	// --default-service-account; "" runs them as Ferry itself.
	DefaultServiceAccount string
	// Images tells which container images the node can serve (its image endpoint); when
	// set, a health check that fails names the images of the component that the node does
	// not hold, the likely reason on an air-gapped node. nil names none.
	Images ImageHolder
}

// ImageHolder answers whether the node holds an image, named as a manifest names it.
type ImageHolder interface {
	Holds(ctx context.Context, image string) bool
}

// Engine applies revisions kept in a store to one cluster, one at a time.
type Engine struct {
	st   *store.Store
	c    *cluster
	opts Options
	log  *slog.Logger
	// mu makes applies to the cluster one at a time (DESIGN: one apply at a time per
	// cluster), whatever number of bundles the daemon reconciles. It also guards built.
	mu sync.Mutex
	// built keeps the kustomize/Helm output of the last revisions rendered, by manifest
	// digest: a bundle's layers never change, and building is the costly part of a sync
	// with nothing to do (kustomize's accumulation is quadratic in the object count).
	built     map[digest.Digest][]component
	builtFIFO []digest.Digest
	disco     discovery.DiscoveryInterface
	// clusters are the connections that impersonate components' service accounts, by
	// user name; they share c's RESTMapper. Guarded by cmu, not mu: a preview uses them
	// while a rollout holds mu.
	cmu      sync.Mutex
	clusters map[string]*cluster
	// lookupSet is true when Options.Lookup came from the caller; otherwise substituteFrom
	// and valuesFrom are read as each component's identity.
	lookupSet bool
}

// Ping asks the API server for its version: the daemon waits for it (k3s starting or
// restarting) before it starts a rollout, rather than failing a revision for it.
func (e *Engine) Ping(ctx context.Context) error {
	done := make(chan error, 1)
	go func() { _, err := e.disco.ServerVersion(); done <- err }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Transient reports errors that say the cluster could not be reached or was overloaded,
// not that the revision is wrong: a rollout that meets one stays open and is resumed.
func Transient(err error) bool { return err != nil && isTransient(err) }

// Paused reports a rollout stopped by the node rather than by its revision: shutting down
// (ctx done), the cluster out of reach, or the state directory not writable. Such a rollout
// stays open, its revision neither failed nor rolled back, and is resumed.
func Paused(ctx context.Context, err error) bool {
	return err != nil && (ctx.Err() != nil || isTransient(err) || store.WriteFailed(err))
}

// builtKeep is how many revisions' builds are kept: the current one and the one being
// rolled out or back to.
const builtKeep = 2

// ErrRolledBack is returned by Rollout when the revision failed and the last good one was
// restored.
var ErrRolledBack = errors.New("rolled back")

// New returns an engine for the cluster cfg reaches. Requests are bounded by
// Options.Concurrency rather than by client-go's rate limiter, which cfg's copy turns off
// when cfg sets no QPS.
func New(cfg *rest.Config, st *store.Store, opts Options) (*Engine, error) {
	cfg = rest.CopyConfig(cfg)
	if cfg.QPS == 0 {
		cfg.QPS = -1
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 32
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = time.Second
	}
	if opts.FailureWindow <= 0 {
		opts.FailureWindow = 5 * time.Second
	}
	if opts.DefaultTimeout <= 0 {
		opts.DefaultTimeout = 5 * time.Minute
	}
	if opts.DeadlineMargin <= 0 {
		opts.DeadlineMargin = time.Minute
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	e := &Engine{st: st, opts: opts, log: opts.Log, disco: dc, lookupSet: opts.Lookup != nil, c: &cluster{
		cfg:         cfg,
		dyn:         dyn,
		mapper:      restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc)),
		concurrency: opts.Concurrency,
		poll:        opts.PollInterval,
	}}
	if e.opts.Lookup == nil {
		e.opts.Lookup = e.c.lookup
	}
	return e, nil
}

// Report says what a rollout or sync did.
type Report struct {
	Bundle       string      `json:"bundle"`
	Revision     uint64      `json:"revision"`
	State        store.State `json:"state"`
	Applied      int         `json:"applied"`
	Unchanged    int         `json:"unchanged"`
	Pruned       int         `json:"pruned"`
	Drift        []Drift     `json:"drift,omitempty"`
	RolledBackTo uint64      `json:"rolledBackTo,omitempty"`
}

// Inventory is what the engine records for one component of a revision: every object it
// applies (written before the first is sent, so a crash leaves what to prune) with the hash
// and resourceVersion that let an unchanged object be skipped.
type Inventory struct {
	Component string  `json:"component"`
	Prune     bool    `json:"prune"`
	Objects   []Entry `json:"objects"`
	// Release is the Helm release of a Helm component, with the Helm revision this Ferry
	// revision deployed.
	Release *Release `json:"release,omitempty"`
	// ServiceAccount is the identity the component ran as ("" for Ferry's own): pruning
	// and uninstalling what it left run as the same identity.
	ServiceAccount string `json:"serviceAccount,omitempty"`
}

// component is one built component; objs is set by prepare, just before it is applied.
type component struct {
	spec   bundles.Component
	bundle string
	ns     string         // where its objects without a namespace go
	home   string         // where it lives: its service account, references without a namespace
	nodes  []*kyaml.RNode // built, before substitution; shared with the build cache, never changed
	objs   []*object
	wait   bool
	prune  bool
	force  bool
	checks []ObjectRef
	drift  *bundles.DriftDetection
	tmo    time.Duration
	// sa is the user the component's requests impersonate
	// (system:serviceaccount:<ns>:<name>), "" to run as Ferry.
	sa string
	// targetNS is set when the component names targetNamespace.
	targetNS string
	// helm is set for a Helm component: it becomes a Helm release, not applied objects.
	helm *helmChart
	// scopes are the scopes of the keys that signed the revision (see confine).
	scopes []*bundles.Scope
}

// Rollout applies revision rev of bundle name and waits for it to be healthy. If it fails
// to apply or to become healthy, the last good revision is applied again (objects new in rev
// are pruned), rev is recorded failed with the reason, and the error wraps ErrRolledBack.
// A render error fails rev before anything is sent. The sequence is recorded in the store
// before the first object is sent, so Resume can finish it after a crash at any point.
func (e *Engine) Rollout(ctx context.Context, name string, rev uint64) (Report, error) {
	return e.rollout(ctx, name, rev, rolloutNew)
}

// Retry is Rollout for a revision that failed before: a failed revision is never tried
// again by itself, only when someone asks.
func (e *Engine) Retry(ctx context.Context, name string, rev uint64) (Report, error) {
	return e.rollout(ctx, name, rev, rolloutRetry)
}

// RollbackTo is Retry for a rollback someone asked for (ferry rollback): every newer revision
// that is verified or healthy is recorded rolled back in the transaction that opens the
// rollout of rev, so the node stays on rev until a newer revision arrives, and a crash at any
// point leaves either the old state or an open rollout of rev, never a newer revision
// waiting to be applied again.
func (e *Engine) RollbackTo(ctx context.Context, name string, rev uint64) (Report, error) {
	return e.rollout(ctx, name, rev, rolloutManual)
}

type rolloutMode int

const (
	rolloutNew    rolloutMode = iota // a revision not tried before
	rolloutRetry                     // a revision that may have failed before, on request
	rolloutManual                    // ferry rollback: retry, and supersede newer revisions
)

// ErrFailedBefore is returned by Rollout for a revision that already failed.
var ErrFailedBefore = errors.New("revision failed before; retry it explicitly")

func (e *Engine) rollout(ctx context.Context, name string, rev uint64, mode rolloutMode) (Report, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	rep := Report{Bundle: name, Revision: rev}
	b, err := e.st.GetBundle(name)
	if err != nil {
		return rep, err
	}
	r, err := e.st.GetRevision(name, rev)
	if err != nil {
		return rep, err
	}
	if b.Txn == nil && b.Current == rev && r.State == store.StateHealthy {
		if mode == rolloutManual {
			if err := e.st.Supersede(name, rev); err != nil {
				return rep, err
			}
		}
		return e.sync(ctx, name, rev)
	}
	if b.Txn != nil && b.Txn.Phase == store.StateRemoving {
		return rep, fmt.Errorf("%s: %w: the removal of revision %d is unfinished; Resume finishes it first", name, ErrRolloutInProgress, b.Txn.Revision)
	}
	lastGood := b.LastGood
	inTxn := b.Txn != nil && b.Txn.Revision == rev
	if inTxn {
		lastGood = b.Txn.LastGood
		if b.Txn.Phase == store.StateFailed {
			return e.rollback(ctx, rep, lastGood, errors.New(b.Txn.Reason))
		}
	}
	if b.Txn != nil && !inTxn {
		return rep, fmt.Errorf("%s: the rollout of revision %d is unfinished; Resume finishes it first", name, b.Txn.Revision)
	}
	if mode == rolloutNew && !inTxn && (r.State == store.StateFailed || r.State == store.StateRolledBack) {
		return rep, fmt.Errorf("%s revision %d: %w", name, rev, ErrFailedBefore)
	}
	comps, err := e.render(ctx, r)
	if Paused(ctx, err) {
		return rep, err
	}
	if err != nil {
		rep.State = store.StateFailed
		if serr := e.st.SetState(name, rev, store.StateFailed, "render: "+err.Error()); serr != nil {
			return rep, errors.Join(err, serr)
		}
		return rep, fmt.Errorf("%s revision %d: %w", name, rev, err)
	}
	var total time.Duration
	for _, c := range comps {
		total += c.tmo
	}
	deadline := time.Now().Add(total + e.opts.DeadlineMargin)
	if inTxn && b.Txn.Phase == store.StateApplying {
		// Resuming keeps the first deadline, moved on only by the time the rollout was
		// paused (the API server or the state directory out of service): a node that
		// crashes again and again during a rollout must still fall back to the last good
		// revision in the end.
		deadline = b.Txn.DeadlineAt(time.Now())
	}
	begin := e.st.Begin
	if mode == rolloutManual {
		begin = e.st.BeginRollback
	}
	if err := begin(name, rev, deadline, fmt.Sprintf("last good %d, deadline %s", lastGood, deadline.UTC().Format(time.RFC3339))); err != nil {
		return rep, err
	}
	e.log.Info("applying", "bundle", name, "revision", rev, "lastGood", lastGood)
	// What the cluster held before rev (compared, then pruned if rev no longer has it), oldest
	// first; rev's own records (an interrupted attempt) are the newest.
	var before []uint64
	for _, x := range []uint64{lastGood, b.Current} {
		if x != rev {
			before = append(before, x)
		}
	}
	old, err := e.inventories(name, before...)
	if err != nil {
		return rep, err
	}
	prev, err := e.records(name, append(before, rev)...)
	if err != nil {
		return rep, err
	}
	err = e.applyRevision(ctx, name, rev, comps, prev, old, false, &rep)
	if err == nil {
		rep.State = store.StateHealthy
		note := fmt.Sprintf("applied %d, unchanged %d, pruned %d", rep.Applied, rep.Unchanged, rep.Pruned)
		e.log.Info("healthy", "bundle", name, "revision", rev, "applied", rep.Applied, "unchanged", rep.Unchanged, "pruned", rep.Pruned)
		return rep, e.st.SetState(name, rev, store.StateHealthy, note)
	}
	if Paused(ctx, err) {
		// Shutting down, the API server went away, or the state directory cannot be
		// written: the transaction stays open and Resume finishes it.
		return rep, err
	}
	e.log.Error("revision failed", "bundle", name, "revision", rev, "err", err)
	if serr := e.st.SetState(name, rev, store.StateFailed, err.Error()); serr != nil {
		return rep, errors.Join(err, serr)
	}
	rep.State = store.StateFailed
	if lastGood == 0 {
		return rep, fmt.Errorf("%s revision %d failed and there is no last good revision to roll back to: %w", name, rev, err)
	}
	return e.rollback(ctx, rep, lastGood, err)
}

// rollback applies lastGood again, prunes what the failed revision added, and records the
// failed revision rolled back.
func (e *Engine) rollback(ctx context.Context, rep Report, lastGood uint64, cause error) (Report, error) {
	name, rev := rep.Bundle, rep.Revision
	e.log.Warn("rolling back", "bundle", name, "revision", rev, "to", lastGood)
	r, err := e.st.GetRevision(name, lastGood)
	if err != nil {
		return rep, fmt.Errorf("roll back to %d: %w", lastGood, err)
	}
	comps, err := e.render(ctx, r)
	if err != nil {
		return rep, fmt.Errorf("roll back to %d: %w", lastGood, err)
	}
	// The failed revision's objects are compared and pruned against the good one's, every
	// one of them: the failed revision was never good, whatever its prune settings.
	failed, err := e.inventories(name, rev)
	if err != nil {
		return rep, err
	}
	prev, err := e.records(name, lastGood, rev)
	if err != nil {
		return rep, err
	}
	var back Report
	if err := e.applyRevision(ctx, name, lastGood, comps, prev, failed, true, &back); err != nil {
		return rep, fmt.Errorf("roll back to %d: %w (after: %v)", lastGood, err, cause)
	}
	rep.RolledBackTo, rep.State, rep.Pruned = lastGood, store.StateRolledBack, back.Pruned
	if err := e.st.SetState(name, rev, store.StateRolledBack, fmt.Sprintf("rolled back to %d", lastGood)); err != nil {
		return rep, err
	}
	e.log.Info("rolled back", "bundle", name, "revision", rev, "to", lastGood, "pruned", back.Pruned)
	return rep, fmt.Errorf("%s revision %d: %w to %d: %v", name, rev, ErrRolledBack, lastGood, cause)
}

// Resume finishes a rollout a crash interrupted: before its deadline the revision is applied
// again (every step is idempotent), after it, or if it had already failed, the last good
// revision is restored. An interrupted removal (see Remove) is finished. With no open
// transaction it does nothing.
func (e *Engine) Resume(ctx context.Context, name string) (Report, error) {
	b, err := e.st.GetBundle(name)
	if err != nil || b.Txn == nil {
		return Report{Bundle: name, Revision: b.Current}, err
	}
	if b.Txn.Phase == store.StateRemoving {
		// A removal is finished, never rolled out: the bundle was asked to go.
		rm, err := e.Remove(ctx, name)
		return rm.report(), err
	}
	if b.Txn.Phase == store.StateApplying && time.Now().After(b.Txn.DeadlineAt(time.Now())) {
		reason := "interrupted, and its deadline passed before the node came back"
		if err := e.st.SetState(name, b.Txn.Revision, store.StateFailed, reason); err != nil {
			return Report{}, err
		}
		if b.Txn.LastGood == 0 {
			return Report{Bundle: name, Revision: b.Txn.Revision, State: store.StateFailed}, nil
		}
	}
	return e.Rollout(ctx, name, b.Txn.Revision)
}

// Sync brings the bundle's current, healthy revision back into the cluster: objects that
// drifted are corrected (or reported, in warn mode). With nothing changed it sends no write.
func (e *Engine) Sync(ctx context.Context, name string) (Report, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	b, err := e.st.GetBundle(name)
	if err != nil {
		return Report{}, err
	}
	if b.Txn != nil || b.Current == 0 || b.Current != b.LastGood {
		return Report{Bundle: name, Revision: b.Current}, fmt.Errorf("%s: no healthy revision to sync (a rollout is unfinished, failed, or none was applied)", name)
	}
	return e.sync(ctx, name, b.Current)
}

func (e *Engine) sync(ctx context.Context, name string, rev uint64) (Report, error) {
	rep := Report{Bundle: name, Revision: rev, State: store.StateHealthy}
	r, err := e.st.GetRevision(name, rev)
	if err != nil {
		return rep, err
	}
	comps, err := e.render(ctx, r)
	if err != nil {
		return rep, err
	}
	invs, err := e.inventories(name, rev)
	if err != nil {
		return rep, err
	}
	var done []*object
	for i := range comps {
		c := &comps[i]
		prev := invs[c.spec.Name]
		cc, err := e.clusterFor(c.sa)
		if err != nil {
			return rep, err
		}
		if c.helm != nil {
			// A release changed by hand (helm upgrade, helm rollback) is upgraded back.
			if err := e.applyHelm(ctx, name, rev, c, cc, entries(prev), nil, false, &rep); err != nil {
				return rep, fmt.Errorf("component %s: %w", c.spec.Name, err)
			}
			done = append(done, c.objs...)
			continue
		}
		if err := e.prepare(ctx, c, cc, done); err != nil {
			return rep, err
		}
		done = append(done, c.objs...)
		res, err := cc.sync(ctx, syncSet{bundle: name, objs: c.objs, prev: entries(prev), drift: c.drift, force: c.force, dryRun: c.sa != ""})
		rep.Applied += len(res.applied)
		rep.Unchanged += len(c.objs) - len(res.applied)
		rep.Drift = append(rep.Drift, res.drifted...)
		if err != nil {
			return rep, fmt.Errorf("component %s: %w", c.spec.Name, err)
		}
		if changed(prev.Objects, res.entries) {
			if err := e.putInventory(name, rev, Inventory{Component: c.spec.Name, Prune: c.prune, Objects: res.entries, ServiceAccount: c.sa}); err != nil {
				return rep, err
			}
		}
	}
	for _, d := range rep.Drift {
		e.log.Warn("drift", "bundle", name, "revision", rev, "object", d.Object.String(), "path", d.Path, "corrected", d.Corrected)
	}
	return rep, nil
}

// applyRevision applies each component in dependency order (rendering it just before, so
// substituteFrom sees what its dependencies created), waits for its health, and at the end
// prunes what the previous inventories (old) held that rev no longer has. prev is the
// newest record of every object Ferry sent (see records).
//
// Whether a component's old objects are pruned follows its spec in rev (prune), like Flux;
// a component rev no longer has follows the flag recorded with it. pruneAll prunes every
// object old holds that rev does not (a rollback: the failed revision was never good).
func (e *Engine) applyRevision(ctx context.Context, name string, rev uint64, comps []component, prev map[string]Entry, old map[string]Inventory, pruneAll bool, rep *Report) error {
	keep := map[string]bool{}
	releases := map[string]bool{} // "namespace/name" of the releases rev has
	// Rolling back, each Helm release returns to the Helm revision rev deployed.
	var mine map[string]Inventory
	if pruneAll {
		var err error
		if mine, err = e.inventories(name, rev); err != nil {
			return err
		}
	}
	var done []*object
	for i := range comps {
		c := &comps[i]
		log := e.log.With("bundle", name, "revision", rev, "component", c.spec.Name)
		cc, err := e.clusterFor(c.sa)
		if err != nil {
			return err
		}
		if c.helm != nil {
			releases[c.ns+"/"+c.helm.release] = true
			if inv, ok := old[c.spec.Name]; ok && inv.Release == nil && len(inv.Objects) > 0 {
				h := *c.helm // the cached build is shared: flag a copy
				h.takeOver = true
				c.helm = &h
			}
			if err := e.applyHelm(ctx, name, rev, c, cc, prev, mine[c.spec.Name].Release, true, rep); err != nil {
				return fmt.Errorf("component %s: %w", c.spec.Name, err)
			}
			done = append(done, c.objs...)
			for _, o := range c.objs {
				keep[o.ref.key()] = true
			}
			log.Info("healthy", "release", c.helm.release)
			continue
		}
		if err := e.prepare(ctx, c, cc, done); err != nil {
			return err
		}
		done = append(done, c.objs...)
		for _, o := range c.objs {
			keep[o.ref.key()] = true
		}
		// The component's inventory is written before its first object is sent: after a
		// crash, what this revision may have created is known and can be pruned.
		planned := Inventory{Component: c.spec.Name, Prune: c.prune, Objects: plan(c.objs, prev), ServiceAccount: c.sa}
		if err := e.putInventory(name, rev, planned); err != nil {
			return err
		}
		res, err := cc.sync(ctx, syncSet{bundle: name, objs: c.objs, prev: prev, drift: c.drift, force: c.force, dryRun: c.sa != ""})
		rep.Applied += len(res.applied)
		rep.Unchanged += len(c.objs) - len(res.applied)
		rep.Drift = append(rep.Drift, res.drifted...)
		if perr := e.putInventory(name, rev, Inventory{Component: c.spec.Name, Prune: c.prune, Objects: merge(c.objs, res.entries), ServiceAccount: c.sa}); perr != nil {
			return errors.Join(err, perr)
		}
		if err != nil {
			return fmt.Errorf("component %s: %w", c.spec.Name, err)
		}
		log.Info("applied", "applied", len(res.applied), "unchanged", len(c.objs)-len(res.applied))
		if c.wait || len(c.checks) > 0 {
			var applied []ObjectRef
			if c.wait {
				for _, o := range c.objs {
					applied = append(applied, o.ref)
				}
			}
			if err := cc.waitHealthy(ctx, name, applied, c.checks, c.tmo, e.opts.FailureWindow); err != nil {
				return fmt.Errorf("component %s: %w%s", c.spec.Name, err, e.missingImages(ctx, err, c))
			}
			log.Info("healthy")
		}
	}
	// Prune last, across components: an object that moved from one component to another is
	// kept, and nothing is deleted before everything new is in place.
	for cname, inv := range old {
		cc, err := e.clusterFor(inv.ServiceAccount)
		if err != nil {
			return err
		}
		if r := inv.Release; r != nil {
			// Helm removes what a chart no longer has; a release rev no longer has is
			// uninstalled, as the identity that installed it.
			if !releases[r.Namespace+"/"+r.Name] {
				if err := e.removeRelease(ctx, cc, name, *r, keep, pruneAll); err != nil {
					return fmt.Errorf("component %s: %w", cname, err)
				}
			}
			continue
		}
		prune := inv.Prune
		for _, c := range comps {
			if c.spec.Name == cname {
				prune = c.prune
			}
		}
		if !prune && !pruneAll {
			continue
		}
		if err := e.pruneGone(ctx, cc, name, inv, keep, rep); err != nil {
			return fmt.Errorf("component %s: %w", cname, err)
		}
	}
	return nil
}

// applyHelm installs, upgrades or rolls back a Helm component's release (see applyRelease),
// then treats the objects of the release's manifest as the engine treats its own: drift
// compared and corrected or reported, recorded in the inventory, and, when the release
// changed or wait is set, health waited for with kstatus. back is the release the revision
// being restored deployed (a rollback), else nil.
func (e *Engine) applyHelm(ctx context.Context, name string, rev uint64, c *component, cc *cluster, prev map[string]Entry, back *Release, wait bool, rep *Report) error {
	// Written before Helm runs: after a crash, this revision may have installed the release,
	// and a rollback uninstalls it if the good revision has none.
	planned := Inventory{Component: c.spec.Name, Prune: true, ServiceAccount: c.sa,
		Release: &Release{Name: c.helm.release, Namespace: c.ns}}
	if old, err := e.inventories(name, rev); err != nil {
		return err
	} else if inv, ok := old[c.spec.Name]; ok && inv.Release != nil {
		planned = inv // an earlier attempt recorded more
	} else {
		if planned.Release.Before, err = e.adopting(cc, c); err != nil {
			return err
		}
		planned.Release.Adopted = planned.Release.Before > 0
		if err := e.putInventory(name, rev, planned); err != nil {
			return err
		}
	}
	failed := ""
	if !wait && planned.Release != nil {
		failed = planned.Release.Failed // a sync does not try a failed upgrade again
	}
	out, err := e.applyRelease(ctx, c, cc, back, failed)
	if err != nil {
		if out.attempt != "" && planned.Release != nil && planned.Release.Failed != out.attempt {
			planned.Release.Failed = out.attempt
			if perr := e.putInventory(name, rev, planned); perr != nil {
				return errors.Join(err, perr)
			}
		}
		return err
	}
	us, err := manifestObjects(out.rel)
	if err != nil {
		return err
	}
	c.objs = nil
	for _, u := range us {
		o, err := newObject(u, e.opts.Keys.HashKey())
		if err != nil {
			return err
		}
		c.objs = append(c.objs, o)
	}
	if err := cc.place(c.objs, c.ns, crdScopes(c.objs)); err != nil {
		return err
	}
	// The manifest comes from Helm's storage (Secrets in the namespace): what drift
	// correction would send is confined like everything else.
	if err := confine(c, c.objs); err != nil {
		return err
	}
	for _, o := range c.objs {
		if err := o.rehash(); err != nil {
			return err
		}
	}
	res, err := cc.sync(ctx, syncSet{bundle: name, objs: c.objs, prev: prev, drift: c.drift, helm: true})
	rep.Drift = append(rep.Drift, res.drifted...)
	if out.changed {
		rep.Applied += len(c.objs)
	} else {
		rep.Applied += len(res.applied)
		rep.Unchanged += len(c.objs) - len(res.applied)
	}
	inv := Inventory{Component: c.spec.Name, Prune: true, Objects: merge(c.objs, res.entries), ServiceAccount: c.sa,
		Release: &Release{Name: out.rel.Name, Namespace: out.rel.Namespace, Version: out.rel.Version,
			Adopted: planned.Release.Adopted, Before: planned.Release.Before}}
	if !reflect.DeepEqual(inv.Release, planned.Release) || changed(planned.Objects, inv.Objects) {
		if perr := e.putInventory(name, rev, inv); perr != nil {
			return errors.Join(err, perr)
		}
	}
	if err != nil {
		return err
	}
	if out.rel.Info.Status != release.StatusDeployed {
		return fmt.Errorf("release %s is %s", out.rel.Name, out.rel.Info.Status)
	}
	if !wait && !out.changed {
		return nil
	}
	refs := make([]ObjectRef, len(c.objs))
	for i, o := range c.objs {
		refs[i] = o.ref
	}
	if err := cc.waitHealthy(ctx, name, refs, c.checks, c.tmo, e.opts.FailureWindow); err != nil {
		return fmt.Errorf("%w%s", err, e.missingImages(ctx, err, c))
	}
	return nil
}

// missingImages is what a failed health wait adds to its message: the images the
// component's objects run that the node does not hold (neither the bundle carried them nor
// any other kept revision). Pods naming them cannot start on an air-gapped node.
func (e *Engine) missingImages(ctx context.Context, err error, c *component) string {
	if e.opts.Images == nil || !errors.Is(err, ErrUnhealthy) {
		return ""
	}
	var missing []string
	for _, o := range c.objs {
		for _, im := range render.ImagesOf(o.obj.Object) {
			if !e.opts.Images.Holds(ctx, im) && !slices.Contains(missing, im) {
				missing = append(missing, im)
			}
		}
	}
	if len(missing) == 0 {
		return ""
	}
	sort.Strings(missing)
	return fmt.Sprintf("; images not on this node: %s (neither carried by a bundle nor held by the node's image endpoint)", strings.Join(missing, ", "))
}

// plan is the inventory written before a component's objects are sent. An object whose
// content is what Ferry last sent keeps that record (whether it is sent again or skipped,
// its Ferry-owned content stays the same); any other has no resourceVersion, which means
// "may have been sent": after a crash it is applied again rather than trusted.
func plan(objs []*object, prev map[string]Entry) []Entry {
	out := make([]Entry, 0, len(objs))
	for _, o := range objs {
		e := Entry{ObjectRef: o.ref, Hash: o.hash}
		if p, ok := prev[o.ref.key()]; ok && p.Hash == o.hash {
			e.ResourceVersion = p.ResourceVersion
		}
		out = append(out, e)
	}
	return out
}

// records returns, for every object, the newest record among the given revisions' inventories
// (oldest revision first): what Ferry last sent to it. Only then does "the live object still
// holds these fields" prove it needs nothing.
func (e *Engine) records(name string, revs ...uint64) (map[string]Entry, error) {
	out := map[string]Entry{}
	seen := map[uint64]bool{0: true}
	for _, rev := range revs {
		if seen[rev] {
			continue
		}
		seen[rev] = true
		invs, err := e.inventories(name, rev)
		if err != nil {
			return nil, err
		}
		for _, inv := range invs {
			maps.Copy(out, entries(inv))
		}
	}
	return out, nil
}

func (e *Engine) pruneGone(ctx context.Context, cc *cluster, name string, inv Inventory, keep map[string]bool, rep *Report) error {
	var gone []ObjectRef
	for _, o := range inv.Objects {
		if !keep[o.key()] {
			gone = append(gone, o.ObjectRef)
		}
	}
	if len(gone) == 0 {
		return nil
	}
	deleted, err := cc.prune(ctx, name, gone)
	rep.Pruned += len(deleted)
	for _, d := range deleted {
		e.log.Info("pruned", "bundle", name, "object", d.String())
	}
	return err
}

// render builds every component of a stored revision, in dependency order. Variables from
// the cluster are substituted later, by prepare. Builds are cached by manifest digest.
func (e *Engine) render(ctx context.Context, r *store.Revision) ([]component, error) {
	if comps, ok := e.built[r.Manifest.Digest]; ok {
		return slices.Clone(comps), nil
	}
	comps, err := e.build(ctx, r)
	if err != nil {
		return nil, err
	}
	if e.built == nil {
		e.built = map[digest.Digest][]component{}
	}
	e.built[r.Manifest.Digest] = comps
	e.builtFIFO = append(e.builtFIFO, r.Manifest.Digest)
	if len(e.builtFIFO) > builtKeep {
		delete(e.built, e.builtFIFO[0])
		e.builtFIFO = e.builtFIFO[1:]
	}
	return slices.Clone(comps), nil
}

func (e *Engine) build(ctx context.Context, r *store.Revision) ([]component, error) {
	b, err := bundles.Open(ctx, e.st, r.Manifest)
	if err != nil {
		return nil, err
	}
	if b.Metadata.Name != r.Name {
		return nil, fmt.Errorf("stored revision %s/%d holds bundle %q", r.Name, r.Revision, b.Metadata.Name)
	}
	scopes, err := signerScopes(r)
	if err != nil {
		return nil, err
	}
	return e.buildFrom(ctx, e.st, b, scopes)
}

// buildFrom builds every component of bundle b, its layers read from src, in dependency
// order, confined by the scopes of the keys that signed it: a stored revision (build) or
// one not admitted yet (Preview).
func (e *Engine) buildFrom(ctx context.Context, src content.Fetcher, b *bundles.Bundle, scopes []*bundles.Scope) ([]component, error) {
	order, err := b.Metadata.Order()
	if err != nil {
		return nil, err
	}
	var comps []component
	for _, i := range order {
		spec := b.Metadata.Components[i]
		c := component{spec: spec, bundle: b.Metadata.Name, ns: e.opts.namespaceOf(spec), home: e.opts.homeOf(spec), tmo: e.opts.DefaultTimeout}
		var timeout, sa string
		if k := spec.Kustomize; k != nil {
			if c.nodes, err = e.opts.build(ctx, src, b, i); err != nil {
				return nil, err
			}
			c.wait, c.prune, c.force, c.drift = k.Wait, k.Prune, k.Force, k.DriftDetection
			timeout, sa, c.targetNS = k.Timeout, k.ServiceAccountName, k.TargetNamespace
		} else if h := spec.Helm; h != nil {
			if c.helm, err = e.opts.helmChart(ctx, src, b, i); err != nil {
				return nil, err
			}
			c.wait, c.prune, c.drift = true, true, h.DriftDetection
			timeout, sa, c.targetNS = h.Timeout, h.ServiceAccountName, h.TargetNamespace
		}
		if timeout != "" {
			if c.tmo, err = time.ParseDuration(timeout); err != nil || c.tmo <= 0 {
				return nil, fmt.Errorf("component %s: timeout %q is not a positive duration", spec.Name, timeout)
			}
		}
		if sa, err = scope(&c, scopes, sa); err != nil {
			return nil, fmt.Errorf("component %s: %w", spec.Name, err)
		}
		if sa == "" {
			sa = e.opts.DefaultServiceAccount
		}
		if sa != "" {
			c.sa = serviceAccountUser(c.home, sa)
		}
		if c.helm != nil && c.sa == "" && c.confined() {
			// Ferry's own credentials would render it: a chart's lookup could read any
			// namespace, and no dry run would show it.
			return nil, fmt.Errorf("component %s: its bundle's signing key is scoped to namespaces but names no serviceAccount; a Helm component needs one (set serviceAccount in the key's scope, or serviceAccountName)", spec.Name)
		}
		if k := spec.Kustomize; k != nil {
			// After scope: health checks read as the component, within its keys' namespaces.
			for j, h := range k.HealthChecks {
				gv, err := schema.ParseGroupVersion(h.APIVersion)
				if err != nil {
					return nil, fmt.Errorf("component %s: healthChecks: %w", spec.Name, err)
				}
				ns, err := e.refNamespace(&c, h.Namespace, fmt.Sprintf("healthChecks[%d]", j))
				if err != nil {
					return nil, fmt.Errorf("component %s: %w", spec.Name, err)
				}
				c.checks = append(c.checks, ObjectRef{Group: gv.Group, Version: gv.Version, Kind: h.Kind, Namespace: ns, Name: h.Name})
			}
		}
		comps = append(comps, c)
	}
	if e.opts.NoCrossNamespaceRefs {
		nsOf := map[string]string{}
		for _, c := range comps {
			nsOf[c.spec.Name] = c.home
		}
		for _, c := range comps {
			for _, d := range c.spec.DependsOn() {
				if nsOf[d] != c.home {
					return nil, fmt.Errorf("component %s (namespace %s) depends on %s in namespace %s, but this node refuses references outside the component's namespace (noCrossNamespaceRefs)", c.spec.Name, c.home, d, nsOf[d])
				}
			}
		}
	}
	return comps, nil
}

// prepare substitutes the component's variables, labels its objects as the bundle's, hashes
// them and places them in namespaces. before are the objects of the components already
// prepared (their CRDs tell the scope of kinds not served yet).
func (e *Engine) prepare(ctx context.Context, c *component, cc *cluster, before []*object) error {
	env := e.opts.Env
	env.scopes = c.scopes
	if !e.lookupSet {
		env.Lookup = cc.lookup // substituteFrom is read as the component's identity
	}
	us, err := env.finish(ctx, c.spec, c.nodes)
	if err != nil {
		return err
	}
	c.objs = nil // the component may be a copy of a cached one: never reuse its array
	seen := map[string]bool{}
	for _, u := range us {
		labels := u.GetLabels()
		if labels == nil {
			labels = map[string]string{}
		}
		labels[LabelBundle], labels[LabelComponent] = c.bundle, c.spec.Name
		u.SetLabels(labels)
		o, err := newObject(u, e.opts.Keys.HashKey())
		if err != nil {
			return fmt.Errorf("component %s: %w", c.spec.Name, err)
		}
		c.objs = append(c.objs, o)
	}
	if err := cc.place(c.objs, c.ns, crdScopes(append(before, c.objs...))); err != nil {
		return fmt.Errorf("component %s: %w", c.spec.Name, err)
	}
	if err := confine(c, c.objs); err != nil {
		return fmt.Errorf("component %s: %w", c.spec.Name, err)
	}
	for _, o := range c.objs {
		if err := o.rehash(); err != nil {
			return fmt.Errorf("component %s: %w", c.spec.Name, err)
		}
		if seen[o.ref.key()] {
			return fmt.Errorf("component %s: %s appears twice", c.spec.Name, o.ref)
		}
		seen[o.ref.key()] = true
	}
	return nil
}

// inventories returns the inventories of the given revisions of name, merged by component:
// the union of their objects (everything those revisions may have left in the cluster, for
// pruning) and prune if any recorded it; revision 0 and repeats are skipped. For the newest
// record of each object, see records.
func (e *Engine) inventories(name string, revs ...uint64) (map[string]Inventory, error) {
	out := map[string]Inventory{}
	seen := map[uint64]bool{0: true}
	for _, rev := range revs {
		if seen[rev] {
			continue
		}
		seen[rev] = true
		raw, err := e.st.Inventories(name, rev)
		if err != nil {
			return nil, err
		}
		for cname, data := range raw {
			var inv Inventory
			if err := json.Unmarshal(data, &inv); err != nil {
				return nil, fmt.Errorf("%s revision %d inventory %s: %w", name, rev, cname, err)
			}
			if have, ok := out[cname]; ok {
				inv.Objects = append(have.Objects, inv.Objects...)
				inv.Prune = inv.Prune || have.Prune
			}
			out[cname] = inv
		}
	}
	return out, nil
}

func (e *Engine) putInventory(name string, rev uint64, inv Inventory) error {
	b, err := json.Marshal(inv)
	if err != nil {
		return err
	}
	return e.st.PutInventory(name, rev, inv.Component, b)
}

func entries(inv Inventory) map[string]Entry {
	m := make(map[string]Entry, len(inv.Objects))
	for _, e := range inv.Objects {
		m[e.key()] = e
	}
	return m
}

// merge returns an entry for every object: the recorded one where the apply got that far,
// else the planned one (hash, no resourceVersion).
func merge(objs []*object, got []Entry) []Entry {
	m := map[string]Entry{}
	for _, e := range got {
		m[e.key()] = e
	}
	out := make([]Entry, 0, len(objs))
	for _, o := range objs {
		if e, ok := m[o.ref.key()]; ok {
			out = append(out, e)
		} else {
			out = append(out, Entry{ObjectRef: o.ref, Hash: o.hash})
		}
	}
	return out
}

func changed(a, b []Entry) bool {
	if len(a) != len(b) {
		return true
	}
	m := entries(Inventory{Objects: a})
	for _, e := range b {
		if m[e.key()] != e {
			return true
		}
	}
	return false
}

// lookup reads a ConfigMap's or Secret's data for substituteFrom and valuesFrom.
func (c *cluster) lookup(ctx context.Context, kind, namespace, name string) (map[string]string, error) {
	u, err := c.dyn.Resource(corev1Resource(kind).WithVersion("v1")).Namespace(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	if kind == "Secret" {
		return secretData(u)
	}
	data, _, _ := unstructured.NestedStringMap(u.Object, "data")
	return data, nil
}

func corev1Resource(kind string) schema.GroupResource {
	return schema.GroupResource{Resource: strings.ToLower(kind) + "s"}
}
