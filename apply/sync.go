package apply

import (
	"context"
	"errors"
	"fmt"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/ferrygitops/ferry/bundles"
)

// Drift modes (HelmRelease's driftDetection.mode, also on kustomize components).
const (
	DriftEnabled  = "enabled"
	DriftWarn     = "warn"
	DriftDisabled = "disabled"
)

// Drift is a live object that no longer holds what Ferry applied.
type Drift struct {
	Object    ObjectRef `json:"object"`
	Path      string    `json:"path"` // first JSON pointer that differs ("" when the object is gone)
	Corrected bool      `json:"corrected"`
}

// syncSet is one component's objects and what the applier does with drift among them.
type syncSet struct {
	bundle string
	objs   []*object
	prev   map[string]Entry // what was recorded at the last apply, by key
	drift  *bundles.DriftDetection
	force  bool // recreate objects whose immutable fields changed (spec.force)
	// dryRun sends every apply as a server-side dry run first, so an object the component's
	// service account may not write fails the component before anything of it is written.
	dryRun bool
	// helm marks a release's objects: Helm applied them, so an object Ferry has no record
	// of is compared with the live one, not sent.
	helm bool
}

type syncResult struct {
	entries []Entry
	applied []ObjectRef
	drifted []Drift
}

// sync brings the set's objects into the cluster, stage by stage, sending an apply only for
// an object that is new, whose content changed since it was last applied, or that drifted
// (with drift mode enabled). An object whose recorded hash and resourceVersion both match
// the live one costs nothing but its share of one LIST.
func (c *cluster) sync(ctx context.Context, s syncSet) (syncResult, error) {
	var res syncResult
	stages := [2][]*object{}
	for _, o := range s.objs {
		stages[o.ref.stage()] = append(stages[o.ref.stage()], o)
	}
	for i, objs := range stages {
		if len(objs) == 0 {
			continue
		}
		refs := make([]ObjectRef, len(objs))
		for j, o := range objs {
			refs[j] = o.ref
		}
		live, err := c.live(ctx, s.bundle, refs)
		if err != nil {
			return res, err
		}
		var todo []*object
		for _, o := range objs {
			apply, d := s.decide(o, live[o.ref.key()])
			if d != nil {
				res.drifted = append(res.drifted, *d)
			}
			if apply {
				todo = append(todo, o)
				continue
			}
			// An object left alone keeps the version it was last seen at, so a drift left
			// in place (warn) is reported again rather than mistaken for something new.
			e := Entry{ObjectRef: o.ref, Hash: o.hash, ResourceVersion: s.prev[o.ref.key()].ResourceVersion}
			if l := live[o.ref.key()]; l != nil && d == nil {
				e.ResourceVersion = l.GetResourceVersion()
			}
			res.entries = append(res.entries, e)
		}
		if s.dryRun && len(todo) > 0 {
			if err := c.dryRunAll(ctx, todo, s.force); err != nil {
				return res, err
			}
		}
		entries, err := c.applyAll(ctx, todo, s.force)
		res.entries = append(res.entries, entries...)
		for _, e := range entries {
			res.applied = append(res.applied, e.ObjectRef)
		}
		if err != nil {
			return res, err
		}
		for j := range res.drifted {
			res.drifted[j].Corrected = res.drifted[j].Corrected || containsRef(res.applied, res.drifted[j].Object)
		}
		if i == 0 {
			if err := c.waitEstablished(ctx, refs); err != nil {
				return res, err
			}
		}
	}
	return res, nil
}

// decide says whether o must be sent given the live object (nil when absent), and reports
// drift: the live object changed since Ferry recorded it and no longer holds Ferry's fields.
func (s syncSet) decide(o *object, live *unstructured.Unstructured) (bool, *Drift) {
	prev, known := s.prev[o.ref.key()]
	recorded := known && prev.Hash == o.hash && prev.ResourceVersion != ""
	if live == nil {
		if recorded || s.helm {
			return s.driftAction(&Drift{Object: o.ref})
		}
		return true, nil
	}
	if !recorded && !s.helm {
		return true, nil // new to Ferry, changed in the bundle, or maybe sent before a crash
	}
	if recorded && prev.ResourceVersion == live.GetResourceVersion() {
		return false, nil
	}
	if s.mode() == DriftDisabled {
		return false, nil
	}
	want := o.obj.Object
	if rules := s.ignoreFor(o); len(rules) > 0 {
		want = o.obj.DeepCopy().Object
		for _, p := range rules {
			_ = removePointer(want, p) // pointers were validated with the spec
		}
	}
	if ok, path := covers(want, live.Object); !ok {
		return s.driftAction(&Drift{Object: o.ref, Path: path})
	}
	return false, nil
}

func (s syncSet) mode() string {
	if s.drift == nil || s.drift.Mode == "" {
		return DriftEnabled
	}
	return s.drift.Mode
}

// driftAction applies the drift mode: enabled corrects, warn reports, disabled leaves the
// object alone (even one deleted by hand) until the bundle changes it.
func (s syncSet) driftAction(d *Drift) (bool, *Drift) {
	switch s.mode() {
	case DriftWarn:
		return false, d
	case DriftDisabled:
		return false, nil
	}
	return true, d
}

// ignoreFor returns the JSON pointers the drift rules exclude for o.
func (s syncSet) ignoreFor(o *object) []string {
	if s.drift == nil {
		return nil
	}
	var out []string
	for _, r := range s.drift.Ignore {
		if r.Target == nil || selects(r.Target, o) {
			out = append(out, r.Paths...)
		}
	}
	return out
}

func selects(t *bundles.Selector, o *object) bool {
	r := o.ref
	if (t.Group != "" && t.Group != r.Group) || (t.Version != "" && t.Version != r.Version) ||
		(t.Kind != "" && t.Kind != r.Kind) || (t.Name != "" && t.Name != r.Name) ||
		(t.Namespace != "" && t.Namespace != r.Namespace) {
		return false
	}
	for sel, set := range map[string]map[string]string{t.LabelSelector: o.obj.GetLabels(), t.AnnotationSelector: o.obj.GetAnnotations()} {
		if sel == "" {
			continue
		}
		parsed, err := labels.Parse(sel)
		if err != nil || !parsed.Matches(labels.Set(set)) {
			return false
		}
	}
	return true
}

func containsRef(refs []ObjectRef, r ObjectRef) bool {
	for _, x := range refs {
		if x.key() == r.key() {
			return true
		}
	}
	return false
}

// applyAll sends the objects in parallel, at most c.concurrency in flight: a serial applier
// pays one etcd fsync per object, parallel writes share them. Failures are reported, the
// first few by name (joinErrs).
func (c *cluster) applyAll(ctx context.Context, objs []*object, recreate bool) ([]Entry, error) {
	var (
		mu      sync.Mutex
		entries []Entry
		errs    []error
	)
	each(c, objs, func(o *object) {
		got, err := c.applyOne(ctx, o, recreate, false)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			errs = append(errs, fmt.Errorf("apply %s: %w", o.ref, err))
			return
		}
		entries = append(entries, Entry{ObjectRef: o.ref, Hash: o.hash, ResourceVersion: got.GetResourceVersion()})
	})
	return entries, joinErrs(errs)
}

// dryRunAll sends every object as a server-side apply with dryRun=All: the API server runs
// authorization, admission and validation and stores nothing. recreate is spec.force.
func (c *cluster) dryRunAll(ctx context.Context, objs []*object, recreate bool) error {
	var (
		mu   sync.Mutex
		errs []error
	)
	each(c, objs, func(o *object) {
		_, err := c.applyOne(ctx, o, false, true)
		mu.Lock()
		defer mu.Unlock()
		// With force, an immutable field is changed by deleting and creating the object,
		// which a dry run cannot show: the real apply decides.
		if err != nil && (!recreate || !isImmutable(err)) {
			errs = append(errs, fmt.Errorf("apply %s: %w", o.ref, err))
		}
	})
	return joinErrs(errs)
}

// prune deletes the objects of refs that still carry the bundle's label, except those
// annotated prune: disabled, and returns what it deleted.
func (c *cluster) prune(ctx context.Context, bundle string, refs []ObjectRef) ([]ObjectRef, error) {
	var (
		mu      sync.Mutex
		deleted []ObjectRef
		errs    []error
	)
	// Namespaces and definitions last: deleting them first would take objects with them
	// before their own turn and hide what was pruned.
	var first, last []ObjectRef
	for _, r := range refs {
		if r.stage() == 0 {
			last = append(last, r)
		} else {
			first = append(first, r)
		}
	}
	for _, batch := range [][]ObjectRef{first, last} {
		each(c, batch, func(r ObjectRef) {
			gone, err := c.pruneOne(ctx, bundle, r)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("prune %s: %w", r, err))
			} else if gone {
				deleted = append(deleted, r)
			}
		})
	}
	return deleted, joinErrs(errs)
}

func (c *cluster) pruneOne(ctx context.Context, bundle string, r ObjectRef) (bool, error) {
	ri, err := c.resource(r)
	if err != nil {
		if meta.IsNoMatchError(err) {
			return false, nil // its kind is gone (a pruned CRD took it along)
		}
		return false, err
	}
	live, err := ri.Get(ctx, r.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if live.GetLabels()[LabelBundle] != bundle || pruneDisabled(live) {
		return false, nil
	}
	bg := metav1.DeletePropagationBackground
	uid := live.GetUID()
	err = ri.Delete(ctx, r.Name, metav1.DeleteOptions{PropagationPolicy: &bg, Preconditions: &metav1.Preconditions{UID: &uid}})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

// joinErrs joins the errors of one fan-out, naming the first few: a cluster that goes away
// fails every request in flight with the same cause, and one message of a thousand lines
// helps nobody (the event log, the status, a webhook).
func joinErrs(errs []error) error {
	const show = 3
	if len(errs) <= show {
		return errors.Join(errs...)
	}
	return errors.Join(append(errs[:show:show], fmt.Errorf("and %d more", len(errs)-show))...)
}
