package apply

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
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
)

// Options configure an Applier. The zero value works.
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

// Applier applies built components to one cluster. It keeps no state of its own beyond
// connections and a build cache: what was applied before (inventories, records) is handed to
// each verb as data, and what it applies is handed back (Result, ApplyOptions.Record) for
// its caller to store. Package rollout is that caller; it also makes the verbs run one at a
// time per cluster.
type Applier struct {
	c    *cluster
	opts Options
	log  *slog.Logger
	// bmu guards built.
	bmu sync.Mutex
	// built keeps the kustomize/Helm output of the last revisions built, by manifest digest
	// and signing scopes: a bundle's layers never change, and building is the costly part of
	// a sync with nothing to do (kustomize's accumulation is quadratic in the object count).
	built     map[string][]Component
	builtFIFO []string
	disco     discovery.DiscoveryInterface
	// clusters are the connections that impersonate components' service accounts, by
	// user name; they share c's RESTMapper. Guarded by cmu.
	cmu      sync.Mutex
	clusters map[string]*cluster
	// lookupSet is true when Options.Lookup came from the caller; otherwise substituteFrom
	// and valuesFrom are read as each component's identity.
	lookupSet bool
}

// Ping asks the API server for its version: the daemon waits for it (k3s starting or
// restarting) before it starts a rollout, rather than failing a revision for it.
func (ap *Applier) Ping(ctx context.Context) error {
	done := make(chan error, 1)
	go func() { _, err := ap.disco.ServerVersion(); done <- err }()
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

// builtKeep is how many revisions' builds are kept: the current one and the one being
// rolled out or back to.
const builtKeep = 2

// New returns an applier for the cluster cfg reaches. Requests are bounded by
// Options.Concurrency rather than by client-go's rate limiter, which cfg's copy turns off
// when cfg sets no QPS.
func New(cfg *rest.Config, opts Options) (*Applier, error) {
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
	ap := &Applier{opts: opts, log: opts.Log, disco: dc, lookupSet: opts.Lookup != nil, c: &cluster{
		cfg:         cfg,
		dyn:         dyn,
		mapper:      restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc)),
		concurrency: opts.Concurrency,
		poll:        opts.PollInterval,
	}}
	if ap.opts.Lookup == nil {
		ap.opts.Lookup = ap.c.lookup
	}
	return ap, nil
}

// Inventory is what the applier records for one component of a revision: every object it
// applies (handed to ApplyOptions.Record before the first is sent, so a crash leaves what to
// prune) with the hash and resourceVersion that let an unchanged object be skipped. The
// applier does not keep inventories: its caller stores them and hands them back as data.
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

// Component is one built component of a revision, ready to be applied: what Build returns.
// Its objects are set by Apply or Release, just before they are sent.
type Component struct {
	spec   bundles.Component
	bundle string
	ns     string         // where its objects without a namespace go
	home   string         // where it lives: its service account, references without a namespace
	nodes  []*kyaml.RNode // built, before substitution; shared with the build cache, never changed
	// reread reads the nodes again from the component's rendered layer: the build cache
	// keeps the nodes of the newest build only (see Build).
	reread func(context.Context) ([]*kyaml.RNode, error)
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

// Name is the component's name in its bundle.
func (c *Component) Name() string { return c.spec.Name }

// Timeout bounds the component's health wait.
func (c *Component) Timeout() time.Duration { return c.tmo }

// Helm reports a Helm component: it goes through Release, not Apply.
func (c *Component) Helm() bool { return c.helm != nil }

// Result says what Apply or Release did to a component's objects.
type Result struct {
	Applied   int
	Unchanged int
	Drift     []Drift
	// Changed is set by Release when Helm made a new release revision (install, upgrade,
	// rollback): its objects' health is then worth waiting for even in a sync.
	Changed bool
}

// Add adds what r did to what s did.
func (s *Result) Add(r Result) {
	s.Applied += r.Applied
	s.Unchanged += r.Unchanged
	s.Drift = append(s.Drift, r.Drift...)
}

// ApplyOptions are the data Apply works from.
type ApplyOptions struct {
	// Bundle is the bundle the component belongs to (its objects carry its label).
	Bundle string
	// Records is the newest record of every object Ferry sent for the bundle (the last good,
	// current and target revisions' inventories, oldest first): what decides that an object
	// needs nothing.
	Records map[string]Entry
	// Earlier are the components of the same revision already applied, whose CRDs tell the
	// scope of kinds the API server does not serve yet.
	Earlier []*Component
	// Recorded is what the component's inventory for this revision holds now (from an
	// earlier attempt, or the revision's own when syncing); zero if none.
	Recorded Inventory
	// Sync is set when the revision is already running: no inventory is written before the
	// objects are sent (they were recorded when it was rolled out), and after only if it
	// changed.
	Sync bool
	// Record stores the component's inventory; it is called before the first object is sent
	// (unless Sync) and once they were. An error from it stops the apply.
	Record func(Inventory) error
}

// Apply substitutes a kustomize component's variables (reading substituteFrom as its
// identity), labels, places and confines its objects, records them (opts.Record), sends
// what changed with server-side apply, and records what the API server returned. It does
// not wait for health (Wait) or prune (Prune). Like every verb's, its errors name the
// component.
func (ap *Applier) Apply(ctx context.Context, c *Component, opts ApplyOptions) (Result, error) {
	cc, err := ap.clusterFor(c.sa)
	if err != nil {
		return Result{}, err
	}
	if err := ap.prepare(ctx, c, cc, opts.Earlier); err != nil {
		return Result{}, err // it names the component
	}
	res, err := ap.send(ctx, c, cc, opts)
	if err != nil {
		return res, fmt.Errorf("component %s: %w", c.spec.Name, err)
	}
	ap.log.Info("applied", "bundle", opts.Bundle, "component", c.spec.Name, "applied", res.Applied, "unchanged", res.Unchanged)
	return res, nil
}

// send records a prepared component's objects and sends them (see Apply).
func (ap *Applier) send(ctx context.Context, c *Component, cc *cluster, opts ApplyOptions) (Result, error) {
	if !opts.Sync {
		// Written before the first object is sent: after a crash, what this revision may
		// have created is known and can be pruned.
		planned := Inventory{Component: c.spec.Name, Prune: c.prune, Objects: plan(c.objs, opts.Records), ServiceAccount: c.sa}
		if err := opts.Record(planned); err != nil {
			return Result{}, err
		}
	}
	res, err := cc.sync(ctx, syncSet{bundle: opts.Bundle, objs: c.objs, prev: opts.Records, drift: c.drift, force: c.force, dryRun: c.sa != ""})
	out := Result{Applied: len(res.applied), Unchanged: len(c.objs) - len(res.applied), Drift: res.drifted}
	got := Inventory{Component: c.spec.Name, Prune: c.prune, Objects: merge(c.objs, res.entries), ServiceAccount: c.sa}
	switch {
	case opts.Sync && err != nil:
		return out, err
	case opts.Sync && !changed(opts.Recorded.Objects, got.Objects):
		return out, nil
	}
	if rerr := opts.Record(got); rerr != nil {
		return out, errors.Join(err, rerr)
	}
	return out, err
}

// Wait waits for a component's health: with wait (always, for a Helm component) every one
// of its objects must become Current by kstatus, and its healthChecks too, within its
// timeout. An unhealthy component's error names the images it runs that the node does not
// hold. A component with neither returns at once.
func (ap *Applier) Wait(ctx context.Context, c *Component, bundle string) error {
	var refs []ObjectRef
	if c.wait {
		for _, o := range c.objs {
			refs = append(refs, o.ref)
		}
	}
	if len(refs) == 0 && len(c.checks) == 0 {
		return nil
	}
	cc, err := ap.clusterFor(c.sa)
	if err != nil {
		return err
	}
	if err := cc.waitHealthy(ctx, bundle, refs, c.checks, c.tmo, ap.opts.FailureWindow); err != nil {
		return fmt.Errorf("component %s: %w%s", c.spec.Name, err, ap.missingImages(ctx, err, c))
	}
	ap.log.Info("healthy", "bundle", bundle, "component", c.spec.Name)
	return nil
}

// PruneOptions are the data Prune works from.
type PruneOptions struct {
	Bundle string
	// Applied are the components of the revision now in place: their objects are kept, and
	// their prune settings decide for the inventories of the same name.
	Applied []*Component
	// Inventories are what the revisions before left, by component (see Inventory).
	Inventories map[string]Inventory
	// All prunes every object Inventories hold that Applied does not, whatever the prune
	// settings, and returns releases the failed revision adopted to the Helm revision they
	// had: a rollback, whose failed revision was never good.
	All bool
}

// Prune deletes what opts.Inventories hold and the revision in place no longer has, across
// components (an object that moved to another component is kept): where the component's
// prune is set (its spec in the revision in place, else the flag recorded with it), only
// objects that still carry the bundle's label and are not annotated prune: disabled,
// Namespaces and definitions last. A Helm release the revision no longer has is uninstalled
// as the identity that installed it, if the bundle installed it. It returns what it deleted.
func (ap *Applier) Prune(ctx context.Context, opts PruneOptions) ([]ObjectRef, error) {
	keep := map[string]bool{}
	releases := map[string]bool{} // "namespace/name" of the releases the revision has
	prune := map[string]bool{}
	for _, c := range opts.Applied {
		for _, o := range c.objs {
			keep[o.ref.key()] = true
		}
		if c.helm != nil {
			releases[c.ns+"/"+c.helm.release] = true
		}
		prune[c.spec.Name] = c.prune
	}
	var pruned []ObjectRef
	for _, cname := range slices.Sorted(maps.Keys(opts.Inventories)) {
		inv := opts.Inventories[cname]
		cc, err := ap.clusterFor(inv.ServiceAccount)
		if err != nil {
			return pruned, err
		}
		if r := inv.Release; r != nil {
			// Helm removes what a chart no longer has; a release the revision no longer has
			// is uninstalled, as the identity that installed it.
			if !releases[r.Namespace+"/"+r.Name] {
				if err := ap.removeRelease(ctx, cc, opts.Bundle, *r, keep, opts.All); err != nil {
					return pruned, fmt.Errorf("component %s: %w", cname, err)
				}
			}
			continue
		}
		p, ok := prune[cname]
		if !ok {
			p = inv.Prune
		}
		if !p && !opts.All {
			continue
		}
		var gone []ObjectRef
		for _, o := range inv.Objects {
			if !keep[o.key()] {
				gone = append(gone, o.ObjectRef)
			}
		}
		if len(gone) == 0 {
			continue
		}
		deleted, err := cc.prune(ctx, opts.Bundle, gone)
		pruned = append(pruned, deleted...)
		for _, d := range deleted {
			ap.log.Info("pruned", "bundle", opts.Bundle, "object", d.String())
		}
		if err != nil {
			return pruned, fmt.Errorf("component %s: %w", cname, err)
		}
	}
	return pruned, nil
}

// missingImages is what a failed health wait adds to its message: the images the
// component's objects run that the node does not hold (neither the bundle carried them nor
// any other kept revision). Pods naming them cannot start on an air-gapped node.
func (ap *Applier) missingImages(ctx context.Context, err error, c *Component) string {
	if ap.opts.Images == nil || !errors.Is(err, ErrUnhealthy) {
		return ""
	}
	var missing []string
	for _, o := range c.objs {
		for _, im := range render.ImagesOf(o.obj.Object) {
			if !ap.opts.Images.Holds(ctx, im) && !slices.Contains(missing, im) {
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

// BuildOptions name the revision Build builds.
type BuildOptions struct {
	// Source holds the bundle's manifest, config and layers (the store, for a stored
	// revision).
	Source   content.Fetcher
	Manifest ocispec.Descriptor
	// Bundle is the name the revision was admitted under: the bundle must carry it.
	Bundle string
	// Scopes are the scopes of the keys that signed the revision, as recorded at admission.
	Scopes []*bundles.Scope
}

// Build builds every component of a revision, in dependency order (dependsOn, else as
// listed), confined by its signing keys' scopes; variables from the cluster are substituted
// later, by Apply. Builds are cached for the last two revisions built: the same manifest and
// scopes give the same components. Of the older of the two, a component carried rendered
// is kept without its objects, read again from its layer if it is prepared (a rollback):
// keeping them would cost more memory (~27 MB at 4,000 objects) than reading them costs
// time (~0.1 s).
func (ap *Applier) Build(ctx context.Context, opts BuildOptions) ([]Component, error) {
	scopes, err := json.Marshal(opts.Scopes)
	if err != nil {
		return nil, err
	}
	key := opts.Manifest.Digest.String() + " " + string(scopes)
	ap.bmu.Lock()
	comps, ok := ap.built[key]
	ap.bmu.Unlock()
	if ok {
		return slices.Clone(comps), nil
	}
	b, err := bundles.Open(ctx, opts.Source, opts.Manifest)
	if err != nil {
		return nil, err
	}
	if b.Metadata.Name != opts.Bundle {
		return nil, fmt.Errorf("stored revision of %s holds bundle %q", opts.Bundle, b.Metadata.Name)
	}
	if comps, err = ap.buildFrom(ctx, opts.Source, b, opts.Scopes); err != nil {
		return nil, err
	}
	ap.bmu.Lock()
	defer ap.bmu.Unlock()
	if ap.built == nil {
		ap.built = map[string][]Component{}
	}
	if _, ok := ap.built[key]; !ok {
		// The newest build keeps its objects (a sync reuses them); the one before it
		// keeps none of a component carried rendered, which is read again if needed.
		if n := len(ap.builtFIFO); n > 0 {
			older := ap.builtFIFO[n-1]
			ap.built[older] = withoutRereadable(ap.built[older])
		}
		ap.built[key] = comps
		ap.builtFIFO = append(ap.builtFIFO, key)
	}
	if len(ap.builtFIFO) > builtKeep {
		delete(ap.built, ap.builtFIFO[0])
		ap.builtFIFO = ap.builtFIFO[1:]
	}
	return slices.Clone(comps), nil
}

// withoutRereadable is comps with no parsed objects of the components that can read them
// again from their rendered layer.
func withoutRereadable(comps []Component) []Component {
	out := slices.Clone(comps)
	for i := range out {
		if out[i].reread != nil {
			out[i].nodes = nil
		}
	}
	return out
}

// buildFrom builds every component of bundle b, its layers read from src, in dependency
// order, confined by the scopes of the keys that signed it: a stored revision (Build) or
// one not admitted yet (Preview).
func (ap *Applier) buildFrom(ctx context.Context, src content.Fetcher, b *bundles.Bundle, scopes []*bundles.Scope) ([]Component, error) {
	order, err := b.Metadata.Order()
	if err != nil {
		return nil, err
	}
	var comps []Component
	for _, i := range order {
		spec := b.Metadata.Components[i]
		c := Component{spec: spec, bundle: b.Metadata.Name, ns: ap.opts.namespaceOf(spec), home: ap.opts.homeOf(spec), tmo: ap.opts.DefaultTimeout}
		var timeout, sa string
		if k := spec.Kustomize; k != nil {
			if c.nodes, err = ap.opts.build(ctx, src, b, i); err != nil {
				return nil, err
			}
			if _, ok := b.Rendered(i); ok {
				c.reread = func(ctx context.Context) ([]*kyaml.RNode, error) { return render.Carried(ctx, src, b, i) }
			}
			c.wait, c.prune, c.force, c.drift = k.Wait, k.Prune, k.Force, k.DriftDetection
			timeout, sa, c.targetNS = k.Timeout, k.ServiceAccountName, k.TargetNamespace
		} else if h := spec.Helm; h != nil {
			if c.helm, err = ap.opts.helmChart(ctx, src, b, i); err != nil {
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
			sa = ap.opts.DefaultServiceAccount
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
				ns, err := ap.refNamespace(&c, h.Namespace, fmt.Sprintf("healthChecks[%d]", j))
				if err != nil {
					return nil, fmt.Errorf("component %s: %w", spec.Name, err)
				}
				c.checks = append(c.checks, ObjectRef{Group: gv.Group, Version: gv.Version, Kind: h.Kind, Namespace: ns, Name: h.Name})
			}
		}
		comps = append(comps, c)
	}
	if ap.opts.NoCrossNamespaceRefs {
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
// them and places them in namespaces. earlier are the components already prepared (their
// CRDs tell the scope of kinds not served yet).
func (ap *Applier) prepare(ctx context.Context, c *Component, cc *cluster, earlier []*Component) error {
	var before []*object
	for _, e := range earlier {
		before = append(before, e.objs...)
	}
	env := ap.opts.Env
	env.scopes = c.scopes
	if !ap.lookupSet {
		env.Lookup = cc.lookup // substituteFrom is read as the component's identity
	}
	nodes := c.nodes
	if nodes == nil && c.reread != nil {
		var err error
		if nodes, err = c.reread(ctx); err != nil {
			return err
		}
	}
	us, err := env.finish(ctx, c.spec, nodes)
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
		o, err := newObject(u, ap.opts.Keys.HashKey())
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

// Entries returns the inventory's objects by key.
func (inv Inventory) Entries() map[string]Entry {
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
	m := Inventory{Objects: a}.Entries()
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
