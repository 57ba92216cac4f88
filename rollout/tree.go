package rollout

import (
	"context"
	"fmt"

	"github.com/ferrygitops/ferry/apply"
	"github.com/ferrygitops/ferry/store"
)

// Tree is what `ferry tree` shows, as `flux tree kustomization` does for a Kustomization:
// the objects one revision applied, by component, with their health read now.
type Tree struct {
	Bundle   string      `json:"bundle"`
	Revision uint64      `json:"revision"`
	Version  string      `json:"version,omitempty"`
	State    store.State `json:"state"` // the revision's, as recorded
	// Running is set when Revision is the bundle's current revision.
	Running    bool                  `json:"running"`
	Components []apply.TreeComponent `json:"components"`
}

// Tree returns the objects revision rev of bundle name applied (its inventories) and their
// health now (apply.Applier.Tree); rev 0 means the current revision. Tree writes nothing
// and does not wait for a rollout in progress.
func (m *Manager) Tree(ctx context.Context, name string, rev uint64) (Tree, error) {
	b, err := m.st.GetBundle(name)
	if err != nil {
		return Tree{}, err
	}
	if b.Newest == 0 {
		return Tree{}, fmt.Errorf("no bundle %q on this node: %w", name, store.ErrNotFound)
	}
	if rev == 0 {
		if rev = b.Current; rev == 0 {
			what := "none has been applied"
			if !b.Removed.IsZero() {
				what = "it was removed"
			}
			return Tree{}, fmt.Errorf("bundle %q has no running revision (%s): name one (ferry history %s): %w", name, what, name, store.ErrNotFound)
		}
	}
	r, err := m.st.GetRevision(name, rev)
	if err != nil {
		return Tree{}, fmt.Errorf("bundle %q has no revision %d on this node (ferry history %s): %w", name, rev, name, store.ErrNotFound)
	}
	invs, err := m.inventories(name, rev)
	if err != nil {
		return Tree{}, err
	}
	comps, err := m.ap.Tree(ctx, apply.TreeOptions{Bundle: name, Inventories: invs, Order: m.componentOrder(ctx, r, invs)})
	if err != nil {
		return Tree{}, err
	}
	return Tree{Bundle: name, Revision: rev, Version: r.Version, State: r.State, Running: rev == b.Current, Components: comps}, nil
}
