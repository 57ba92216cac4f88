package rollout

import (
	"context"

	"github.com/ferrygitops/ferry/apply"
)

// passKind is what a pass does with a revision's components.
type passKind int

const (
	// passRollout applies the target revision, waits for each component's health, then
	// prunes what the revisions before left and the target no longer has.
	passRollout passKind = iota
	// passRollback is a rollout of the last good revision, after a failed one: what the
	// failed revision left is pruned whatever its prune settings (it was never good), and
	// each Helm release returns to the Helm revision the good one deployed.
	passRollback
	// passSync brings the running revision back: what drifted is applied again, health is
	// waited for only where Helm made a new release revision, nothing is pruned.
	passSync
)

// pass is one walk of a revision's components in dependency order: the one loop of
// rollouts, rollbacks and syncs. It holds, as data, everything the applier's verbs need
// from the store; run writes the inventories they hand back.
type pass struct {
	kind   passKind
	bundle string
	rev    uint64
	comps  []apply.Component
	// records is the newest record of every object Ferry sent: what the revisions before
	// and rev itself recorded (see records).
	records map[string]apply.Entry
	// mine are rev's own inventories (an interrupted attempt's, or the running revision's).
	mine map[string]apply.Inventory
	// before are the inventories of the revisions the cluster held before rev, merged: what
	// is pruned once rev is in place. Empty for a sync.
	before map[string]apply.Inventory
}

// newPass reads from the store what a pass of revision rev needs: the inventories of the
// revisions before it (oldest first) and its own. The newest record of an object is rev's,
// except in a rollback, where it is the failed revision's: what it sent is what the cluster
// may hold now, and an object it changed must be sent back whatever the drift settings.
func (m *Manager) newPass(name string, rev uint64, comps []apply.Component, before []uint64, kind passKind) (*pass, error) {
	p := &pass{kind: kind, bundle: name, rev: rev, comps: comps}
	var err error
	if p.mine, err = m.inventories(name, rev); err != nil {
		return nil, err
	}
	if p.before, err = m.inventories(name, before...); err != nil {
		return nil, err
	}
	order := append(before, rev)
	if kind == passRollback {
		order = append([]uint64{rev}, before...)
	}
	if p.records, err = m.records(name, order...); err != nil {
		return nil, err
	}
	return p, nil
}

// run applies each component in turn, Helm components through Helm, each rendered just
// before it is applied (so substituteFrom sees what its dependencies created), waits for its
// health, and at the end prunes (see passKind).
func (m *Manager) run(ctx context.Context, p *pass) (rep Report, err error) {
	rep = Report{Bundle: p.bundle, Revision: p.rev}
	var res apply.Result
	defer func() { rep.Applied, rep.Unchanged, rep.Drift = res.Applied, res.Unchanged, res.Drift }()
	record := func(inv apply.Inventory) error { return m.putInventory(p.bundle, p.rev, inv) }
	sync := p.kind == passSync
	var done []*apply.Component
	for i := range p.comps {
		c := &p.comps[i]
		var r apply.Result
		recorded := p.mine[c.Name()]
		if c.Helm() {
			opts := apply.ReleaseOptions{Bundle: p.bundle, Records: p.records, Recorded: recorded, Sync: sync, Record: record}
			if p.kind == passRollback {
				opts.Back = recorded.Release
			}
			if old, ok := p.before[c.Name()]; ok && old.Release == nil && len(old.Objects) > 0 {
				opts.TakeOver = true
			}
			r, err = m.ap.Release(ctx, c, opts)
		} else {
			r, err = m.ap.Apply(ctx, c, apply.ApplyOptions{Bundle: p.bundle, Records: p.records, Earlier: done, Recorded: recorded, Sync: sync, Record: record})
		}
		res.Add(r)
		if err != nil {
			return rep, err
		}
		if !sync || r.Changed {
			if err := m.ap.Wait(ctx, c, p.bundle); err != nil {
				return rep, err
			}
		}
		done = append(done, c)
	}
	if sync {
		return rep, nil
	}
	// Prune last, across components: an object that moved from one component to another is
	// kept, and nothing is deleted before everything new is in place.
	pruned, err := m.ap.Prune(ctx, apply.PruneOptions{Bundle: p.bundle, Applied: done, Inventories: p.before, All: p.kind == passRollback})
	rep.Pruned = len(pruned)
	return rep, err
}
