package apply

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"oras.land/oras-go/v2/content"
	kyaml "sigs.k8s.io/kustomize/kyaml/yaml"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/ferrygitops/ferry/apply/render"
	"github.com/ferrygitops/ferry/bundles"
)

// Objects renders the components of b (all, or only the one named component) with env, as
// the node does, and returns their objects with the values of Secrets masked: what
// `ferry render` prints and `ferry bundle diff` compares.
func Objects(ctx context.Context, src content.Fetcher, b *bundles.Bundle, component string, env Env) ([]render.Object, error) {
	order, err := b.Metadata.Order()
	if err != nil {
		return nil, err
	}
	var out []render.Object
	found := false
	for _, i := range order {
		c := b.Metadata.Components[i]
		if component != "" && c.Name != component {
			continue
		}
		found = true
		us, err := RenderComponent(ctx, src, b, i, env)
		if err != nil {
			return nil, err
		}
		for _, u := range us {
			y, err := sigsyaml.Marshal(u.Object)
			if err != nil {
				return nil, err
			}
			n, err := kyaml.Parse(string(y))
			if err != nil {
				return nil, err
			}
			o, err := render.NewObject(c.Name, n)
			if err != nil {
				return nil, err
			}
			out = append(out, o)
		}
	}
	if !found {
		return nil, fmt.Errorf("bundle %s has no component %q", b.Metadata.Name, component)
	}
	return out, nil
}

// Plan is what a rollout of a bundle would do to the cluster now: `ferry diff FILE` and
// `ferry import --dry-run FILE` on the node.
type Plan struct {
	// Changes are the objects that would be created, changed or pruned and the Helm
	// releases that would be uninstalled, by ID; each with a unified diff of live against
	// what the API server would hold (its dry run), Secret values masked.
	Changes []Planned `json:"changes"`
	// Unchanged counts the objects the revision would leave as they are.
	Unchanged int `json:"unchanged"`
	// Refused counts the changes the API server refused in its dry run (see Planned.Error):
	// the rollout would fail and be rolled back.
	Refused int `json:"refused"`
}

// Planned is one change a rollout would make.
type Planned struct {
	// Action is create, change, prune (an object of the running revision the new one no
	// longer has) or uninstall (a Helm release).
	Action    string `json:"action"`
	Component string `json:"component"`
	ID        string `json:"id"`
	Diff      string `json:"diff,omitempty"`
	// Note says what the dry run could not check (a kind or namespace the revision
	// creates first).
	Note string `json:"note,omitempty"`
	// Error is the API server's refusal of the dry run (forbidden, invalid, a webhook).
	Error string `json:"error,omitempty"`
	err   error
}

// PreviewOptions are the data Preview works from.
type PreviewOptions struct {
	// Source holds the bundle's layers; Bundle is not admitted.
	Source content.Fetcher
	Bundle *bundles.Bundle
	// Scopes are the scopes of the keys whose signatures admit it.
	Scopes []*bundles.Scope
	// Running are the inventories of the bundle's running revision, by component (none if
	// it has none): what the plan would prune.
	Running map[string]Inventory
}

// Preview renders a bundle (its layers read from opts.Source; not admitted) as a rollout would, with
// the node's variables, its age key in memory and the signing keys' scopes, and asks the
// API server what would change: each object is sent as a server-side apply with dryRun=All,
// as the identity its component runs as, and compared with the live object; the objects of
// the running revision that b no longer has, where pruning is on, would be pruned. Nothing
// is written to the cluster or the store. A component that fails to render or breaks its
// scope is returned as an error: the rollout would fail before sending anything.
//
// Helm components are rendered with `helm template` semantics and each object dry-run
// applied like any other: Helm's hooks and three-way merge are not shown.
func (ap *Applier) Preview(ctx context.Context, opts PreviewOptions) (Plan, error) {
	b, running := opts.Bundle, opts.Running
	name := b.Metadata.Name
	comps, err := ap.buildFrom(ctx, opts.Source, b, opts.Scopes)
	if err != nil {
		return Plan{}, err
	}
	var (
		plan     Plan
		live     []render.Object // what the cluster holds of the objects concerned
		next     []render.Object // what it would hold
		extra    = map[string]Planned{}
		keep     = map[string]bool{}
		releases = map[string]bool{}
		newKinds = map[string]bool{} // group/kind of CRDs the revision brings
		newNS    = map[string]bool{} // namespaces the revision brings
		done     []*Component
		sent     int // objects of the components done
		mu       sync.Mutex
	)
	for i := range comps {
		c := &comps[i]
		cc, err := ap.clusterFor(c.sa)
		if err != nil {
			return Plan{}, err
		}
		if c.helm != nil {
			releases[c.ns+"/"+c.helm.release] = true
			vals, err := ap.helmValues(ctx, c, cc)
			if err != nil {
				return Plan{}, fmt.Errorf("component %s: %w", c.spec.Name, err)
			}
			rm, err := render.Template(c.helm.files, c.spec.Name, c.helm.spec, vals)
			if err != nil {
				return Plan{}, fmt.Errorf("component %s: %w", c.spec.Name, err)
			}
			c.nodes = rm.ToRNodeSlice()
		}
		if err := ap.prepare(ctx, c, cc, done); err != nil {
			return Plan{}, err
		}
		done = append(done, c)
		sent += len(c.objs)
		for _, o := range c.objs {
			keep[o.ref.key()] = true
			switch o.ref.Group + "/" + o.ref.Kind {
			case "/Namespace":
				newNS[o.ref.Name] = true
			case "apiextensions.k8s.io/CustomResourceDefinition":
				g, _, _ := unstructured.NestedString(o.obj.Object, "spec", "group")
				k, _, _ := unstructured.NestedString(o.obj.Object, "spec", "names", "kind")
				newKinds[g+"/"+k] = true
			}
		}
		var errs []error
		each(cc, c.objs, func(o *object) {
			was, dry, p, err := cc.previewOne(ctx, o)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			switch {
			case p.Error != "" && apierrors.IsNotFound(p.err) && newNS[o.ref.Namespace]:
				p.Error, p.Note, dry = "", "namespace "+o.ref.Namespace+" is created by this revision: not checked by the API server", o.obj
			case p.Error != "" && meta.IsNoMatchError(p.err) && newKinds[o.ref.Group+"/"+o.ref.Kind]:
				p.Error, p.Note, dry = "", "its kind is defined by this revision: not checked by the API server", o.obj
			}
			p.Component = c.spec.Name
			if p.Error != "" {
				p.ID, p.Action = o.ref.String(), "create"
				if was != nil {
					p.Action = "change"
				}
				extra[o.ref.key()] = p
				return
			}
			if was != nil {
				live = append(live, displayed(c.spec.Name, was))
			}
			d := displayed(c.spec.Name, dry)
			next = append(next, d)
			if p.Note != "" {
				extra[d.ID] = p
			}
		})
		if err := joinErrs(errs); err != nil {
			return Plan{}, fmt.Errorf("component %s: %w", c.spec.Name, err)
		}
	}
	// What the running revision has that this one does not, pruned as applyRevision would.
	for cname, inv := range running {
		if r := inv.Release; r != nil {
			if !releases[r.Namespace+"/"+r.Name] {
				plan.Changes = append(plan.Changes, Planned{Action: "uninstall", Component: cname, ID: "HelmRelease " + r.Namespace + "/" + r.Name})
			}
			continue
		}
		prune := inv.Prune
		for _, c := range comps {
			if c.spec.Name == cname {
				prune = c.prune
			}
		}
		if !prune {
			continue
		}
		cc, err := ap.clusterFor(inv.ServiceAccount)
		if err != nil {
			return Plan{}, err
		}
		var gone []ObjectRef
		for _, o := range inv.Objects {
			if !keep[o.key()] {
				gone = append(gone, o.ObjectRef)
			}
		}
		held, err := cc.live(ctx, name, gone)
		if err != nil {
			return Plan{}, fmt.Errorf("component %s: %w", cname, err)
		}
		for _, r := range gone {
			if u := held[r.key()]; u != nil {
				live = append(live, displayed(cname, u))
			}
		}
	}
	verbs := map[string]string{"added": "create", "changed": "change", "removed": "prune"}
	for _, ch := range render.Diff(live, next) {
		p := Planned{Action: verbs[ch.Action], Component: ch.Component, ID: ch.ID, Diff: ch.Diff}
		if x, ok := extra[ch.ID]; ok {
			p.Note = x.Note
			delete(extra, ch.ID)
		}
		plan.Changes = append(plan.Changes, p)
	}
	for _, p := range extra {
		if p.Error != "" {
			plan.Refused++
			plan.Changes = append(plan.Changes, p)
		}
	}
	plan.Unchanged = sent - (len(plan.Changes) - countActions(plan.Changes, "prune", "uninstall"))
	slices.SortFunc(plan.Changes, func(a, b Planned) int { return strings.Compare(a.ID, b.ID) })
	return plan, nil
}

func countActions(ps []Planned, actions ...string) int {
	n := 0
	for _, p := range ps {
		if slices.Contains(actions, p.Action) {
			n++
		}
	}
	return n
}

// previewOne reads o's live object and sends o as a dry-run server-side apply. A refusal of
// the dry run is returned in the Planned (Error, and err for its kind); err is a failure to
// read the live object.
func (c *cluster) previewOne(ctx context.Context, o *object) (was, dry *unstructured.Unstructured, p Planned, err error) {
	was, err = c.get(ctx, o.ref)
	switch {
	case apierrors.IsNotFound(err):
		was, err = nil, nil
	case err != nil:
		return nil, nil, p, fmt.Errorf("read %s: %w", o.ref, err)
	}
	dry, derr := c.applyOne(ctx, o, false, true)
	if derr != nil {
		p.Error, p.err = derr.Error(), derr
	}
	return was, dry, p, nil
}

// displayed is u as a preview shows it: without what the server keeps for itself
// (managedFields, resourceVersion, uid, generation, creation time), Secret values masked.
func displayed(component string, u *unstructured.Unstructured) render.Object {
	u = u.DeepCopy()
	for _, f := range []string{"managedFields", "resourceVersion", "uid", "generation", "creationTimestamp"} {
		unstructured.RemoveNestedField(u.Object, "metadata", f)
	}
	y, err := sigsyaml.Marshal(u.Object)
	if err == nil {
		var n *kyaml.RNode
		if n, err = kyaml.Parse(string(y)); err == nil {
			var o render.Object
			if o, err = render.NewObject(component, n); err == nil {
				return o
			}
		}
	}
	// Not reached for what the API server returns; say so rather than show nothing.
	return render.Object{Component: component, ID: refOf(u).String(), YAML: "# cannot be shown: " + err.Error() + "\n"}
}
