package bundles

import (
	"errors"
	"fmt"
	"github.com/ferrygitops/ferry/internal/strictyaml"
	"github.com/opencontainers/go-digest"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// SpecFile is the name of the component spec at the root of a bundle's source tree.
const SpecFile = "ferry.yaml"

// MaxSpecBytes bounds ferry.yaml.
const MaxSpecBytes = 1 << 20

// Spec is a parsed ferry.yaml (SPEC §6).
type Spec struct {
	APIVersion string       `yaml:"apiVersion"`
	Kind       string       `yaml:"kind"`
	Metadata   SpecMetadata `yaml:"metadata"`
	Spec       BundleSpec   `yaml:"spec"`
}

// SpecMetadata names the bundle.
type SpecMetadata struct {
	Name string `yaml:"name"`
}

// BundleSpec lists a bundle's components.
type BundleSpec struct {
	Version    string          `yaml:"version"`
	Components []ComponentSpec `yaml:"components"`
	Images     *ImagesSpec     `yaml:"images"`
}

// ImagesSpec says which container images the bundle carries, so a node that cannot pull
// from the internet has them.
type ImagesSpec struct {
	// Carry every image the rendered components run (containers, init and ephemeral
	// containers), resolved to a digest at build time.
	Carry bool `yaml:"carry"`
	// Include lists more images to carry (for example ones only a Helm hook or an operator
	// starts).
	Include []string `yaml:"include"`
}

// ComponentSpec is one component: exactly one of Kustomize or Helm.
type ComponentSpec struct {
	Name      string         `yaml:"name"`
	Kustomize *KustomizeSpec `yaml:"kustomize"`
	Helm      *HelmSpec      `yaml:"helm"`
}

// KustomizeSpec has the fields of Flux's Kustomization that mean something inside a bundle,
// with Flux's names and meanings.
type KustomizeSpec struct {
	Path            string `yaml:"path" json:"path"`
	Prune           bool   `yaml:"prune" json:"prune"`
	Wait            bool   `yaml:"wait" json:"wait"`
	Timeout         string `yaml:"timeout" json:"timeout,omitempty"`
	Force           bool   `yaml:"force" json:"force"`
	TargetNamespace string `yaml:"targetNamespace" json:"targetNamespace,omitempty"`
	// Namespace is the namespace the component itself lives in, as a Flux Kustomization's
	// metadata.namespace: its serviceAccountName is an account there, and substituteFrom and
	// healthChecks without a namespace are read there. Default: targetNamespace, else the
	// node's namespace. --from-flux sets it from the Kustomization.
	Namespace string `yaml:"namespace" json:"namespace,omitempty"`
	// ServiceAccountName makes every request for the component impersonate that service
	// account of the component's namespace (Flux's multi-tenancy), so RBAC decides.
	ServiceAccountName string          `yaml:"serviceAccountName" json:"serviceAccountName,omitempty"`
	DependsOn          []DependencyRef `yaml:"dependsOn" json:"dependsOn,omitempty"`
	HealthChecks       []ObjectRef     `yaml:"healthChecks" json:"healthChecks,omitempty"`
	PostBuild          *PostBuild      `yaml:"postBuild" json:"postBuild,omitempty"`
	Patches            []Patch         `yaml:"patches" json:"patches,omitempty"`
	Decryption         *Decryption     `yaml:"decryption" json:"decryption,omitempty"`
	CommonMetadata     *CommonMetadata `yaml:"commonMetadata" json:"commonMetadata,omitempty"`
	// DriftDetection is HelmRelease's field, on a kustomize component: what the node does
	// when a live object no longer matches what was applied (default enabled: correct it,
	// as kustomize-controller does at every interval).
	DriftDetection *DriftDetection      `yaml:"driftDetection" json:"driftDetection,omitempty"`
	Extra          map[string]yaml.Node `yaml:",inline" json:"-"` // refused by Validate
}

// DependencyRef names a component that must be healthy first (Flux: dependsOn).
type DependencyRef struct {
	Name string `yaml:"name" json:"name"`
	// Namespace is where the component depended on lives (its namespace field), as in
	// Flux: empty means the depending component's own namespace.
	Namespace string `yaml:"namespace" json:"namespace,omitempty"`
}

// ObjectRef names an object whose health gates the component (Flux: healthChecks).
type ObjectRef struct {
	APIVersion string `yaml:"apiVersion" json:"apiVersion,omitempty"`
	Kind       string `yaml:"kind" json:"kind"`
	Name       string `yaml:"name" json:"name"`
	Namespace  string `yaml:"namespace" json:"namespace,omitempty"`
}

// PostBuild holds variable substitution (Flux: postBuild).
type PostBuild struct {
	Substitute     map[string]string `yaml:"substitute" json:"substitute,omitempty"`
	SubstituteFrom []SubstituteRef   `yaml:"substituteFrom" json:"substituteFrom,omitempty"`
}

// SubstituteRef names a ConfigMap or Secret in the cluster holding variables.
type SubstituteRef struct {
	Kind string `yaml:"kind" json:"kind"`
	Name string `yaml:"name" json:"name"`
	// Namespace is a Ferry addition: where the object is, default the component's namespace.
	// A node that refuses cross-namespace references refuses any other.
	Namespace string `yaml:"namespace" json:"namespace,omitempty"`
	Optional  bool   `yaml:"optional" json:"optional,omitempty"`
}

// Patch is a strategic merge or JSON6902 patch with an optional target (Flux: patches).
type Patch struct {
	Patch  string    `yaml:"patch" json:"patch"`
	Target *Selector `yaml:"target" json:"target,omitempty"`
}

// Selector picks the objects a patch applies to.
type Selector struct {
	Group              string `yaml:"group" json:"group,omitempty"`
	Version            string `yaml:"version" json:"version,omitempty"`
	Kind               string `yaml:"kind" json:"kind,omitempty"`
	Name               string `yaml:"name" json:"name,omitempty"`
	Namespace          string `yaml:"namespace" json:"namespace,omitempty"`
	LabelSelector      string `yaml:"labelSelector" json:"labelSelector,omitempty"`
	AnnotationSelector string `yaml:"annotationSelector" json:"annotationSelector,omitempty"`
}

// Decryption says encrypted files in the component are decrypted on the node (Flux:
// decryption). Keys never travel in the bundle: the node's age key file is in its config.
type Decryption struct {
	Provider string `yaml:"provider" json:"provider"`
}

// CommonMetadata labels and annotations added to every object (Flux: commonMetadata).
type CommonMetadata struct {
	Labels      map[string]string `yaml:"labels" json:"labels,omitempty"`
	Annotations map[string]string `yaml:"annotations" json:"annotations,omitempty"`
}

// ReadFileLimited reads a file of outside input, refusing one over limit bytes with an error
// naming it. It reads at most limit+1 bytes, so a file that grows while it is read (or a
// device) cannot make it read more. Ferry's config, spec, policy and key files go through it.
func ReadFileLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: over the %d-byte limit", path, limit)
	}
	return b, nil
}

// LoadSpec reads and validates dir/ferry.yaml. Every problem is reported, each as a
// *FieldError naming the file, the line and the field.
func LoadSpec(dir string) (*Spec, error) {
	s, _, err := LoadSpecDigest(dir)
	return s, err
}

// LoadSpecDigest is LoadSpec, and the digest of the file it read.
func LoadSpecDigest(dir string) (*Spec, digest.Digest, error) {
	file := filepath.Join(dir, SpecFile)
	b, err := ReadFileLimited(file, MaxSpecBytes)
	if err != nil {
		return nil, "", err
	}
	s, root, err := ParseSpec(file, b)
	if err != nil {
		return nil, "", err
	}
	if err := s.checkPaths(file, root, dir); err != nil {
		return nil, "", err
	}
	return s, digest.FromBytes(b), nil
}

// ParseSpec decodes ferry.yaml strictly and validates what can be checked without the tree.
// file is used in error messages only.
func ParseSpec(file string, b []byte) (*Spec, *yaml.Node, error) {
	var s Spec
	root, err := strictyaml.Decode(file, b, &s)
	if root == nil {
		return nil, nil, err
	}
	if err != nil {
		// Unknown fields and wrong types, each at its line; what decoded is checked too.
		return nil, nil, errors.Join(err, s.validate(file, root))
	}
	if err := s.validate(file, root); err != nil {
		return nil, nil, err
	}
	return &s, root, nil
}

func (s *Spec) validate(file string, root *yaml.Node) error {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, &FieldError{File: file, Line: lineOf(root, field), Field: field, Msg: fmt.Sprintf(format, a...)})
	}
	if s.APIVersion != "ferry.dev/v1" {
		bad("apiVersion", "is %q, want ferry.dev/v1", s.APIVersion)
	}
	if s.Kind != "Bundle" {
		bad("kind", "is %q, want Bundle", s.Kind)
	}
	checkNameVersion(bad, "metadata.name", s.Metadata.Name, "spec.version", s.Spec.Version)
	comps := s.Spec.Components
	if len(comps) == 0 || len(comps) > MaxComponents {
		bad("spec.components", "has %d entries, want 1 to %d", len(comps), MaxComponents)
	}
	names := map[string]string{} // component → the namespace it lives in ("" unset)
	for _, c := range comps {
		names[c.Name] = c.HomeNamespace()
	}
	seen := map[string]bool{}
	for i, c := range comps {
		f := fmt.Sprintf("spec.components[%d]", i)
		if !dnsLabel.MatchString(c.Name) {
			bad(f+".name", "%q is not a DNS label", c.Name)
		}
		if seen[c.Name] {
			bad(f+".name", "%q appears twice", c.Name)
		}
		seen[c.Name] = true
		switch {
		case c.Helm != nil && c.Kustomize != nil:
			bad(f, "has both kustomize and helm; a component is one or the other")
			continue
		case c.Helm != nil:
			validateHelm(c.Helm, f+".helm", bad)
			checkDeps(f+".helm", c.Name, c.Helm.Namespace, c.Helm.DependsOn, names, bad)
			continue
		case c.Kustomize == nil:
			bad(f, "needs kustomize or helm")
			continue
		}
		k := c.Kustomize
		f += ".kustomize"
		for key := range k.Extra {
			bad(f+"."+key, "unknown field")
		}
		if k.Path == "" {
			bad(f+".path", "is required")
		} else if filepath.IsAbs(k.Path) || strings.Contains(k.Path, "\\") {
			bad(f+".path", "%q must be a relative path with '/' separators", k.Path)
		} else if rel := filepath.Clean(k.Path); rel == ".." || strings.HasPrefix(rel, "../") {
			bad(f+".path", "%q leaves the directory of ferry.yaml", k.Path)
		}
		if k.Timeout != "" {
			if d, err := time.ParseDuration(k.Timeout); err != nil || d <= 0 {
				bad(f+".timeout", "%q is not a positive duration (like 5m)", k.Timeout)
			}
		}
		checkNamespace(f+".targetNamespace", k.TargetNamespace, bad)
		checkNamespace(f+".namespace", k.Namespace, bad)
		checkServiceAccount(f+".serviceAccountName", k.ServiceAccountName, bad)
		checkDeps(f, c.Name, k.Namespace, k.DependsOn, names, bad)
		for j, h := range k.HealthChecks {
			if h.Kind == "" || h.Name == "" {
				bad(fmt.Sprintf("%s.healthChecks[%d]", f, j), "needs kind and name")
			}
		}
		if pb := k.PostBuild; pb != nil {
			for j, r := range pb.SubstituteFrom {
				if r.Kind != "ConfigMap" && r.Kind != "Secret" {
					bad(fmt.Sprintf("%s.postBuild.substituteFrom[%d].kind", f, j), "is %q, want ConfigMap or Secret", r.Kind)
				}
				if r.Name == "" {
					bad(fmt.Sprintf("%s.postBuild.substituteFrom[%d].name", f, j), "is required")
				}
				checkNamespace(fmt.Sprintf("%s.postBuild.substituteFrom[%d].namespace", f, j), r.Namespace, bad)
			}
		}
		for j, p := range k.Patches {
			if strings.TrimSpace(p.Patch) == "" {
				bad(fmt.Sprintf("%s.patches[%d].patch", f, j), "is required")
			}
		}
		validateDrift(k.DriftDetection, f+".driftDetection", bad)
		if k.Decryption != nil && k.Decryption.Provider != "sops" {
			bad(f+".decryption.provider", "is %q, want sops", k.Decryption.Provider)
		}
	}
	if err := dependencyCycle(comps); err != nil {
		bad("spec.components", "%v", err)
	}
	return errors.Join(errs...)
}

// checkNamespace reports ns unless it is empty or a valid namespace name.
func checkNamespace(f, ns string, bad func(field, format string, a ...any)) {
	if ns != "" && (!dnsLabel.MatchString(ns) || len(ns) > 63) {
		bad(f, "%q is not a valid namespace name", ns)
	}
}

// checkServiceAccount reports sa unless it is empty or a valid service account name.
func checkServiceAccount(f, sa string, bad func(field, format string, a ...any)) {
	if sa != "" && (!dnsSubdomain.MatchString(sa) || len(sa) > 253) {
		bad(f, "%q is not a valid service account name", sa)
	}
}

// checkDeps checks a component's dependsOn: each names another component and, as Flux reads
// it, that component's namespace (the reference's, default the depending component's own),
// when both are known.
func checkDeps(f, self, selfNS string, deps []DependencyRef, names map[string]string, bad func(field, format string, a ...any)) {
	for j, d := range deps {
		df := fmt.Sprintf("%s.dependsOn[%d]", f, j)
		home, ok := names[d.Name]
		switch {
		case d.Name == self:
			bad(df+".name", "a component cannot depend on itself")
		case !ok:
			bad(df+".name", "%q is not a component of this bundle", d.Name)
		default:
			if err := CheckDependency(selfNS, d, home); err != nil {
				bad(df+".namespace", "%v", err)
			}
		}
	}
}

// CheckDependency checks that dependency d of a component living in selfNS names the
// namespace its target lives in (targetNS), as Flux reads dependsOn: a reference without a
// namespace means the depending component's own. Unknown namespaces ("") are not checked.
func CheckDependency(selfNS string, d DependencyRef, targetNS string) error {
	want := firstNonEmpty(d.Namespace, selfNS)
	switch {
	case want == "" || targetNS == "" || want == targetNS:
		return nil
	case d.Namespace != "":
		return fmt.Errorf("is %q, but component %q lives in namespace %q", d.Namespace, d.Name, targetNS)
	}
	return fmt.Errorf("is not set, so it means %q (the depending component's own, as in Flux), but %q lives in namespace %q: add namespace: %s", want, d.Name, targetNS, targetNS)
}

// HomeNamespace is the namespace the component lives in (its namespace field), "" when it
// sets none.
func (c ComponentSpec) HomeNamespace() string { return homeNamespace(c.Kustomize, c.Helm) }

// homeNamespace is the namespace field of whichever of k and h is set.
func homeNamespace(k *KustomizeSpec, h *HelmSpec) string {
	switch {
	case k != nil:
		return k.Namespace
	case h != nil:
		return h.Namespace
	}
	return ""
}

// DependsOn returns the names the component depends on, whatever its type.
func (c ComponentSpec) DependsOn() []DependencyRef {
	switch {
	case c.Kustomize != nil:
		return c.Kustomize.DependsOn
	case c.Helm != nil:
		return c.Helm.DependsOn
	}
	return nil
}

// dependencyCycle reports the first dependsOn cycle, naming its components in order.
func dependencyCycle(comps []ComponentSpec) error {
	names := make([]string, len(comps))
	deps := map[string][]string{}
	for i, c := range comps {
		names[i] = c.Name
		for _, d := range c.DependsOn() {
			deps[c.Name] = append(deps[c.Name], d.Name)
		}
	}
	_, err := dependencyOrder(names, deps)
	return err
}

// dependencyOrder returns names ordered so that each comes after everything it depends on,
// keeping the given order where dependencies allow, or the first cycle.
func dependencyOrder(names []string, deps map[string][]string) ([]string, error) {
	const (
		unvisited = iota
		visiting
		done
	)
	state := map[string]int{}
	var stack, order []string
	var visit func(string) error
	visit = func(n string) error {
		switch state[n] {
		case visiting:
			i := len(stack) - 1
			for stack[i] != n {
				i--
			}
			return fmt.Errorf("dependsOn cycle: %s -> %s", strings.Join(stack[i:], " -> "), n)
		case done:
			return nil
		}
		state[n] = visiting
		stack = append(stack, n)
		for _, d := range deps[n] {
			if err := visit(d); err != nil {
				return err
			}
		}
		stack = stack[:len(stack)-1]
		state[n] = done
		order = append(order, n)
		return nil
	}
	for _, n := range names {
		if err := visit(n); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// checkPaths refuses component paths that are missing, not directories, or that reach
// outside dir through a symlink.
func (s *Spec) checkPaths(file string, root *yaml.Node, dir string) error {
	base, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return err
	}
	var errs []error
	check := func(field, rel string, wantDir bool) {
		p, err := ResolveInside(base, rel)
		if err != nil {
			errs = append(errs, &FieldError{File: file, Line: lineOf(root, field), Field: field, Msg: err.Error()})
			return
		}
		if fi, err := os.Stat(p); err != nil || fi.IsDir() != wantDir {
			what := "a regular file"
			if wantDir {
				what = "a directory"
			}
			errs = append(errs, &FieldError{File: file, Line: lineOf(root, field), Field: field, Msg: fmt.Sprintf("%q is not %s", rel, what)})
		}
	}
	for i, c := range s.Spec.Components {
		f := fmt.Sprintf("spec.components[%d]", i)
		if c.Kustomize != nil {
			check(f+".kustomize.path", c.Kustomize.Path, true)
			continue
		}
		if c.Helm.Repository == "" {
			// A chart directory, or a packaged chart (helm package's .tgz).
			check(f+".helm.chart", c.Helm.Chart, !strings.HasSuffix(c.Helm.Chart, ".tgz"))
		}
		for j, v := range c.Helm.ValuesFiles {
			check(fmt.Sprintf("%s.helm.valuesFiles[%d]", f, j), v, false)
		}
	}
	return errors.Join(errs...)
}

// ResolveInside joins rel to base (which must already be free of symlinks) and returns the
// real path, refusing anything that ends up outside base.
func ResolveInside(base, rel string) (string, error) {
	if filepath.IsAbs(rel) {
		return "", fmt.Errorf("%w: %q is absolute", ErrUnsafePath, rel)
	}
	real, err := filepath.EvalSymlinks(filepath.Join(base, filepath.FromSlash(rel)))
	if err != nil {
		return "", err
	}
	r, err := filepath.Rel(base, real)
	if err != nil || r == ".." || strings.HasPrefix(r, ".."+string(filepath.Separator)) {
		return "", fmt.Errorf("%w: %q resolves to %s, outside %s", ErrUnsafePath, rel, real, base)
	}
	return real, nil
}

// lineOf finds the line of a field path such as spec.components[1].kustomize.path in a
// decoded YAML document, or the nearest parent that exists; 0 when none does.
func lineOf(doc *yaml.Node, field string) int {
	if doc == nil || len(doc.Content) == 0 {
		return 0
	}
	n := doc.Content[0]
	line := n.Line
	for _, part := range strings.Split(field, ".") {
		key, idx := part, -1
		if i := strings.IndexByte(part, '['); i >= 0 && strings.HasSuffix(part, "]") {
			key = part[:i]
			idx, _ = strconv.Atoi(part[i+1 : len(part)-1])
		}
		next := mapValue(n, key)
		if next == nil {
			return line
		}
		n, line = next, next.Line
		if idx >= 0 {
			if n.Kind != yaml.SequenceNode || idx >= len(n.Content) {
				return line
			}
			n, line = n.Content[idx], n.Content[idx].Line
		}
	}
	return line
}

func mapValue(n *yaml.Node, key string) *yaml.Node {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			if n.Content[i+1].Kind == yaml.ScalarNode || n.Content[i+1].Kind == yaml.AliasNode {
				return n.Content[i] // the key's line reads better for scalars
			}
			return n.Content[i+1]
		}
	}
	return nil
}
