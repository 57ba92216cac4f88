package rollout

import (
	"context"
	"fmt"
	"time"

	"github.com/ferrygitops/ferry/apply"
	"github.com/ferrygitops/ferry/store"
)

// Remove takes bundle name out of the cluster (ferry remove): every object the inventories of
// its current revision list is pruned and each Helm release the bundle installed is
// uninstalled (apply.Applier.Remove), whatever the components' prune settings. The store
// keeps the history: the revision is recorded removed and the bundle has no current
// revision, so nothing is applied until a newer revision is admitted or one is rolled back
// to.
//
// The removal is a transaction like a rollout's: store.BeginRemove records it before anything
// is deleted, store.FinishRemove closes it once every component is gone (until then it stays
// open and is tried again), and one left open by a crash is finished by Resume (or another
// Remove), never rolled out. Remove refuses while a rollout of the bundle is open
// (ErrRolloutInProgress). A suspended bundle can be removed.
func (m *Manager) Remove(ctx context.Context, name string) (apply.Removal, error) {
	// Refused at once, not after waiting for the rollout that holds the lock.
	if b, err := m.st.GetBundle(name); err != nil {
		return apply.Removal{Bundle: name}, err
	} else if err := removable(name, b); err != nil {
		return apply.Removal{Bundle: name}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	defer m.retain()
	b, err := m.st.GetBundle(name)
	if err != nil {
		return apply.Removal{Bundle: name}, err
	}
	if err := removable(name, b); err != nil {
		return apply.Removal{Bundle: name}, err
	}
	rev := b.Current
	if b.Txn != nil {
		rev = b.Txn.Revision // an unfinished removal
	} else if err := m.st.BeginRemove(name, rev); err != nil {
		return apply.Removal{Bundle: name, Revision: rev}, err
	}
	rm := apply.Removal{Bundle: name, Revision: rev}
	r, err := m.st.GetRevision(name, rev)
	if err != nil {
		return rm, err
	}
	invs, err := m.inventories(name, rev)
	if err != nil {
		return rm, err
	}
	m.log.Info("removing", "bundle", name, "revision", rev)
	rm, err = m.ap.Remove(ctx, apply.RemoveOptions{Bundle: name, Revision: rev, Inventories: invs, Order: m.componentOrder(ctx, r, invs)})
	if err != nil {
		return rm, fmt.Errorf("remove %s revision %d (the removal is tried again): %w", name, rev, err)
	}
	note := fmt.Sprintf("removed by ferry remove: pruned %d objects, uninstalled %d Helm releases", len(rm.Pruned), len(rm.Releases))
	if err := m.st.FinishRemove(name, note); err != nil {
		return rm, err
	}
	m.log.Info("removed", "bundle", name, "revision", rev, "pruned", len(rm.Pruned), "releases", len(rm.Releases))
	return rm, nil
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
