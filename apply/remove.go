package apply

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	helmdriver "helm.sh/helm/v3/pkg/storage/driver"

	"github.com/ferrygitops/ferry/store"
)

// Removal says what Remove did.
type Removal struct {
	Bundle string `json:"bundle"`
	// Revision is the revision that ran, whose objects were removed.
	Revision uint64 `json:"revision"`
	// Pruned are the objects deleted (a resumed removal lists those it deleted itself).
	Pruned []ObjectRef `json:"pruned"`
	// Releases are the Helm releases uninstalled, as namespace/name.
	Releases []string `json:"releases"`
}

// ErrRolloutInProgress is returned by Remove while a rollout or rollback of the bundle is
// open: the removal would race it. It is the caller's to retry once the rollout is over.
var ErrRolloutInProgress = errors.New("a rollout is in progress")

// ErrNotRunning is returned by Remove for a bundle with no running revision: removed before,
// or never applied.
var ErrNotRunning = errors.New("no running revision")

// Remove takes bundle name out of the cluster (ferry remove): every object the inventories of
// its current revision list is pruned as a rollout prunes (only objects that still carry the
// bundle's label and are not annotated prune: disabled, namespaces and definitions last),
// whatever the components' prune settings, and each Helm release is uninstalled (only if
// the bundle installed it). The store keeps the history: the revision is recorded removed and
// the bundle has no current revision, so the daemon applies nothing until a newer revision is
// admitted or one is rolled back to.
//
// The removal is a transaction like a rollout's: store.BeginRemove records it before anything
// is deleted, store.FinishRemove closes it, and one left open by a crash is finished by Resume
// (or another Remove), never rolled out. Remove refuses while a rollout of the bundle is open
// (ErrRolloutInProgress). A suspended bundle can be removed.
func (e *Engine) Remove(ctx context.Context, name string) (Removal, error) {
	// Refused at once, not after waiting for the rollout that holds the lock.
	if b, err := e.st.GetBundle(name); err != nil {
		return Removal{Bundle: name}, err
	} else if err := removable(name, b); err != nil {
		return Removal{Bundle: name}, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	b, err := e.st.GetBundle(name)
	if err != nil {
		return Removal{Bundle: name}, err
	}
	if err := removable(name, b); err != nil {
		return Removal{Bundle: name}, err
	}
	rev := b.Current
	if b.Txn != nil {
		rev = b.Txn.Revision // an unfinished removal
	} else if err := e.st.BeginRemove(name, rev); err != nil {
		return Removal{Bundle: name, Revision: rev}, err
	}
	return e.remove(ctx, name, rev)
}

// removable says why bundle b cannot be removed now, or nil.
func removable(name string, b store.Bundle) error {
	switch {
	case b.Newest == 0:
		return fmt.Errorf("no bundle %q on this node: %w", name, store.ErrNotFound)
	case b.Txn != nil && b.Txn.Phase == store.StateRemoving:
		return nil
	case b.Txn != nil && b.Txn.Phase == store.StateFailed:
		return fmt.Errorf("bundle %s: %w: revision %d failed and is being rolled back to %d; remove the bundle once that is over", name, ErrRolloutInProgress, b.Txn.Revision, b.Txn.LastGood)
	case b.Txn != nil:
		return fmt.Errorf("bundle %s: %w: revision %d is being applied; remove the bundle once that is over", name, ErrRolloutInProgress, b.Txn.Revision)
	case b.Current == 0 && !b.Removed.IsZero():
		return fmt.Errorf("bundle %s: %w: it was removed at %s", name, ErrNotRunning, b.Removed.Format(time.RFC3339))
	case b.Current == 0:
		return fmt.Errorf("bundle %s: %w: none of its revisions has been applied", name, ErrNotRunning)
	}
	return nil
}

// remove deletes what revision rev of name left in the cluster and closes the removal.
// Every component is tried whatever the others' errors; the removal stays open (and is
// tried again) until all succeeded.
func (e *Engine) remove(ctx context.Context, name string, rev uint64) (Removal, error) {
	rm := Removal{Bundle: name, Revision: rev, Pruned: []ObjectRef{}, Releases: []string{}}
	r, err := e.st.GetRevision(name, rev)
	if err != nil {
		return rm, err
	}
	invs, err := e.inventories(name, rev)
	if err != nil {
		return rm, err
	}
	e.log.Info("removing", "bundle", name, "revision", rev)
	order := e.componentOrder(ctx, r, invs)
	slices.Reverse(order) // dependents first
	var errs []error
	// Releases first: Helm deletes its own objects (and keeps those its resource policy
	// says to), so the engine prunes none of them.
	for _, cname := range order {
		inv := invs[cname]
		if inv.Release == nil {
			continue
		}
		cc, err := e.clusterFor(inv.ServiceAccount)
		if err == nil {
			var owned bool
			if owned, err = e.ownsRelease(cc, name, *inv.Release); err == nil {
				err = e.removeRelease(ctx, cc, name, *inv.Release, nil, false)
				if err == nil && owned {
					rm.Releases = append(rm.Releases, inv.Release.Namespace+"/"+inv.Release.Name)
				}
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("component %s: %w", cname, err))
		}
	}
	// Then every other object, across components: Namespaces and definitions after
	// everything else, so that none takes an object along before its own turn.
	for _, stage := range []int{1, 0} {
		for _, cname := range order {
			inv := invs[cname]
			if inv.Release != nil {
				continue
			}
			var refs []ObjectRef
			for _, o := range inv.Objects {
				if o.stage() == stage {
					refs = append(refs, o.ObjectRef)
				}
			}
			if len(refs) == 0 {
				continue
			}
			cc, err := e.clusterFor(inv.ServiceAccount)
			if err != nil {
				errs = append(errs, fmt.Errorf("component %s: %w", cname, err))
				continue
			}
			deleted, err := cc.prune(ctx, name, refs)
			for _, d := range deleted {
				e.log.Info("pruned", "bundle", name, "component", cname, "object", d.String())
			}
			rm.Pruned = append(rm.Pruned, deleted...)
			if err != nil {
				errs = append(errs, fmt.Errorf("component %s: %w", cname, err))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return rm, fmt.Errorf("remove %s revision %d (the removal is tried again): %w", name, rev, err)
	}
	note := fmt.Sprintf("removed by ferry remove: pruned %d objects, uninstalled %d Helm releases", len(rm.Pruned), len(rm.Releases))
	if err := e.st.FinishRemove(name, note); err != nil {
		return rm, err
	}
	e.log.Info("removed", "bundle", name, "revision", rev, "pruned", len(rm.Pruned), "releases", len(rm.Releases))
	return rm, nil
}

// ownsRelease reports whether the release exists and bundle installed it: what removeRelease
// uninstalls.
func (e *Engine) ownsRelease(cc *cluster, bundle string, rec Release) (bool, error) {
	cfg, err := e.helmConfig(cc, rec.Namespace, defaultMaxHistory)
	if err != nil {
		return false, err
	}
	last, err := cfg.Releases.Last(rec.Name)
	if errors.Is(err, helmdriver.ErrReleaseNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("release %s/%s: %w", rec.Namespace, rec.Name, err)
	}
	return last.Labels[LabelBundle] == bundle, nil
}

// report is the Report of a removal that Resume finished.
func (rm Removal) report() Report {
	return Report{Bundle: rm.Bundle, Revision: rm.Revision, State: store.StateRemoved, Pruned: len(rm.Pruned) + len(rm.Releases)}
}
