package apply

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
)

// cluster is the applier's access to one API server: a dynamic client, a RESTMapper over
// cached discovery, and a bound on requests in flight.
type cluster struct {
	cfg         *rest.Config                       // what dyn was built from (the Helm SDK builds its own clients)
	helmDisco   discovery.CachedDiscoveryInterface // the Helm SDK's, made on first use
	dyn         dynamic.Interface
	mapper      meta.ResettableRESTMapper
	concurrency int
	poll        time.Duration
}

// Entry is what the applier recorded for one applied object: the hash of what it sent and
// the resourceVersion the server returned (or last saw unchanged in Ferry's fields).
type Entry struct {
	ObjectRef
	Hash            string `json:"hash,omitempty"`
	ResourceVersion string `json:"rv,omitempty"`
}

// mapping resolves a kind to its resource, refreshing discovery once when the kind is
// unknown (a CRD applied a moment ago).
func (c *cluster) mapping(gvk schema.GroupVersionKind) (*meta.RESTMapping, error) {
	m, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		c.mapper.Reset()
		m, err = c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", gvk, err)
	}
	return m, nil
}

func (c *cluster) resource(ref ObjectRef) (dynamic.ResourceInterface, error) {
	m, err := c.mapping(ref.GVK())
	if err != nil {
		return nil, err
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return c.dyn.Resource(m.Resource).Namespace(ref.Namespace), nil
	}
	return c.dyn.Resource(m.Resource), nil
}

// place sets the namespace of namespaced objects that have none to ns and clears it on
// cluster-scoped ones (kubectl does the same), so refs name what the server will hold.
// Kinds the API server does not serve yet are looked up in crds, the scopes the revision's
// own CustomResourceDefinitions declare (namespaced = true).
func (c *cluster) place(objs []*object, ns string, crds map[schema.GroupKind]bool) error {
	var errs []error
	for _, o := range objs {
		gvk := o.ref.GVK()
		namespaced, known := crds[gvk.GroupKind()]
		if m, err := c.mapping(gvk); err == nil {
			namespaced = m.Scope.Name() == meta.RESTScopeNameNamespace
		} else if !known {
			errs = append(errs, fmt.Errorf("%s: %w", o.ref, err))
			continue
		}
		switch {
		case namespaced && o.obj.GetNamespace() == "":
			o.obj.SetNamespace(ns)
		case !namespaced && o.obj.GetNamespace() != "":
			o.obj.SetNamespace("")
		}
		o.ref = refOf(o.obj)
	}
	return errors.Join(errs...)
}

// crdScopes returns, for each kind a CustomResourceDefinition among objs defines, whether
// it is namespaced.
func crdScopes(objs []*object) map[schema.GroupKind]bool {
	out := map[schema.GroupKind]bool{}
	for _, o := range objs {
		if o.ref.Group != "apiextensions.k8s.io" || o.ref.Kind != "CustomResourceDefinition" {
			continue
		}
		group, _, _ := unstructured.NestedString(o.obj.Object, "spec", "group")
		kind, _, _ := unstructured.NestedString(o.obj.Object, "spec", "names", "kind")
		scope, _, _ := unstructured.NestedString(o.obj.Object, "spec", "scope")
		out[schema.GroupKind{Group: group, Kind: kind}] = scope == "Namespaced"
	}
	return out
}

type listKey struct {
	gvr schema.GroupVersionResource
	ns  string
}

// live lists the objects of refs that carry the bundle's label: one LIST per resource and
// namespace, however many objects there are. Objects not found are absent from the map.
func (c *cluster) live(ctx context.Context, bundle string, refs []ObjectRef) (map[string]*unstructured.Unstructured, error) {
	groups := map[listKey]bool{}
	for _, r := range refs {
		m, err := c.mapping(r.GVK())
		if err != nil {
			return nil, err
		}
		ns := r.Namespace
		if m.Scope.Name() != meta.RESTScopeNameNamespace {
			ns = ""
		}
		groups[listKey{m.Resource, ns}] = true
	}
	var (
		mu   sync.Mutex
		out  = map[string]*unstructured.Unstructured{}
		errs []error
	)
	each(c, keysOf(groups), func(k listKey) {
		items, err := c.list(ctx, k, LabelBundle+"="+bundle)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			errs = append(errs, fmt.Errorf("list %s in %q: %w", k.gvr.Resource, k.ns, err))
			return
		}
		for i := range items {
			out[refOf(&items[i]).key()] = &items[i]
		}
	})
	return out, joinErrs(errs)
}

func keysOf(m map[listKey]bool) []listKey {
	out := make([]listKey, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].gvr.String()+out[i].ns < out[j].gvr.String()+out[j].ns })
	return out
}

func (c *cluster) list(ctx context.Context, k listKey, selector string) ([]unstructured.Unstructured, error) {
	var ri dynamic.ResourceInterface = c.dyn.Resource(k.gvr)
	if k.ns != "" {
		ri = c.dyn.Resource(k.gvr).Namespace(k.ns)
	}
	var items []unstructured.Unstructured
	opts := metav1.ListOptions{LabelSelector: selector, Limit: 1000}
	for {
		l, err := ri.List(ctx, opts)
		if err != nil {
			return nil, err
		}
		items = append(items, l.Items...)
		if opts.Continue = l.GetContinue(); opts.Continue == "" {
			return items, nil
		}
	}
}

// each runs f for every item with at most c.concurrency at once and returns when all are
// done.
func each[T any](c *cluster, items []T, f func(T)) {
	limit := make(chan struct{}, max(c.concurrency, 1))
	var wg sync.WaitGroup
	for _, it := range items {
		limit <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-limit; wg.Done() }()
			f(it)
		}()
	}
	wg.Wait()
}

// applyOne sends one server-side apply and returns the object the server holds. With
// recreate, an object whose immutable fields changed is deleted and created again. With
// dry, the server checks the apply (authorization, admission, validation) and stores
// nothing.
func (c *cluster) applyOne(ctx context.Context, o *object, recreate, dry bool) (*unstructured.Unstructured, error) {
	ri, err := c.resource(o.ref)
	if err != nil {
		return nil, err
	}
	data, err := json.Marshal(o.obj.Object)
	if err != nil {
		return nil, err
	}
	force := true // Ferry owns what its bundle declares, as Flux's controllers do
	opts := metav1.PatchOptions{FieldManager: FieldManager, Force: &force}
	if dry {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	got, err := ri.Patch(ctx, o.ref.Name, types.ApplyPatchType, data, opts)
	if err != nil && recreate && !dry && isImmutable(err) {
		if err := c.deleteAndWait(ctx, ri, o.ref); err != nil {
			return nil, err
		}
		got, err = ri.Patch(ctx, o.ref.Name, types.ApplyPatchType, data, opts)
	}
	return got, err
}

func isImmutable(err error) bool {
	if !apierrors.IsInvalid(err) {
		return false
	}
	msg := err.Error()
	return strings.Contains(msg, "immutable") || strings.Contains(msg, "may not change") || strings.Contains(msg, "cannot change")
}

// waitBound bounds the waits that hold the applier's lock without a component timeout of
// their own (a CRD becoming Established, an object being deleted to be recreated): a stuck
// finalizer must not stop every other bundle.
const waitBound = 2 * time.Minute

func (c *cluster) deleteAndWait(ctx context.Context, ri dynamic.ResourceInterface, ref ObjectRef) error {
	ctx, cancel := context.WithTimeout(ctx, waitBound)
	defer cancel()
	bg := metav1.DeletePropagationBackground
	if err := ri.Delete(ctx, ref.Name, metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete %s to recreate it: %w", ref, err)
	}
	for {
		_, err := ri.Get(ctx, ref.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s to be deleted: %w", ref, ctx.Err())
		case <-time.After(c.poll):
		}
	}
}

// waitEstablished waits until each CRD among refs reports Established, so the custom
// resources of the next stage can be mapped and applied.
func (c *cluster) waitEstablished(ctx context.Context, refs []ObjectRef) error {
	ctx, cancel := context.WithTimeout(ctx, waitBound)
	defer cancel()
	for _, r := range refs {
		if r.Group != "apiextensions.k8s.io" || r.Kind != "CustomResourceDefinition" {
			continue
		}
		ri, err := c.resource(r)
		if err != nil {
			return err
		}
		for {
			u, err := ri.Get(ctx, r.Name, metav1.GetOptions{})
			if err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("%s: %w", r, err)
			}
			if err == nil && hasCondition(u, "Established", "True") {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s is not Established: %w", r, ctx.Err())
			case <-time.After(c.poll):
			}
		}
	}
	c.mapper.Reset()
	return nil
}

func hasCondition(u *unstructured.Unstructured, typ, status string) bool {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == typ && m["status"] == status {
			return true
		}
	}
	return false
}
