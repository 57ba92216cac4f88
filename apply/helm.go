package apply

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/releaseutil"
	helmdriver "helm.sh/helm/v3/pkg/storage/driver"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/ferrygitops/ferry/apply/render"
	"github.com/ferrygitops/ferry/bundles"
)

// LabelSource is the Helm release label that records what a release was installed from,
// besides its values: the component's layer (chart and values files), bundle and component
// (what the post-renderer writes). With the release's own values and chart version it
// decides whether an upgrade would change anything.
const LabelSource = "ferry.dev/source"

// defaultMaxHistory bounds a release's stored revisions when the component sets none (Flux
// keeps 5; the SDK's own default keeps every revision).
const defaultMaxHistory = 10

// helmChart is what a Helm component needs to become a Helm release: the chart vendored in
// its layer, the values files beside it, and the layer's digest (chart and values files).
type helmChart struct {
	// takeOver is set when the component's objects were applied without Helm before (see
	// install).
	takeOver bool
	release  string
	chart    *chart.Chart
	files    bundles.Files
	layer    digest.Digest
	spec     bundles.HelmSpec
}

// Release is what a component's inventory records of its Helm release: the Helm revision
// (Version) a Ferry revision deployed, to roll back to exactly that one.
type Release struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	Version   int    `json:"version"`
	// Adopted is set when the release existed, not installed by this bundle, before this
	// revision upgraded it: a rollback returns it to Before instead of uninstalling it.
	Adopted bool `json:"adopted,omitempty"`
	Before  int  `json:"before,omitempty"`
	// Failed is the source and values digest of the last install or upgrade that failed, so
	// a sync does not try it again at every interval (a rollout of a new revision does).
	Failed string `json:"failed,omitempty"`
}

// helmValues merges the component's values in Flux's order: valuesFiles < valuesFrom (read
// from the cluster, as the component's service account) < inline values; then ${VAR} naming
// a node variable is replaced in string values (others are left as written: dashboards and
// scripts in values use the same syntax).
func (ap *Applier) helmValues(ctx context.Context, c *Component, cc *cluster) (map[string]any, error) {
	h := c.helm.spec
	var from []map[string]any
	for i, ref := range h.ValuesFrom {
		ns, err := ap.refNamespace(c, ref.Namespace, fmt.Sprintf("valuesFrom[%d]", i))
		if err != nil {
			return nil, err
		}
		data, err := cc.lookup(ctx, ref.Kind, ns, ref.Name)
		if apierrors.IsNotFound(err) && ref.Optional {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("valuesFrom %s %s/%s: %w", ref.Kind, ns, ref.Name, err)
		}
		key := ref.ValuesKey
		if key == "" {
			key = "values.yaml"
		}
		raw, ok := data[key]
		if !ok {
			if ref.Optional {
				continue
			}
			return nil, fmt.Errorf("valuesFrom %s %s/%s has no key %q", ref.Kind, ns, ref.Name, key)
		}
		if ref.TargetPath != "" {
			v := map[string]any{}
			setPath(v, ref.TargetPath, raw)
			from = append(from, v)
			continue
		}
		var v map[string]any
		if err := sigsyaml.Unmarshal([]byte(raw), &v); err != nil {
			return nil, fmt.Errorf("valuesFrom %s %s/%s key %q is not a YAML map: %w", ref.Kind, ns, ref.Name, key, err)
		}
		from = append(from, v)
	}
	return ap.opts.Env.values(c.helm.files, h, from...)
}

// values merges a Helm component's values (render.Values) and replaces ${VAR} naming a node
// variable in their strings: what a release is installed with, and what `ferry render`
// shows.
func (env Env) values(files bundles.Files, h bundles.HelmSpec, fromCluster ...map[string]any) (map[string]any, error) {
	vals, err := render.Values(files, h, fromCluster...)
	if err != nil {
		return nil, err
	}
	if len(env.Vars) > 0 && !env.KeepVariables {
		vals = substituteValues(vals, env.Vars).(map[string]any)
	}
	return vals, nil
}

// setPath sets a dotted path (Flux's targetPath, without its escapes and indexes) to v.
func setPath(m map[string]any, path string, v any) {
	parts := strings.Split(path, ".")
	for _, p := range parts[:len(parts)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[p] = next
		}
		m = next
	}
	m[parts[len(parts)-1]] = v
}

var nodeVar = regexp.MustCompile(`\$\{([_[:alpha:]][_[:alpha:][:digit:]]*)\}`)

func substituteValues(v any, vars map[string]string) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, x := range t {
			out[k] = substituteValues(x, vars)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, x := range t {
			out[i] = substituteValues(x, vars)
		}
		return out
	case string:
		return nodeVar.ReplaceAllStringFunc(t, func(s string) string {
			if val, ok := vars[s[2:len(s)-1]]; ok {
				return val
			}
			return s
		})
	}
	return v
}

// sourceDigest identifies what a release is installed from besides its values.
func sourceDigest(layer digest.Digest, bundle, component string) string {
	h := sha256.Sum256([]byte(string(layer) + "\x00" + bundle + "\x00" + component))
	return hex.EncodeToString(h[:])[:48] // a label value holds at most 63
}

// valuesDigest hashes values; json.Marshal sorts map keys, so equal values give equal bytes
// (the release's stored Config decodes to the same types as the merged values).
func valuesDigest(vals map[string]any) (string, error) {
	b, err := json.Marshal(vals)
	if err != nil {
		return "", err
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:]), nil
}

// installedFrom reports whether rel was installed from this source, chart and values: a
// release changed by hand (helm upgrade --set, another chart) is not, even though Helm
// carries Ferry's labels over.
func installedFrom(rel *release.Release, source string, ch *chart.Chart, values string) bool {
	if rel.Labels[LabelSource] != source || rel.Chart == nil || rel.Chart.Metadata == nil ||
		rel.Chart.Metadata.Name != ch.Metadata.Name || rel.Chart.Metadata.Version != ch.Metadata.Version {
		return false
	}
	got, err := valuesDigest(rel.Config)
	return err == nil && got == values
}

// helmGetter gives the Helm SDK the applier's connection to the cluster (impersonating the
// component's service account when it has one) instead of a kubeconfig from the
// environment.
type helmGetter struct {
	cfg   *rest.Config
	ns    string
	disco discovery.CachedDiscoveryInterface
	rm    meta.RESTMapper
}

func (g helmGetter) ToRESTConfig() (*rest.Config, error) { return rest.CopyConfig(g.cfg), nil }
func (g helmGetter) ToDiscoveryClient() (discovery.CachedDiscoveryInterface, error) {
	return g.disco, nil
}
func (g helmGetter) ToRESTMapper() (meta.RESTMapper, error) { return g.rm, nil }
func (g helmGetter) ToRawKubeConfigLoader() clientcmd.ClientConfig {
	return clientcmd.NewDefaultClientConfig(clientcmdapi.Config{}, &clientcmd.ConfigOverrides{Context: clientcmdapi.Context{Namespace: g.ns}})
}

// helmConfig returns the SDK's configuration for releases in ns, stored in Secrets (so
// `helm list` and `helm history` on the node show them), as cc's identity.
func (ap *Applier) helmConfig(cc *cluster, ns string, maxHistory int) (*action.Configuration, error) {
	if cc.helmDisco == nil {
		// Helm's own cache: every Helm action invalidates the discovery it is given, and
		// the applier's RESTMapper must not lose its cache each time.
		dc, err := discovery.NewDiscoveryClientForConfig(cc.cfg)
		if err != nil {
			return nil, err
		}
		cc.helmDisco = memory.NewMemCacheClient(dc)
	}
	cfg := new(action.Configuration)
	get := helmGetter{cfg: cc.cfg, ns: ns, disco: cc.helmDisco, rm: cc.mapper}
	logf := func(format string, v ...any) { ap.log.Debug(fmt.Sprintf(format, v...), "helm", true) }
	if err := cfg.Init(get, ns, "secret", logf); err != nil {
		return nil, fmt.Errorf("helm: %w", err)
	}
	cfg.Releases.MaxHistory = maxHistory
	return cfg, nil
}

// labeler is Helm's post-renderer: it labels every object of the release as the bundle's,
// so the applier lists, checks and guards them as it does its own.
type labeler struct{ bundle, component string }

func (l labeler) Run(in *bytes.Buffer) (*bytes.Buffer, error) {
	docs := releaseutil.SplitManifests(in.String())
	keys := slices.Sorted(maps.Keys(docs))
	slices.SortFunc(keys, func(a, b string) int { return manifestIndex(a) - manifestIndex(b) })
	out := new(bytes.Buffer)
	for _, k := range keys {
		var m map[string]any
		if err := sigsyaml.Unmarshal([]byte(docs[k]), &m); err != nil {
			return nil, fmt.Errorf("post-render: %w", err)
		}
		if m == nil {
			continue
		}
		u := unstructured.Unstructured{Object: m}
		labels := u.GetLabels()
		if labels == nil {
			labels = map[string]string{}
		}
		labels[LabelBundle], labels[LabelComponent] = l.bundle, l.component
		u.SetLabels(labels)
		b, err := sigsyaml.Marshal(u.Object)
		if err != nil {
			return nil, err
		}
		out.WriteString("---\n")
		out.Write(b)
	}
	return out, nil
}

// manifestIndex orders SplitManifests' keys ("manifest-12") as they came.
func manifestIndex(k string) int {
	var n int
	_, _ = fmt.Sscanf(k, "manifest-%d", &n)
	return n
}

// helmOutcome is what applyRelease did.
type helmOutcome struct {
	rel     *release.Release
	changed bool
	// attempt is the source and values digest of a failed install or upgrade.
	attempt string
}

// applyRelease installs or upgrades the component's release with Flux's HelmRelease
// semantics, or, when back is set (a whole-revision rollback), returns it to the Helm
// revision the good revision deployed. A release whose chart and values are unchanged and
// that is deployed is left alone: no new Helm revision.
func (ap *Applier) applyRelease(ctx context.Context, c *Component, cc *cluster, back *Release, failed string) (helmOutcome, error) {
	h := c.helm.spec
	log := ap.log.With("bundle", c.bundle, "component", c.spec.Name, "release", c.helm.release)
	vals, err := ap.helmValues(ctx, c, cc)
	if err != nil {
		return helmOutcome{}, err
	}
	source := sourceDigest(c.helm.layer, c.bundle, c.spec.Name)
	want, err := valuesDigest(vals)
	if err != nil {
		return helmOutcome{}, err
	}
	maxHistory := defaultMaxHistory
	if h.MaxHistory != nil {
		maxHistory = *h.MaxHistory
	}
	cfg, err := ap.helmConfig(cc, c.ns, maxHistory)
	if err != nil {
		return helmOutcome{}, err
	}
	last, err := cfg.Releases.Last(c.helm.release)
	if err != nil && !errors.Is(err, helmdriver.ErrReleaseNotFound) {
		return helmOutcome{}, fmt.Errorf("release %s: %w", c.helm.release, err)
	}
	if last != nil {
		if owner := last.Labels[LabelBundle]; owner != "" && owner != c.bundle {
			// Another bundle's release (a release made by hand, with no owner, is taken over
			// as helm-controller does).
			return helmOutcome{}, fmt.Errorf("release %s in namespace %s belongs to bundle %s", c.helm.release, c.ns, owner)
		}
	}
	pending := last != nil && last.Info.Status.IsPending()
	if pending {
		// A crash in the middle of a Helm action leaves the release locked; every later
		// action would refuse it. Mark it failed and go on, as helm-controller does.
		log.Warn("release left pending by an interrupted action; marking it failed", "status", last.Info.Status, "version", last.Version)
		last.Info.Description = fmt.Sprintf("Ferry: %s interrupted (the node or Ferry stopped); marked failed to recover", last.Info.Status)
		last.Info.Status = release.StatusFailed
		if err := cfg.Releases.Update(last); err != nil {
			return helmOutcome{}, fmt.Errorf("release %s: recover from pending: %w", c.helm.release, err)
		}
	}
	if last != nil && last.Info.Status == release.StatusDeployed && installedFrom(last, source, c.helm.chart, want) {
		return helmOutcome{rel: last}, nil
	}
	if failed != "" && failed == source+"/"+want {
		// This chart and these values failed before (a sync after a valuesFrom source
		// changed): not tried again at every interval, only when they change.
		return helmOutcome{rel: last}, fmt.Errorf("release %s: the upgrade to this chart and these values failed before; not retried until they change", c.helm.release)
	}
	labels := map[string]string{LabelBundle: c.bundle, LabelComponent: c.spec.Name, LabelSource: source}
	post := labeler{bundle: c.bundle, component: c.spec.Name}
	if back != nil && last != nil {
		if target, err := cfg.Releases.Get(c.helm.release, back.Version); err == nil && installedFrom(target, source, c.helm.chart, want) {
			if err := confineStored(c, cc, target); err != nil {
				return helmOutcome{}, err
			}
			log.Info("rolling the release back", "to", back.Version)
			if err := rollback(cfg, c.helm.release, back.Version, c.tmo, maxHistory); err != nil {
				return helmOutcome{}, fmt.Errorf("release %s: roll back to Helm revision %d: %w", c.helm.release, back.Version, err)
			}
			rel, err := cfg.Releases.Last(c.helm.release)
			return helmOutcome{rel: rel, changed: true}, err
		}
	}
	if last != nil && last.Info.Status == release.StatusFailed {
		// A failed or interrupted action left objects half changed, and Helm's upgrade would
		// patch from the deployed revision's manifest and keep those changes (a three-way
		// merge sees them as someone else's). Go back to the deployed revision first (a
		// rollback patches from the failed one); an interrupted install with nothing
		// deployed is uninstalled and installed again, as Flux remediates installs.
		if d, err := cfg.Releases.Deployed(c.helm.release); err == nil {
			if err := confineStored(c, cc, d); err != nil {
				return helmOutcome{}, err
			}
			log.Info("returning the release to its deployed revision before going on", "to", d.Version, "failed", last.Version)
			if err := rollback(cfg, c.helm.release, d.Version, c.tmo, maxHistory); err != nil {
				return helmOutcome{}, fmt.Errorf("release %s: recover from failed revision %d: %w", c.helm.release, last.Version, err)
			}
			if last, err = cfg.Releases.Last(c.helm.release); err != nil {
				return helmOutcome{}, err
			}
		} else if pending {
			if err := uninstall(cfg, c.helm.release, c.tmo); err != nil {
				return helmOutcome{}, fmt.Errorf("release %s: recover from pending: %w", c.helm.release, err)
			}
			last = nil
		}
	}
	if c.confined() {
		if err := ap.confineRelease(ctx, c, cc, cfg, last, vals, post, maxHistory); err != nil {
			return helmOutcome{}, err
		}
	}
	if crds := crdPolicy(h, last == nil); crds == "CreateReplace" || (crds == "Create" && last != nil) {
		if err := ap.applyCRDs(ctx, c, cc, vals, crds == "CreateReplace"); err != nil {
			return helmOutcome{}, err
		}
	}
	var out helmOutcome
	if last == nil {
		out, err = ap.install(ctx, cfg, c, vals, labels, post, maxHistory, log)
	} else {
		out, err = ap.upgrade(ctx, cfg, c, cc, last, vals, labels, post, maxHistory, log)
	}
	if err != nil && ctx.Err() == nil && !isTransient(err) {
		out.attempt = source + "/" + want // not for a shutdown or an API server away
	}
	return out, err
}

// confineRelease runs the coming install or upgrade as a server-side dry run, as the
// component's identity — the render Helm will apply, with .Release.IsUpgrade, lookups and
// the cluster's capabilities — and refuses it, before Helm writes anything, if it holds
// objects the component may not (see confine): manifest, hooks, and the chart's CRDs when
// the crds policy would apply them.
func (ap *Applier) confineRelease(ctx context.Context, c *Component, cc *cluster, cfg *action.Configuration, last *release.Release, vals map[string]any, post labeler, maxHistory int) error {
	var rel *release.Release
	var err error
	if last == nil {
		in := action.NewInstall(cfg)
		in.DryRun, in.DryRunOption = true, "server"
		in.ReleaseName, in.Namespace, in.PostRenderer = c.helm.release, c.ns, post
		rel, err = in.RunWithContext(ctx, c.helm.chart, vals)
	} else {
		up := action.NewUpgrade(cfg)
		up.DryRun, up.DryRunOption, up.MaxHistory = true, "server", maxHistory
		up.Namespace, up.PostRenderer = c.ns, post
		rel, err = up.RunWithContext(ctx, c.helm.release, c.helm.chart, vals)
	}
	if err != nil {
		return fmt.Errorf("release %s: dry run: %w", c.helm.release, err)
	}
	var crds []*unstructured.Unstructured
	if crdPolicy(c.helm.spec, last == nil) != "Skip" {
		for _, crd := range c.helm.chart.CRDObjects() {
			us, err := manifestObjects(&release.Release{Name: rel.Name, Manifest: string(crd.File.Data)})
			if err != nil {
				return err
			}
			crds = append(crds, us...)
		}
	}
	return confineStored(c, cc, rel, crds...)
}

// confineStored refuses a release (a dry run's, or one read back from Helm's storage, which
// whoever may write Secrets in the namespace can change) holding objects the component may
// not: its manifest, its hooks and extra.
func confineStored(c *Component, cc *cluster, rel *release.Release, extra ...*unstructured.Unstructured) error {
	if !c.confined() {
		return nil
	}
	us, err := manifestObjects(rel)
	if err != nil {
		return err
	}
	for _, h := range rel.Hooks { // hooks are applied too, outside the manifest
		hs, err := manifestObjects(&release.Release{Name: rel.Name, Manifest: h.Manifest})
		if err != nil {
			return err
		}
		us = append(us, hs...)
	}
	us = append(us, extra...)
	objs := make([]*object, 0, len(us))
	for _, u := range us {
		o, err := newObject(u, nil)
		if err != nil {
			return err
		}
		objs = append(objs, o)
	}
	if err := cc.place(objs, c.ns, crdScopes(objs)); err != nil {
		return err
	}
	return confine(c, objs)
}

// crdPolicy is Flux's crds field for the action; both default to Create (helm-controller's
// documentation says Skip for upgrades, its code creates missing CRDs, and a chart version
// that adds a CRD needs it).
func crdPolicy(h bundles.HelmSpec, install bool) string {
	switch {
	case install && h.Install != nil && h.Install.CRDs != "":
		return h.Install.CRDs
	case !install && h.Upgrade != nil && h.Upgrade.CRDs != "":
		return h.Upgrade.CRDs
	}
	return "Create"
}

// applyCRDs creates the chart's CRDs (crds/), or replaces them with replace, before Helm
// runs: the SDK itself only creates them on install, and never touches them again.
func (ap *Applier) applyCRDs(ctx context.Context, c *Component, cc *cluster, vals map[string]any, replace bool) error {
	// Subcharts the values disable contribute no CRDs.
	ch, err := render.LoadChart(c.helm.files) // a copy: processing dependencies changes it
	if err != nil {
		return err
	}
	if err := chartutil.ProcessDependenciesWithMerge(ch, vals); err != nil {
		return fmt.Errorf("chart dependencies: %w", err)
	}
	var objs []*object
	for _, crd := range ch.CRDObjects() {
		for _, doc := range releaseutil.SplitManifests(string(crd.File.Data)) {
			var m map[string]any
			if err := sigsyaml.Unmarshal([]byte(doc), &m); err != nil {
				return fmt.Errorf("chart CRD %s: %w", crd.Filename, err)
			}
			if m == nil {
				continue
			}
			u := &unstructured.Unstructured{Object: m}
			if !replace {
				ri, err := cc.resource(refOf(u))
				if err != nil {
					return err
				}
				if _, err := ri.Get(ctx, u.GetName(), metav1.GetOptions{}); err == nil {
					continue
				} else if !apierrors.IsNotFound(err) {
					return err
				}
			}
			o, err := newObject(u, nil)
			if err != nil {
				return err
			}
			objs = append(objs, o)
		}
	}
	if _, err := cc.applyAll(ctx, objs, false); err != nil {
		return fmt.Errorf("chart CRDs: %w", err)
	}
	refs := make([]ObjectRef, len(objs))
	for i, o := range objs {
		refs[i] = o.ref
	}
	return cc.waitEstablished(ctx, refs)
}

func installRemediation(h bundles.HelmSpec) *bundles.Remediation {
	if h.Install == nil {
		return nil
	}
	return h.Install.Remediation
}

func upgradeRemediation(h bundles.HelmSpec) *bundles.Remediation {
	if h.Upgrade == nil {
		return nil
	}
	return h.Upgrade.Remediation
}

// remediation returns the retries, whether to remediate the last failure, and the
// strategy, with Flux's defaults: no retries; the last failure of an upgrade remediated
// when retries are set; rollback.
func remediation(r *bundles.Remediation, upgrade bool) (int, bool, string) {
	if r == nil {
		return 0, false, "rollback"
	}
	last := upgrade && r.Retries > 0
	if r.RemediateLastFailure != nil {
		last = *r.RemediateLastFailure
	}
	strategy := r.Strategy
	if strategy == "" {
		strategy = "rollback"
	}
	return r.Retries, last, strategy
}

func (ap *Applier) install(ctx context.Context, cfg *action.Configuration, c *Component, vals map[string]any, labels map[string]string, post labeler, maxHistory int, log interface{ Info(string, ...any) }) (helmOutcome, error) {
	h := c.helm.spec
	retries, remediateLast, _ := remediation(installRemediation(h), false)
	var err error
	for attempt := 0; attempt <= retries; attempt++ {
		in := action.NewInstall(cfg)
		in.ReleaseName, in.Namespace = c.helm.release, c.ns
		in.Wait, in.Timeout = true, c.tmo                                                      // the SDK fails at once with Wait and no timeout
		in.CreateNamespace = h.Install != nil && h.Install.CreateNamespace && c.targetNS != "" // as Flux
		in.SkipCRDs = crdPolicy(h, true) != "Create"                                           // CreateReplace was applied before
		in.Labels, in.PostRenderer = labels, post
		in.Description = "Ferry install"
		// Objects an older Ferry applied as plain manifests for this component carry no Helm
		// ownership: the first install takes them over rather than failing on them.
		in.TakeOwnership = c.helm.takeOver
		var rel *release.Release
		rel, err = in.RunWithContext(ctx, c.helm.chart, vals)
		if err == nil {
			log.Info("release installed", "version", rel.Version)
			return helmOutcome{rel: rel, changed: true}, nil
		}
		if ctx.Err() != nil {
			return helmOutcome{}, err
		}
		if attempt == retries && !remediateLast {
			break
		}
		// Install remediation is always an uninstall (Flux).
		log.Info("install failed; uninstalling to remediate", "attempt", attempt+1, "err", err.Error())
		if uerr := uninstall(cfg, c.helm.release, c.tmo); uerr != nil {
			return helmOutcome{}, errors.Join(err, uerr)
		}
	}
	return helmOutcome{}, fmt.Errorf("release %s: install: %w", c.helm.release, err)
}

func (ap *Applier) upgrade(ctx context.Context, cfg *action.Configuration, c *Component, cc *cluster, last *release.Release, vals map[string]any, labels map[string]string, post labeler, maxHistory int, log interface{ Info(string, ...any) }) (helmOutcome, error) {
	h := c.helm.spec
	retries, remediateLast, strategy := remediation(upgradeRemediation(h), true)
	// The release to go back to is the one deployed before this upgrade was tried.
	good := 0
	if last.Info.Status == release.StatusDeployed {
		good = last.Version
	} else if d, err := cfg.Releases.Deployed(c.helm.release); err == nil {
		good = d.Version
	}
	var err error
	for attempt := 0; attempt <= retries; attempt++ {
		up := action.NewUpgrade(cfg)
		up.Namespace = c.ns
		up.Wait, up.Timeout, up.MaxHistory = true, c.tmo, maxHistory
		up.CleanupOnFail = h.Upgrade != nil && h.Upgrade.CleanupOnFail
		up.SkipCRDs = true // applied before, as crds says
		up.Labels, up.PostRenderer = labels, post
		up.Description = "Ferry upgrade"
		var rel *release.Release
		rel, err = up.RunWithContext(ctx, c.helm.release, c.helm.chart, vals)
		if err == nil {
			log.Info("release upgraded", "version", rel.Version)
			return helmOutcome{rel: rel, changed: true}, nil
		}
		if ctx.Err() != nil {
			return helmOutcome{}, err
		}
		if attempt == retries && !remediateLast {
			break
		}
		switch {
		case strategy == "uninstall":
			log.Info("upgrade failed; uninstalling to remediate (strategy uninstall)", "attempt", attempt+1, "err", err.Error())
			if uerr := uninstall(cfg, c.helm.release, c.tmo); uerr != nil {
				return helmOutcome{}, errors.Join(err, uerr)
			}
			if attempt < retries {
				return ap.install(ctx, cfg, c, vals, labels, post, maxHistory, log)
			}
		case good == 0:
			return helmOutcome{}, fmt.Errorf("release %s: upgrade: %w (no deployed revision to roll back to)", c.helm.release, err)
		default:
			if target, gerr := cfg.Releases.Get(c.helm.release, good); gerr != nil {
				return helmOutcome{}, errors.Join(err, gerr)
			} else if cerr := confineStored(c, cc, target); cerr != nil {
				return helmOutcome{}, errors.Join(err, cerr)
			}
			log.Info("upgrade failed; rolling back to remediate", "attempt", attempt+1, "to", good, "err", err.Error())
			if rerr := rollback(cfg, c.helm.release, good, c.tmo, maxHistory); rerr != nil {
				return helmOutcome{}, errors.Join(err, rerr)
			}
			// The rollback is the deployed revision now; the one it copied may be pruned.
			if d, derr := cfg.Releases.Deployed(c.helm.release); derr == nil {
				good = d.Version
			}
		}
	}
	return helmOutcome{}, fmt.Errorf("release %s: upgrade: %w", c.helm.release, err)
}

func rollback(cfg *action.Configuration, name string, version int, timeout time.Duration, maxHistory int) error {
	rb := action.NewRollback(cfg)
	rb.Version, rb.Wait, rb.Timeout, rb.MaxHistory = version, true, timeout, maxHistory
	return rb.Run(name)
}

func uninstall(cfg *action.Configuration, name string, timeout time.Duration) error {
	un := action.NewUninstall(cfg)
	un.Wait, un.Timeout, un.IgnoreNotFound = true, timeout, true
	un.Description = "Ferry uninstall"
	_, err := un.Run(name)
	return err
}

// adopting returns the Helm revision of the component's release when one exists that this
// bundle did not install (a release made by hand, taken over as helm-controller does), else
// 0.
func (ap *Applier) adopting(cc *cluster, c *Component) (int, error) {
	cfg, err := ap.helmConfig(cc, c.ns, defaultMaxHistory)
	if err != nil {
		return 0, err
	}
	last, err := cfg.Releases.Last(c.helm.release)
	if errors.Is(err, helmdriver.ErrReleaseNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("release %s: %w", c.helm.release, err)
	}
	if last.Labels[LabelBundle] == c.bundle {
		return 0, nil
	}
	return last.Version, nil
}

// removeRelease removes a release a revision no longer has (or a failed revision added),
// as the identity of the component that installed it, and only if the bundle installed it:
// a revision that failed before Helm ran still names the release, which may be someone
// else's. Objects in keep (now applied by another component) are taken out of the release
// first, so Helm's uninstall does not delete them. Rolling back (rollback), a release the
// failed revision adopted (one that existed before it) is returned to the Helm revision it
// had, not uninstalled.
func (ap *Applier) removeRelease(ctx context.Context, cc *cluster, bundle string, rec Release, keep map[string]bool, rollingBack bool) error {
	cfg, err := ap.helmConfig(cc, rec.Namespace, defaultMaxHistory)
	if err != nil {
		return err
	}
	last, err := cfg.Releases.Last(rec.Name)
	if errors.Is(err, helmdriver.ErrReleaseNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("release %s/%s: %w", rec.Namespace, rec.Name, err)
	}
	if owner := last.Labels[LabelBundle]; owner != bundle {
		ap.log.Warn("not uninstalling a release this bundle did not install", "release", rec.Name, "namespace", rec.Namespace, "owner", owner)
		return nil
	}
	if rollingBack && rec.Adopted {
		if rec.Before == 0 || rec.Before == last.Version {
			return nil
		}
		ap.log.Info("returning an adopted release to the revision it had", "release", rec.Name, "namespace", rec.Namespace, "to", rec.Before)
		if err := rollback(cfg, rec.Name, rec.Before, waitBound, defaultMaxHistory); err != nil {
			return fmt.Errorf("release %s/%s: roll back to Helm revision %d: %w", rec.Namespace, rec.Name, rec.Before, err)
		}
		return nil
	}
	if err := keepObjects(ctx, cfg, cc, last, keep); err != nil {
		return fmt.Errorf("release %s/%s: %w", rec.Namespace, rec.Name, err)
	}
	if err := uninstall(cfg, rec.Name, waitBound); err != nil {
		return fmt.Errorf("uninstall release %s/%s: %w", rec.Namespace, rec.Name, err)
	}
	ap.log.Info("release uninstalled", "release", rec.Name, "namespace", rec.Namespace)
	return nil
}

// keepObjects takes the objects in keep out of the stored manifest of rel, which Helm's
// uninstall deletes by name.
func keepObjects(_ context.Context, cfg *action.Configuration, cc *cluster, rel *release.Release, keep map[string]bool) error {
	us, err := manifestObjects(rel)
	if err != nil {
		return err
	}
	var docs []string
	kept := 0
	for _, u := range us {
		o, err := newObject(u, nil)
		if err != nil {
			return err
		}
		if err := cc.place([]*object{o}, rel.Namespace, nil); err == nil && keep[o.ref.key()] {
			kept++
			continue
		}
		b, err := sigsyaml.Marshal(u.Object)
		if err != nil {
			return err
		}
		docs = append(docs, string(b))
	}
	if kept == 0 {
		return nil
	}
	rel.Manifest = "---\n" + strings.Join(docs, "---\n")
	return cfg.Releases.Update(rel)
}

// manifestObjects returns the objects of a release's manifest (hooks are not part of it).
func manifestObjects(rel *release.Release) ([]*unstructured.Unstructured, error) {
	docs := releaseutil.SplitManifests(rel.Manifest)
	keys := slices.Sorted(maps.Keys(docs))
	slices.SortFunc(keys, func(a, b string) int { return manifestIndex(a) - manifestIndex(b) })
	var out []*unstructured.Unstructured
	for _, k := range keys {
		var m map[string]any
		if err := sigsyaml.Unmarshal([]byte(docs[k]), &m); err != nil {
			return nil, fmt.Errorf("release %s manifest: %w", rel.Name, err)
		}
		if m == nil {
			continue
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
	return out, nil
}

// ReleaseOptions are the data Release works from.
type ReleaseOptions struct {
	// Bundle, Records, Recorded, Sync and Record are as for Apply (ApplyOptions).
	Bundle   string
	Records  map[string]Entry
	Recorded Inventory
	Sync     bool
	Record   func(Inventory) error
	// Back is the release the revision being restored deployed (a rollback), else nil: the
	// release is returned to exactly that Helm revision.
	Back *Release
	// TakeOver is set when the revisions before applied the component's objects without
	// Helm: the release adopts them (see install).
	TakeOver bool
}

// Release installs, upgrades or rolls back a Helm component's release (see applyRelease),
// then treats the objects of the release's manifest as Apply treats its own: drift
// compared and corrected or reported, recorded (opts.Record, before Helm runs and after).
// The release's health is Wait's, like any component's; Result.Changed says Helm made a new
// release revision.
func (ap *Applier) Release(ctx context.Context, c *Component, opts ReleaseOptions) (Result, error) {
	res, err := ap.release(ctx, c, opts)
	if err != nil {
		return res, fmt.Errorf("component %s: %w", c.spec.Name, err)
	}
	ap.log.Info("release in place", "bundle", opts.Bundle, "component", c.spec.Name, "release", c.helm.release, "changed", res.Changed)
	return res, nil
}

func (ap *Applier) release(ctx context.Context, c *Component, opts ReleaseOptions) (Result, error) {
	cc, err := ap.clusterFor(c.sa)
	if err != nil {
		return Result{}, err
	}
	if opts.TakeOver {
		h := *c.helm // the cached build is shared: flag a copy
		h.takeOver = true
		c.helm = &h
	}
	// Written before Helm runs: after a crash, this revision may have installed the release,
	// and a rollback uninstalls it if the good revision has none.
	planned := opts.Recorded // an earlier attempt recorded more
	if planned.Release == nil {
		planned = Inventory{Component: c.spec.Name, Prune: true, ServiceAccount: c.sa,
			Release: &Release{Name: c.helm.release, Namespace: c.ns}}
		if planned.Release.Before, err = ap.adopting(cc, c); err != nil {
			return Result{}, err
		}
		planned.Release.Adopted = planned.Release.Before > 0
		if err := opts.Record(planned); err != nil {
			return Result{}, err
		}
	}
	failed := ""
	if opts.Sync {
		failed = planned.Release.Failed // a sync does not try a failed upgrade again
	}
	out, err := ap.applyRelease(ctx, c, cc, opts.Back, failed)
	if err != nil {
		if out.attempt != "" && planned.Release.Failed != out.attempt {
			planned.Release.Failed = out.attempt
			if rerr := opts.Record(planned); rerr != nil {
				return Result{}, errors.Join(err, rerr)
			}
		}
		return Result{}, err
	}
	us, err := manifestObjects(out.rel)
	if err != nil {
		return Result{}, err
	}
	c.objs = nil
	for _, u := range us {
		o, err := newObject(u, ap.opts.Keys.HashKey())
		if err != nil {
			return Result{}, err
		}
		c.objs = append(c.objs, o)
	}
	if err := cc.place(c.objs, c.ns, crdScopes(c.objs)); err != nil {
		return Result{}, err
	}
	// The manifest comes from Helm's storage (Secrets in the namespace): what drift
	// correction would send is confined like everything else.
	if err := confine(c, c.objs); err != nil {
		return Result{}, err
	}
	for _, o := range c.objs {
		if err := o.rehash(); err != nil {
			return Result{}, err
		}
	}
	res, err := cc.sync(ctx, syncSet{bundle: opts.Bundle, objs: c.objs, prev: opts.Records, drift: c.drift, helm: true})
	r := Result{Drift: res.drifted, Changed: out.changed}
	if out.changed {
		r.Applied = len(c.objs)
	} else {
		r.Applied, r.Unchanged = len(res.applied), len(c.objs)-len(res.applied)
	}
	inv := Inventory{Component: c.spec.Name, Prune: true, Objects: merge(c.objs, res.entries), ServiceAccount: c.sa,
		Release: &Release{Name: out.rel.Name, Namespace: out.rel.Namespace, Version: out.rel.Version,
			Adopted: planned.Release.Adopted, Before: planned.Release.Before}}
	if !reflect.DeepEqual(inv.Release, planned.Release) || changed(planned.Objects, inv.Objects) {
		if rerr := opts.Record(inv); rerr != nil {
			return r, errors.Join(err, rerr)
		}
	}
	if err != nil {
		return r, err
	}
	if out.rel.Info.Status != release.StatusDeployed {
		return r, fmt.Errorf("release %s is %s", out.rel.Name, out.rel.Info.Status)
	}
	return r, nil
}
