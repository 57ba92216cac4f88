package rollout

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"

	"github.com/ferrygitops/ferry/apply"
	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/store"
	"github.com/ferrygitops/ferry/verify"
)

// inventories returns the inventories of the given revisions of name, merged by component:
// the union of their objects (everything those revisions may have left in the cluster, for
// pruning) and prune if any recorded it; revision 0 and repeats are skipped. For the newest
// record of each object, see records.
func (m *Manager) inventories(name string, revs ...uint64) (map[string]apply.Inventory, error) {
	out := map[string]apply.Inventory{}
	for _, rev := range distinct(revs) {
		raw, err := m.st.Inventories(name, rev)
		if err != nil {
			return nil, err
		}
		for cname, data := range raw {
			var inv apply.Inventory
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

// records returns, for every object, the newest record among the given revisions'
// inventories (oldest revision first): what Ferry last sent to it. Only then does "the live
// object still holds these fields" prove it needs nothing.
func (m *Manager) records(name string, revs ...uint64) (map[string]apply.Entry, error) {
	out := map[string]apply.Entry{}
	for _, rev := range distinct(revs) {
		invs, err := m.inventories(name, rev)
		if err != nil {
			return nil, err
		}
		for _, inv := range invs {
			maps.Copy(out, inv.Entries())
		}
	}
	return out, nil
}

// distinct returns revs without revision 0 and without repeats, in order.
func distinct(revs []uint64) []uint64 {
	var out []uint64
	for _, r := range revs {
		if r != 0 && !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out
}

func (m *Manager) putInventory(name string, rev uint64, inv apply.Inventory) error {
	b, err := json.Marshal(inv)
	if err != nil {
		return err
	}
	return m.st.PutInventory(name, rev, inv.Component, b)
}

// signerScopes returns the scopes of the keys that signed a revision, as recorded at
// admission (verify.Result); unscoped keys add none.
func signerScopes(r *store.Revision) ([]*bundles.Scope, error) {
	if len(r.Verification) == 0 {
		return nil, nil
	}
	v, err := verify.ParseRecord(r.Verification)
	if err != nil {
		return nil, fmt.Errorf("%s revision %d: verification record: %w", r.Name, r.Revision, err)
	}
	return v.Scopes(), nil
}

// componentOrder returns the names of invs in the order revision r applies its components
// (dependsOn, else as listed); a component the bundle does not name, or every one if the
// bundle cannot be read, comes after, by name.
func (m *Manager) componentOrder(ctx context.Context, r *store.Revision, invs map[string]apply.Inventory) []string {
	var out []string
	seen := map[string]bool{}
	if b, err := bundles.Open(ctx, m.st, r.Manifest); err == nil {
		if order, err := b.Metadata.Order(); err == nil {
			for _, i := range order {
				if n := b.Metadata.Components[i].Name; !seen[n] {
					if _, ok := invs[n]; ok {
						out = append(out, n)
						seen[n] = true
					}
				}
			}
		}
	}
	var rest []string
	for n := range invs {
		if !seen[n] {
			rest = append(rest, n)
		}
	}
	sort.Strings(rest)
	return append(out, rest...)
}
