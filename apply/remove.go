package apply

import (
	"context"
	"errors"
	"fmt"
	"slices"

	helmdriver "helm.sh/helm/v3/pkg/storage/driver"
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

// RemoveOptions are the data Remove works from.
type RemoveOptions struct {
	Bundle   string
	Revision uint64
	// Inventories are the running revision's, by component.
	Inventories map[string]Inventory
	// Order is the components' names in the order the revision applies them; they are
	// removed the other way round (dependents first).
	Order []string
}

// Remove takes what a revision left out of the cluster (ferry remove): every object its
// inventories list is pruned as Prune prunes (only objects that still carry the bundle's
// label and are not annotated prune: disabled, Namespaces and definitions last), whatever
// the components' prune settings, and each Helm release is uninstalled (only if the bundle
// installed it). Every component is tried whatever the others' errors; the error joins them.
func (ap *Applier) Remove(ctx context.Context, opts RemoveOptions) (Removal, error) {
	name, invs := opts.Bundle, opts.Inventories
	rm := Removal{Bundle: name, Revision: opts.Revision, Pruned: []ObjectRef{}, Releases: []string{}}
	order := slices.Clone(opts.Order)
	slices.Reverse(order) // dependents first
	var errs []error
	// Releases first: Helm deletes its own objects (and keeps those its resource policy
	// says to), so the applier prunes none of them.
	for _, cname := range order {
		inv := invs[cname]
		if inv.Release == nil {
			continue
		}
		cc, err := ap.clusterFor(inv.ServiceAccount)
		if err == nil {
			var owned bool
			if owned, err = ap.ownsRelease(cc, name, *inv.Release); err == nil {
				err = ap.removeRelease(ctx, cc, name, *inv.Release, nil, false)
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
			cc, err := ap.clusterFor(inv.ServiceAccount)
			if err != nil {
				errs = append(errs, fmt.Errorf("component %s: %w", cname, err))
				continue
			}
			deleted, err := cc.prune(ctx, name, refs)
			for _, d := range deleted {
				ap.log.Info("pruned", "bundle", name, "component", cname, "object", d.String())
			}
			rm.Pruned = append(rm.Pruned, deleted...)
			if err != nil {
				errs = append(errs, fmt.Errorf("component %s: %w", cname, err))
			}
		}
	}
	return rm, errors.Join(errs...)
}

// ownsRelease reports whether the release exists and bundle installed it: what removeRelease
// uninstalls.
func (ap *Applier) ownsRelease(cc *cluster, bundle string, rec Release) (bool, error) {
	cfg, err := ap.helmConfig(cc, rec.Namespace, defaultMaxHistory)
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
