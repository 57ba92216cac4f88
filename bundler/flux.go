package bundler

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.yaml.in/yaml/v3"

	"github.com/ferrygitops/ferry/apply/render"
	"github.com/ferrygitops/ferry/bundles"
)

// Limits on a Flux directory read by --from-flux.
const (
	maxFluxFiles      = 2000
	maxFluxFileBytes  = 8 << 20
	maxFluxComponents = 200
)

// fluxObject is the part of every Flux object this reads.
type fluxObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name      string `yaml:"name"`
		Namespace string `yaml:"namespace"`
	} `yaml:"metadata"`
}

type sourceRef struct {
	Kind      string `yaml:"kind"`
	Name      string `yaml:"name"`
	Namespace string `yaml:"namespace"`
}

type fluxKustomization struct {
	fluxObject `yaml:",inline"`
	from       string // FILE:LINE it was read from, for errors
	Spec       struct {
		bundles.KustomizeSpec `yaml:",inline"`
		SourceRef             sourceRef `yaml:"sourceRef"`
	} `yaml:"spec"`
}

type fluxHelmRelease struct {
	fluxObject `yaml:",inline"`
	// Spec holds the fields with Ferry's meaning; chart and chartRef, whose shape differs
	// from Ferry's, are decoded into Source.
	Spec   bundles.HelmSpec `yaml:"-"`
	Source struct {
		Chart struct {
			Spec struct {
				Chart       string    `yaml:"chart"`
				Version     string    `yaml:"version"`
				SourceRef   sourceRef `yaml:"sourceRef"`
				ValuesFiles []string  `yaml:"valuesFiles"`
			} `yaml:"spec"`
		} `yaml:"chart"`
		ChartRef *sourceRef `yaml:"chartRef"`
	} `yaml:"spec"`
}

// decodeHelmRelease decodes a HelmRelease: the chart source with Flux's shape, the rest into
// Ferry's HelmSpec (Flux's names), which has a plain chart field.
func decodeHelmRelease(n *yaml.Node) (fluxHelmRelease, error) {
	var h fluxHelmRelease
	if err := n.Decode(&h); err != nil {
		return h, err
	}
	spec := mapValue(n, "spec")
	if spec == nil {
		return h, errors.New("no spec")
	}
	rest := *spec
	rest.Content = nil
	for i := 0; i+1 < len(spec.Content); i += 2 {
		if k := spec.Content[i].Value; k != "chart" && k != "chartRef" {
			rest.Content = append(rest.Content, spec.Content[i], spec.Content[i+1])
		}
	}
	err := rest.Decode(&h.Spec)
	return h, err
}

// fluxNamespace keeps Flux's meaning of a HelmRelease without targetNamespace: the release
// goes to the HelmRelease's own namespace, named after it. A bundle has no HelmRelease object,
// so that namespace becomes targetNamespace and the name is kept as releaseName (otherwise
// [targetNamespace-]name would rename it).
func fluxNamespace(spec *bundles.HelmSpec, h fluxHelmRelease) {
	// Where the HelmRelease lives: its service account and valuesFrom are there.
	spec.Namespace = h.Metadata.Namespace
	if spec.TargetNamespace != "" || h.Metadata.Namespace == "" {
		return
	}
	spec.TargetNamespace = h.Metadata.Namespace
	if spec.ReleaseName == "" {
		spec.ReleaseName = h.Metadata.Name
	}
}

func mapValue(n *yaml.Node, key string) *yaml.Node {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

type fluxGitRepository struct {
	fluxObject `yaml:",inline"`
	Spec       struct {
		URL string `yaml:"url"`
		Ref struct {
			Branch string `yaml:"branch"`
			Tag    string `yaml:"tag"`
			Commit string `yaml:"commit"`
		} `yaml:"ref"`
	} `yaml:"spec"`
}

type fluxOCIRepository struct {
	fluxObject `yaml:",inline"`
	Spec       struct {
		URL string `yaml:"url"`
		Ref struct {
			Tag    string `yaml:"tag"`
			SemVer string `yaml:"semver"`
			Digest string `yaml:"digest"`
		} `yaml:"ref"`
		LayerSelector struct {
			MediaType string `yaml:"mediaType"`
		} `yaml:"layerSelector"`
	} `yaml:"spec"`
}

type fluxHelmRepository struct {
	fluxObject `yaml:",inline"`
	Spec       struct {
		URL  string `yaml:"url"`
		Type string `yaml:"type"`
	} `yaml:"spec"`
}

// fluxSources maps a source's namespace/name to where its files are on disk.
type fluxTree struct {
	spec   *bundles.Spec
	bases  map[string]string // component name → directory its paths are relative to
	origin map[string]string // component name → the Flux object it came from, for errors
	// children are the Flux objects found inside a Kustomization's directory, by its name.
	children map[string][]string
	cleanup  func()
}

// loadFlux reads the Flux objects under dir and turns them into a bundle spec: every
// Kustomization and HelmRelease becomes a component with the same fields. Sources that are
// the repository being built (repoRoot, originURL) become local paths; other Git
// repositories are cloned with go-git and Helm repositories resolved, at build time.
// checkout is the repository being built: where it is, its origin and what HEAD is.
type checkout struct {
	root, originURL, branch, commit string
}

// holds reports whether a GitRepository source is this checkout: the same repository, and a
// ref that is empty or names the checked-out branch or commit. Any other ref (another branch,
// a tag, another commit) is cloned, so the bundle holds what the source pins, not HEAD.
func (c checkout) holds(g fluxGitRepository) bool {
	if !sameRepo(g.Spec.URL, c.originURL) {
		return false
	}
	r := g.Spec.Ref
	switch {
	case r.Commit != "":
		return r.Commit == c.commit
	case r.Tag != "":
		return false
	case r.Branch != "":
		return r.Branch == c.branch
	}
	return true
}

func loadFlux(ctx context.Context, remote bundles.Options, dir string, co checkout, name, version string, overrides map[string]string, log *slog.Logger) (*fluxTree, error) {
	repoRoot := co.root
	ov, err := parseOverrides(overrides)
	if err != nil {
		return nil, err
	}
	docs, err := fluxDirDocs(repoRoot, dir)
	if err != nil {
		return nil, err
	}
	objs := fluxObjects{oci: map[string]fluxOCIRepository{}, git: map[string]fluxGitRepository{}, helm: map[string]fluxHelmRepository{}, artifacts: map[string]generated{}}
	if err := objs.add(docs); err != nil {
		return nil, err
	}
	ociRepos, gitRepos, helmRepos, artifacts, ks, hrs := objs.oci, objs.git, objs.helm, objs.artifacts, objs.ks, objs.hrs
	t := &fluxTree{spec: &bundles.Spec{APIVersion: "ferry.dev/v1", Kind: "Bundle"}, bases: map[string]string{}, origin: map[string]string{}, children: map[string][]string{}}
	t.spec.Metadata.Name, t.spec.Spec.Version = name, version
	var temps []string
	t.cleanup = func() {
		for _, d := range temps {
			os.RemoveAll(d)
		}
	}
	clones := map[string]string{}
	// sourceDir is where a source's files are: this repository, a clone, a pulled OCI
	// artifact, or an ExternalArtifact composed by an ArtifactGenerator from those.
	var sourceDir func(ref sourceRef, ns string) (string, error)
	sourceDir = func(ref sourceRef, ns string) (string, error) {
		k := nsName(firstNonEmpty(ref.Namespace, ns), ref.Name)
		if ref.Kind == "ExternalArtifact" {
			ga, ok := artifacts[k]
			if !ok {
				return "", fmt.Errorf("sourceRef ExternalArtifact %s: no ArtifactGenerator under %s produces it; %s", k, dir, unbuiltSource(ref.Kind))
			}
			if d, ok := clones["ExternalArtifact/"+k]; ok {
				return d, nil
			}
			d, err := os.MkdirTemp("", "ferry-flux-artifact-*")
			if err != nil {
				return "", err
			}
			temps = append(temps, d)
			resolve := func(kind, name, ns string) (string, error) {
				if kind == "ExternalArtifact" {
					return "", errors.New("an ArtifactGenerator takes GitRepository, OCIRepository and Bucket sources")
				}
				return sourceDir(sourceRef{Kind: kind, Name: name, Namespace: ns}, ns)
			}
			if err := composeArtifact(ga.g, ga.a, resolve, d); err != nil {
				return "", err
			}
			log.Info("composed ExternalArtifact", "artifact", k, "generator", nsName(ga.g.Metadata.Namespace, ga.g.Metadata.Name))
			clones["ExternalArtifact/"+k] = d
			return d, nil
		}
		o, overridden := ov[k]
		if overridden && o.dir != "" && (ref.Kind == "GitRepository" || ref.Kind == "OCIRepository") {
			log.Info("source overridden by a local directory", "source", k, "dir", o.dir)
			return o.dir, nil
		}
		if ref.Kind == "OCIRepository" {
			r, ok := ociRepos[k]
			if !ok && overridden {
				r, ok = fluxOCIRepository{}, true
				r.Metadata.Name = ref.Name
			}
			if !ok {
				return "", fmt.Errorf("OCIRepository %s is not defined under %s: define it, or point it at a mirror or a vendored copy with --source-override %s=URL|PATH", k, dir, k)
			}
			if overridden {
				r.Spec.URL = o.url
			}
			if d, ok := clones[k]; ok {
				return d, nil
			}
			d, err := os.MkdirTemp("", "ferry-flux-oci-*")
			if err != nil {
				return "", err
			}
			temps = append(temps, d)
			if err := pullFluxArtifact(ctx, remote, r, d); err != nil {
				return "", fmt.Errorf("OCIRepository %s (%s): %w", k, r.Spec.URL, err)
			}
			log.Info("vendored OCI source", "source", k, "url", r.Spec.URL)
			clones[k] = d
			return d, nil
		}
		if ref.Kind != "GitRepository" {
			return "", fmt.Errorf("sourceRef %s %s: %s", firstNonEmpty(ref.Kind, "(no kind)"), k, unbuiltSource(ref.Kind))
		}
		g, ok := gitRepos[k]
		if !ok && overridden {
			g, ok = fluxGitRepository{}, true
		}
		if !ok {
			return "", fmt.Errorf("flux GitRepository %s is not defined under %s: a repository as published leaves gotk-sync.yaml out; "+
				"name this repository's own source with --source-override %s=. (or another path, or a Git URL)", k, dir, strings.TrimPrefix(k, "flux-system/"))
		}
		if overridden {
			g.Spec.URL = o.url // a mirror of the same repository, at the source's ref
		} else if co.holds(g) {
			return repoRoot, nil
		}
		if d, ok := clones[k]; ok {
			return d, nil
		}
		d, err := os.MkdirTemp("", "ferry-flux-git-*")
		if err != nil {
			return "", err
		}
		temps = append(temps, d)
		if err := cloneAt(ctx, g, d); err != nil {
			return "", fmt.Errorf("flux GitRepository %s (%s): %w", k, g.Spec.URL, err)
		}
		log.Info("vendored Git source", "source", k, "url", g.Spec.URL)
		clones[k] = d
		return d, nil
	}

	names := map[string]bool{}
	addName := func(n string) error {
		if names[n] {
			return fmt.Errorf("two Flux objects named %q: components need distinct names", n)
		}
		names[n] = true
		return nil
	}
	absDir, _ := filepath.Abs(dir)
	// addKustomization adds a Kustomization as a component (extraDeps: those of the
	// Kustomization it was found in); it reports false for the one that syncs dir itself.
	addKustomization := func(k fluxKustomization, extraDeps []bundles.DependencyRef) (bool, error) {
		base, err := sourceDir(k.Spec.SourceRef, k.Metadata.Namespace)
		if err != nil {
			return false, fmt.Errorf("flux Kustomization %s (%s): %w", nsName(k.Metadata.Namespace, k.Metadata.Name), k.from, err)
		}
		spec := k.Spec.KustomizeSpec
		spec.Extra = nil // Flux-only fields (interval, suspend, sourceRef…) mean nothing in a bundle
		// Where the Kustomization lives: its service account and references are there.
		spec.Namespace = k.Metadata.Namespace
		if spec.Path == "" {
			spec.Path = "."
		}
		// The Kustomization that syncs the cluster directory itself would apply the Flux
		// objects this bundle replaces.
		if p, err := filepath.Abs(filepath.Join(base, spec.Path)); err == nil && (p == absDir || strings.HasPrefix(absDir, p+string(filepath.Separator))) {
			log.Info("skipped the Kustomization that syncs the Flux directory itself", "kustomization", k.Metadata.Name)
			return false, nil
		}
		spec.Path = "./" + strings.TrimPrefix(filepath.ToSlash(filepath.Clean(spec.Path)), "./")
		for _, d := range extraDeps {
			if !slices.Contains(spec.DependsOn, d) {
				spec.DependsOn = append(spec.DependsOn, d)
			}
		}
		if err := addName(k.Metadata.Name); err != nil {
			return false, err
		}
		t.spec.Spec.Components = append(t.spec.Spec.Components, bundles.ComponentSpec{Name: k.Metadata.Name, Kustomize: &spec})
		t.bases[k.Metadata.Name] = base
		t.origin[k.Metadata.Name] = fmt.Sprintf("flux Kustomization %s (%s)", nsName(k.Metadata.Namespace, k.Metadata.Name), k.from)
		return true, nil
	}
	for _, k := range ks {
		if _, err := addKustomization(k, nil); err != nil {
			t.cleanup()
			return nil, err
		}
	}
	// Flux objects often live inside a Kustomization's path: the Flux guide's HelmReleases
	// in infrastructure/controllers, or Kustomizations that fan out further. Each kustomize
	// component is rendered once, its Flux objects are taken out of it with delete patches
	// and converted like top-level ones (after it, inheriting its dependencies), and what
	// depends on it waits for them too. Components appended here are scanned in turn.
	type nestedRelease struct {
		h    fluxHelmRelease
		deps []bundles.DependencyRef // the parent's own dependencies
	}
	var nested []nestedRelease
	for i := 0; i < len(t.spec.Spec.Components); i++ {
		if i >= maxFluxComponents {
			t.cleanup()
			return nil, fmt.Errorf("%s: more than %d components", dir, maxFluxComponents)
		}
		c := t.spec.Spec.Components[i]
		if c.Kustomize == nil {
			continue
		}
		found, patches, err := fluxObjectsIn(t.bases[c.Name], c.Kustomize.Path)
		if err != nil {
			t.cleanup()
			return nil, fmt.Errorf("flux Kustomization %s: %w", c.Name, err)
		}
		inner := fluxObjects{oci: ociRepos, git: gitRepos, helm: helmRepos, artifacts: artifacts}
		if err := inner.add(found); err != nil {
			t.cleanup()
			return nil, fmt.Errorf("flux Kustomization %s: %w", c.Name, err)
		}
		// The nested objects come after their parent, as in a cluster, where the parent
		// applies them (and what they need: a tenant's namespace, service account and
		// RoleBinding, a release's namespace): each depends on the parent and on what the
		// parent depends on, with namespaces made explicit, since a nested object may live
		// in another namespace, where an empty one would mean something else. What depends
		// on the parent is made to wait for them too (expandNested).
		own := append(qualified(c.Kustomize.DependsOn, c.Kustomize.Namespace), bundles.DependencyRef{Name: c.Name, Namespace: c.Kustomize.Namespace})
		for _, h := range inner.hrs {
			nested = append(nested, nestedRelease{h: h, deps: own})
			t.children[c.Name] = append(t.children[c.Name], h.Metadata.Name)
		}
		c.Kustomize.Patches = append(c.Kustomize.Patches, patches...)
		for _, k := range inner.ks {
			added, err := addKustomization(k, own)
			if err != nil {
				t.cleanup()
				return nil, err
			}
			if added {
				t.children[c.Name] = append(t.children[c.Name], k.Metadata.Name)
			}
		}
		if len(patches) > 0 {
			log.Info("took Flux objects out of a Kustomization", "kustomization", c.Name, "objects", len(patches),
				"helmReleases", len(inner.hrs), "kustomizations", len(inner.ks))
		}
	}
	addRelease := func(h fluxHelmRelease, extraDeps []bundles.DependencyRef) error {
		spec := h.Spec
		cs := h.Source.Chart.Spec
		if cr := h.Source.ChartRef; cr != nil {
			// chartRef to an OCIRepository holding a Helm chart: the repository URL ends in
			// the chart's name; its ref gives the version.
			if cr.Kind != "OCIRepository" {
				return fmt.Errorf("flux HelmRelease %s: chartRef to a %s is not built (only OCIRepository)", h.Metadata.Name, cr.Kind)
			}
			k := nsName(firstNonEmpty(cr.Namespace, h.Metadata.Namespace), cr.Name)
			r, ok := ociRepos[k]
			if !ok {
				return fmt.Errorf("flux HelmRelease %s: OCIRepository %s is not defined under %s", h.Metadata.Name, k, dir)
			}
			i := strings.LastIndex(r.Spec.URL, "/")
			if i < 0 || !strings.HasPrefix(r.Spec.URL, "oci://") {
				return fmt.Errorf("flux HelmRelease %s: OCIRepository %s url %q is not oci://host/path/chart", h.Metadata.Name, k, r.Spec.URL)
			}
			if r.Spec.Ref.Digest != "" {
				return fmt.Errorf("flux HelmRelease %s: OCIRepository %s ref.digest is not built yet; use tag or semver", h.Metadata.Name, k)
			}
			spec.Repository, spec.Chart = r.Spec.URL[:i], r.Spec.URL[i+1:]
			fluxNamespace(&spec, h)
			spec.Version = firstNonEmpty(r.Spec.Ref.SemVer, r.Spec.Ref.Tag)
			if err := addName(h.Metadata.Name); err != nil {
				return err
			}
			t.spec.Spec.Components = append(t.spec.Spec.Components, bundles.ComponentSpec{Name: h.Metadata.Name, Helm: &spec})
			t.bases[h.Metadata.Name] = repoRoot
			t.origin[h.Metadata.Name] = "flux HelmRelease " + nsName(h.Metadata.Namespace, h.Metadata.Name)
			return nil
		}
		spec.Chart, spec.Version, spec.ValuesFiles = cs.Chart, cs.Version, cs.ValuesFiles
		fluxNamespace(&spec, h)
		for _, d := range extraDeps {
			if !slices.Contains(spec.DependsOn, d) {
				spec.DependsOn = append(spec.DependsOn, d)
			}
		}
		base := repoRoot
		switch cs.SourceRef.Kind {
		case "HelmRepository":
			k := nsName(firstNonEmpty(cs.SourceRef.Namespace, h.Metadata.Namespace), cs.SourceRef.Name)
			r, ok := helmRepos[k]
			o, overridden := ov[k]
			if overridden && o.url == "" {
				return fmt.Errorf("flux HelmRelease %s: --source-override %s: a HelmRepository takes a URL (http(s):// or oci://), not a directory", h.Metadata.Name, k)
			}
			if !ok && overridden {
				ok = true
			}
			if !ok {
				return fmt.Errorf("flux HelmRelease %s: HelmRepository %s is not defined under %s: define it, or point it at a chart mirror with --source-override %s=URL", h.Metadata.Name, k, dir, k)
			}
			if overridden {
				r.Spec.URL = o.url
			}
			// An OCI HelmRepository (type: oci) holds an oci:// URL; both kinds are vendored.
			spec.Repository = r.Spec.URL
			// valuesFiles of a repository chart name files inside the chart: not vendored here.
			if len(spec.ValuesFiles) > 0 {
				return fmt.Errorf("flux HelmRelease %s: valuesFiles from a repository chart are not built yet", h.Metadata.Name)
			}
		case "GitRepository":
			b, err := sourceDir(cs.SourceRef, h.Metadata.Namespace)
			if err != nil {
				return fmt.Errorf("flux HelmRelease %s: %w", h.Metadata.Name, err)
			}
			base = b
			spec.Chart = "./" + strings.TrimPrefix(filepath.ToSlash(filepath.Clean(spec.Chart)), "./")
		case "Bucket":
			return fmt.Errorf("flux HelmRelease %s: chart sourceRef Bucket %s: a Bucket source is not built; copy the chart into the repository and point chart.spec.sourceRef at its GitRepository (or --source-override the Bucket's name to a directory holding the chart and use a GitRepository)",
				nsName(h.Metadata.Namespace, h.Metadata.Name), nsName(firstNonEmpty(cs.SourceRef.Namespace, h.Metadata.Namespace), cs.SourceRef.Name))
		default:
			return fmt.Errorf("flux HelmRelease %s: chart sourceRef %s %q: HelmReleases take charts from a HelmRepository, a GitRepository or an OCIRepository (chartRef)",
				nsName(h.Metadata.Namespace, h.Metadata.Name), firstNonEmpty(cs.SourceRef.Kind, "(no kind)"), cs.SourceRef.Name)
		}
		if err := addName(h.Metadata.Name); err != nil {
			return err
		}
		t.spec.Spec.Components = append(t.spec.Spec.Components, bundles.ComponentSpec{Name: h.Metadata.Name, Helm: &spec})
		t.bases[h.Metadata.Name] = base
		t.origin[h.Metadata.Name] = "flux HelmRelease " + nsName(h.Metadata.Namespace, h.Metadata.Name)
		return nil
	}
	for _, h := range hrs {
		if err := addRelease(h, nil); err != nil {
			t.cleanup()
			return nil, err
		}
	}
	for _, n := range nested {
		if err := addRelease(n.h, n.deps); err != nil {
			t.cleanup()
			return nil, err
		}
	}
	if len(t.spec.Spec.Components) == 0 {
		t.cleanup()
		return nil, fmt.Errorf("%s: no Flux Kustomization or HelmRelease found", dir)
	}
	t.expandNested()
	if err := t.checkDependencies(); err != nil {
		t.cleanup()
		return nil, err
	}
	// Components by name, so the bundle is the same whatever the order of files in the
	// directory; dependsOn, not position, orders their application.
	sort.SliceStable(t.spec.Spec.Components, func(i, j int) bool {
		return t.spec.Spec.Components[i].Name < t.spec.Spec.Components[j].Name
	})
	return t, nil
}

// expandNested makes what depends on a Kustomization also depend on the Flux objects nested
// in it (and theirs): in a cluster, a Kustomization that applies a HelmRelease or another
// Kustomization is ready once they are, and its dependents wait for that.
func (t *fluxTree) expandNested() {
	home := map[string]string{}
	for _, c := range t.spec.Spec.Components {
		home[c.Name] = c.HomeNamespace()
	}
	var subtree func(name string, into map[string]bool)
	subtree = func(name string, into map[string]bool) {
		for _, n := range t.children[name] {
			if !into[n] {
				into[n] = true
				subtree(n, into)
			}
		}
	}
	for _, c := range t.spec.Spec.Components {
		var deps *[]bundles.DependencyRef
		switch {
		case c.Kustomize != nil:
			deps = &c.Kustomize.DependsOn
		case c.Helm != nil:
			deps = &c.Helm.DependsOn
		default:
			continue
		}
		for _, d := range slices.Clone(*deps) {
			below := map[string]bool{}
			subtree(d.Name, below)
			if below[c.Name] {
				continue // c is nested in d: it already comes after it
			}
			names := slices.Sorted(maps.Keys(below))
			for _, n := range names {
				if !slices.ContainsFunc(*deps, func(x bundles.DependencyRef) bool { return x.Name == n }) {
					*deps = append(*deps, bundles.DependencyRef{Name: n, Namespace: home[n]})
				}
			}
		}
	}
}

// checkDependencies checks each component's dependsOn against the namespaces the Flux
// objects live in, naming the Flux object and file, before the bundle spec (which would name
// only its own generated lines) is validated.
func (t *fluxTree) checkDependencies() error {
	home := map[string]string{}
	for _, c := range t.spec.Spec.Components {
		home[c.Name] = c.HomeNamespace()
	}
	var errs []error
	for _, c := range t.spec.Spec.Components {
		for j, d := range c.DependsOn() {
			target, ok := home[d.Name]
			if !ok {
				errs = append(errs, fmt.Errorf("%s: dependsOn[%d]: %q is not a Kustomization or HelmRelease under this directory", t.originOf(c.Name), j, d.Name))
				continue
			}
			if err := bundles.CheckDependency(c.HomeNamespace(), d, target); err != nil {
				errs = append(errs, fmt.Errorf("%s: dependsOn[%d].namespace %w", t.originOf(c.Name), j, err))
			}
		}
	}
	return errors.Join(errs...)
}

func (t *fluxTree) originOf(name string) string {
	if o, ok := t.origin[name]; ok {
		return o
	}
	return "flux object " + name
}

// fluxObjects are the Flux objects found so far, by kind.
type fluxObjects struct {
	oci  map[string]fluxOCIRepository
	git  map[string]fluxGitRepository
	helm map[string]fluxHelmRepository
	// artifacts are the ExternalArtifacts ArtifactGenerators produce, by namespace/name.
	artifacts map[string]generated
	ks        []fluxKustomization
	hrs       []fluxHelmRelease
}

// generated is one ExternalArtifact and the ArtifactGenerator that makes it.
type generated struct {
	g fluxArtifactGenerator
	a fluxOutputArtifact
}

// add sorts documents into o by kind; objects of other kinds are ignored.
func (o2 *fluxObjects) add(docs []fluxDoc) error {
	for _, d := range docs {
		var o fluxObject
		if err := d.node.Decode(&o); err != nil {
			continue
		}
		key := func() string { return nsName(o.Metadata.Namespace, o.Metadata.Name) }
		group := strings.SplitN(o.APIVersion, "/", 2)[0]
		switch {
		case group == "source.toolkit.fluxcd.io" && o.Kind == "GitRepository":
			var g fluxGitRepository
			if err := d.node.Decode(&g); err != nil {
				return fmt.Errorf("%s:%d: GitRepository: %w", d.file, d.node.Line, err)
			}
			o2.git[key()] = g
		case group == "source.toolkit.fluxcd.io" && o.Kind == "OCIRepository":
			var r fluxOCIRepository
			if err := d.node.Decode(&r); err != nil {
				return fmt.Errorf("%s:%d: OCIRepository: %w", d.file, d.node.Line, err)
			}
			o2.oci[key()] = r
		case group == "source.toolkit.fluxcd.io" && o.Kind == "HelmRepository":
			var h fluxHelmRepository
			if err := d.node.Decode(&h); err != nil {
				return fmt.Errorf("%s:%d: HelmRepository: %w", d.file, d.node.Line, err)
			}
			o2.helm[key()] = h
		case group == artifactGroup && o.Kind == "ArtifactGenerator":
			var g fluxArtifactGenerator
			if err := d.node.Decode(&g); err != nil {
				return fmt.Errorf("%s:%d: ArtifactGenerator: %w", d.file, d.node.Line, err)
			}
			g.from = fmt.Sprintf("%s:%d", d.file, d.node.Line)
			for _, a := range g.Spec.Artifacts {
				k := nsName(o.Metadata.Namespace, a.Name)
				if prev, dup := o2.artifacts[k]; dup {
					return fmt.Errorf("%s: ArtifactGenerator %s: ExternalArtifact %s is also produced by %s", g.from, o.Metadata.Name, k, prev.g.from)
				}
				o2.artifacts[k] = generated{g: g, a: a}
			}
		case group == "kustomize.toolkit.fluxcd.io" && o.Kind == "Kustomization":
			var k fluxKustomization
			if err := d.node.Decode(&k); err != nil {
				return fmt.Errorf("%s:%d: Kustomization: %w", d.file, d.node.Line, err)
			}
			k.from = fmt.Sprintf("%s:%d", d.file, d.node.Line)
			o2.ks = append(o2.ks, k)
		case group == "helm.toolkit.fluxcd.io" && o.Kind == "HelmRelease":
			h, err := decodeHelmRelease(d.node)
			if err != nil {
				return fmt.Errorf("%s:%d: HelmRelease: %w", d.file, d.node.Line, err)
			}
			o2.hrs = append(o2.hrs, h)
		}
	}

	return nil
}

// fluxGroups are the API groups whose objects a Ferry node does not apply as they are.
var fluxGroups = []string{"source.toolkit.fluxcd.io", "kustomize.toolkit.fluxcd.io", "helm.toolkit.fluxcd.io", artifactGroup}

// fluxObjectsIn renders the kustomization at base/path and returns the Flux objects in it, and
// a delete patch for each, which keeps them out of the component.
func fluxObjectsIn(base, path string) ([]fluxDoc, []bundles.Patch, error) {
	root, err := bundles.ResolveInside(base, path)
	if err != nil {
		return nil, nil, err
	}
	var buf bytes.Buffer
	inLayer, err := packKustomizeDir(base, root, &buf)
	if err != nil {
		return nil, nil, err
	}
	files, err := bundles.ReadLayer(&buf)
	if err != nil {
		return nil, nil, err
	}
	rm, err := render.Kustomize(files, bundles.KustomizeSpec{Path: inLayer})
	if err != nil {
		return nil, nil, err
	}
	var docs []fluxDoc
	var patches []bundles.Patch
	for _, res := range rm.Resources() {
		group := strings.SplitN(res.GetApiVersion(), "/", 2)[0]
		if !slices.Contains(fluxGroups, group) {
			continue
		}
		b, err := res.AsYAML()
		if err != nil {
			return nil, nil, err
		}
		var node yaml.Node
		if err := yaml.Unmarshal(b, &node); err != nil || len(node.Content) == 0 {
			return nil, nil, fmt.Errorf("%s: %v", res.CurId(), err)
		}
		docs = append(docs, fluxDoc{file: filepath.Join(path, "(rendered)"), node: node.Content[0]})
		meta := map[string]string{"name": res.GetName()}
		if ns := res.GetNamespace(); ns != "" {
			meta["namespace"] = ns
		}
		// Marshalled, not formatted: names from a third-party repository are data.
		patch, err := yaml.Marshal(map[string]any{"$patch": "delete", "apiVersion": res.GetApiVersion(), "kind": res.GetKind(), "metadata": meta})
		if err != nil {
			return nil, nil, err
		}
		patches = append(patches, bundles.Patch{Patch: string(patch)})
	}
	return docs, patches, nil
}

// fluxDirDocs reads the Flux objects of the cluster directory dir as Flux would apply it: when
// dir has a kustomization, its kustomize build (patch files and plain manifests beside it are
// not objects of their own; its patches are applied); otherwise every YAML document under it.
func fluxDirDocs(repoRoot, dir string) ([]fluxDoc, error) {
	k := kustomizationIn(dir)
	if k == "" {
		return readFluxDocs(dir)
	}
	rel, err := filepath.Rel(repoRoot, dir)
	if err != nil {
		return nil, err
	}
	docs, _, err := fluxObjectsIn(repoRoot, filepath.ToSlash(rel))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(rel, k), err)
	}
	return docs, nil
}

type fluxDoc struct {
	file string
	node *yaml.Node
}

// readFluxDocs reads every YAML document under dir (bounded), skipping files that are not
// YAML objects.
func readFluxDocs(dir string) ([]fluxDoc, error) {
	var docs []fluxDoc
	n := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !(strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			return nil
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return fmt.Errorf("%s: %w: symlinks are not read", p, bundles.ErrUnsafePath)
		}
		if n++; n > maxFluxFiles {
			return fmt.Errorf("%s: more than %d YAML files", dir, maxFluxFiles)
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if fi.Size() > maxFluxFileBytes {
			return fmt.Errorf("%s: over the %d-byte limit", p, maxFluxFileBytes)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var node yaml.Node
			err := dec.Decode(&node)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			if len(node.Content) > 0 {
				docs = append(docs, fluxDoc{file: p, node: node.Content[0]})
			}
		}
		return nil
	})
	return docs, err
}

// cloneAt clones a Flux GitRepository at its ref into dir.
func cloneAt(ctx context.Context, g fluxGitRepository, dir string) error {
	opts := &git.CloneOptions{URL: g.Spec.URL}
	switch r := g.Spec.Ref; {
	case r.Tag != "":
		opts.ReferenceName, opts.SingleBranch = plumbing.NewTagReferenceName(r.Tag), true
	case r.Branch != "":
		opts.ReferenceName, opts.SingleBranch = plumbing.NewBranchReferenceName(r.Branch), true
	}
	repo, err := git.PlainCloneContext(ctx, dir, false, opts)
	if err != nil {
		return err
	}
	if c := g.Spec.Ref.Commit; c != "" {
		wt, err := repo.Worktree()
		if err != nil {
			return err
		}
		return wt.Checkout(&git.CheckoutOptions{Hash: plumbing.NewHash(c)})
	}
	return nil
}

func nsName(ns, name string) string { return firstNonEmpty(ns, "flux-system") + "/" + name }

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// sameRepo compares Git URLs loosely: scheme, credentials, a trailing .git or slash do not
// matter (ssh://git@host/org/repo and https://host/org/repo.git are the same repository).
func sameRepo(a, b string) bool {
	norm := func(u string) string {
		u = redactURL(strings.TrimSpace(u))
		scheme := strings.Contains(u, "://")
		if i := strings.Index(u, "://"); i >= 0 {
			u = u[i+3:]
		}
		if i := strings.Index(u, "@"); i >= 0 && !strings.Contains(u[:i], "/") {
			u = u[i+1:]
		}
		if !scheme {
			u = strings.Replace(u, ":", "/", 1) // scp-like host:path
		}
		return strings.TrimSuffix(strings.TrimSuffix(strings.ToLower(u), "/"), ".git")
	}
	return a != "" && b != "" && norm(a) == norm(b)
}

// fluxContentType is the layer media type of `flux push artifact`.
const fluxContentType = "application/vnd.cncf.flux.content.v1.tar+gzip"

// pullFluxArtifact fetches the artifact an OCIRepository points at (by digest, semver range
// or tag), takes the selected layer (layerSelector.mediaType, else Flux's content type, else
// the first), and extracts it into dst with the same checks as a bundle layer.
func pullFluxArtifact(ctx context.Context, remote bundles.Options, r fluxOCIRepository, dst string) error {
	addr, err := bundles.ParseAddress(r.Spec.URL)
	if err != nil {
		return err
	}
	repo, err := remote.Repository(addr)
	if err != nil {
		return err
	}
	ref := firstNonEmpty(r.Spec.Ref.Digest, r.Spec.Ref.Tag, "latest")
	if rng := r.Spec.Ref.SemVer; rng != "" && r.Spec.Ref.Digest == "" {
		if ref, err = bundles.HighestTag(ctx, repo, rng); err != nil {
			return err
		}
	}
	desc, err := repo.Resolve(ctx, ref)
	if err != nil {
		return fmt.Errorf("resolve %s: %w", ref, err)
	}
	raw, err := bundles.FetchLimited(ctx, repo, desc, bundles.MaxManifestBytes)
	if err != nil {
		return err
	}
	var man ocispec.Manifest
	if err := json.Unmarshal(raw, &man); err != nil {
		return err
	}
	want := firstNonEmpty(r.Spec.LayerSelector.MediaType, fluxContentType)
	var layer *ocispec.Descriptor
	for i, l := range man.Layers {
		if l.MediaType == want {
			layer = &man.Layers[i]
			break
		}
	}
	if layer == nil && r.Spec.LayerSelector.MediaType == "" && len(man.Layers) > 0 {
		layer = &man.Layers[0]
	}
	if layer == nil {
		return fmt.Errorf("%s: no layer of type %s", ref, want)
	}
	b, err := bundles.FetchLimited(ctx, repo, *layer, bundles.MaxLayerBytes)
	if err != nil {
		return err
	}
	files, err := bundles.ReadLayer(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("%s: %w", ref, err)
	}
	return files.WriteTo(dst)
}

// sourceOverride is where --source-override points one Flux source: a directory or a URL.
type sourceOverride struct{ dir, url string }

// parseOverrides reads "[namespace/]name" → "PATH|URL". A value with a scheme (https://,
// http://, ssh://, oci://, file://) or scp-like Git form is a URL; anything else must be an
// existing directory.
func parseOverrides(in map[string]string) (map[string]sourceOverride, error) {
	out := map[string]sourceOverride{}
	for k, v := range in {
		ns, name, ok := strings.Cut(k, "/")
		if !ok {
			ns, name = "flux-system", k
		}
		if name == "" || ns == "" || strings.Contains(name, "/") || v == "" {
			return nil, fmt.Errorf("--source-override %s=%s: want [NAMESPACE/]NAME=PATH|URL", k, v)
		}
		key := ns + "/" + name
		if strings.Contains(v, "://") || strings.HasPrefix(v, "git@") {
			out[key] = sourceOverride{url: v}
			continue
		}
		abs, err := filepath.Abs(v)
		if err != nil {
			return nil, err
		}
		if fi, err := os.Stat(abs); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("--source-override %s=%s: not a directory (a local copy of the source) nor a URL", k, v)
		}
		out[key] = sourceOverride{dir: abs}
	}
	return out, nil
}

// qualified returns deps with each empty namespace set to ns, the namespace of the object
// that declared them (Flux's default).
func qualified(deps []bundles.DependencyRef, ns string) []bundles.DependencyRef {
	out := make([]bundles.DependencyRef, len(deps))
	for i, d := range deps {
		d.Namespace = firstNonEmpty(d.Namespace, ns)
		out[i] = d
	}
	return out
}

// unbuiltSource says what becomes of a Flux source kind that a Kustomization cannot take
// from a bundle, in one line with what to do.
func unbuiltSource(kind string) string {
	switch kind {
	case "Bucket":
		return "a Bucket source is not built: copy the bucket's content into the repository (or a directory) and name it with --source-override NAME=PATH"
	case "ExternalArtifact":
		return "an ExternalArtifact is built only when an ArtifactGenerator in the Flux directory composes it (from GitRepository or OCIRepository sources); one produced in a cluster by another controller cannot be built offline: vendor its content and name it with --source-override NAME=PATH"
	case "HelmChart", "HelmRepository":
		return "a Kustomization cannot take a " + kind + " as its source (Flux refuses it too); use a HelmRelease"
	case "":
		return "the Kustomization names no source kind (is this file a patch? patch files belong in a kustomization.yaml's patches, which the Flux directory's kustomization applies)"
	}
	return "not a Flux source kind Ferry builds (GitRepository and OCIRepository are)"
}
