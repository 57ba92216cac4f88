package bundles

import (
	"fmt"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/Masterminds/semver/v3"
)

// HelmSpec has the fields of Flux's HelmRelease that mean something inside a bundle, with
// Flux's names and meanings. Chart is a path to a chart directory in the source tree or, with
// Repository (the URL a Flux HelmRepository would hold), a chart name whose Version is a semver
// range. The bundler vendors the chart into the component's layer (chart/), with the values
// files (values/), and records the resolved version.
type HelmSpec struct {
	Chart           string `yaml:"chart" json:"chart"`
	Repository      string `yaml:"repository" json:"repository,omitempty"`
	Version         string `yaml:"version" json:"version,omitempty"`
	ReleaseName     string `yaml:"releaseName" json:"releaseName,omitempty"`
	TargetNamespace string `yaml:"targetNamespace" json:"targetNamespace,omitempty"`
	// Namespace: as for kustomize components (a HelmRelease's metadata.namespace): where its
	// service account is and valuesFrom without a namespace is read.
	Namespace string `yaml:"namespace" json:"namespace,omitempty"`
	// ServiceAccountName: as for kustomize components, Helm's actions included.
	ServiceAccountName string            `yaml:"serviceAccountName" json:"serviceAccountName,omitempty"`
	Values             map[string]any    `yaml:"values" json:"values,omitempty"`
	ValuesFiles        []string          `yaml:"valuesFiles" json:"valuesFiles,omitempty"`
	ValuesFrom         []ValuesReference `yaml:"valuesFrom" json:"valuesFrom,omitempty"`
	DependsOn          []DependencyRef   `yaml:"dependsOn" json:"dependsOn,omitempty"`
	Timeout            string            `yaml:"timeout" json:"timeout,omitempty"`
	MaxHistory         *int              `yaml:"maxHistory" json:"maxHistory,omitempty"`
	Install            *HelmInstall      `yaml:"install" json:"install,omitempty"`
	Upgrade            *HelmUpgrade      `yaml:"upgrade" json:"upgrade,omitempty"`
	DriftDetection     *DriftDetection   `yaml:"driftDetection" json:"driftDetection,omitempty"`
}

// ValuesReference names a ConfigMap or Secret in the cluster holding values (Flux: valuesFrom).
type ValuesReference struct {
	Kind       string `yaml:"kind" json:"kind"`
	Name       string `yaml:"name" json:"name"`
	ValuesKey  string `yaml:"valuesKey" json:"valuesKey,omitempty"`
	TargetPath string `yaml:"targetPath" json:"targetPath,omitempty"`
	Optional   bool   `yaml:"optional" json:"optional,omitempty"`
	// Namespace is a Ferry addition, as on substituteFrom.
	Namespace string `yaml:"namespace" json:"namespace,omitempty"`
}

// HelmInstall configures installs (Flux: install).
type HelmInstall struct {
	CreateNamespace bool         `yaml:"createNamespace" json:"createNamespace,omitempty"`
	CRDs            string       `yaml:"crds" json:"crds,omitempty"` // Skip | Create | CreateReplace
	Remediation     *Remediation `yaml:"remediation" json:"remediation,omitempty"`
}

// HelmUpgrade configures upgrades (Flux: upgrade).
type HelmUpgrade struct {
	CRDs          string       `yaml:"crds" json:"crds,omitempty"`
	CleanupOnFail bool         `yaml:"cleanupOnFail" json:"cleanupOnFail,omitempty"`
	Remediation   *Remediation `yaml:"remediation" json:"remediation,omitempty"`
}

// Remediation says what to do when an install or upgrade fails (Flux: remediation).
type Remediation struct {
	Retries              int    `yaml:"retries" json:"retries,omitempty"`
	RemediateLastFailure *bool  `yaml:"remediateLastFailure" json:"remediateLastFailure,omitempty"`
	Strategy             string `yaml:"strategy" json:"strategy,omitempty"` // rollback | uninstall (upgrade only)
}

// DriftDetection configures correction of changes made to a release's objects (Flux).
type DriftDetection struct {
	Mode   string       `yaml:"mode" json:"mode,omitempty"` // enabled | warn | disabled
	Ignore []IgnoreRule `yaml:"ignore" json:"ignore,omitempty"`
}

// IgnoreRule excludes JSON pointer paths, optionally on selected objects, from drift checks.
type IgnoreRule struct {
	Paths  []string  `yaml:"paths" json:"paths"`
	Target *Selector `yaml:"target" json:"target,omitempty"`
}

// Layer layout of a Helm component (SPEC §3).
const (
	HelmChartDir  = "chart"
	HelmValuesDir = "values"
)

// validateHelm checks a Helm component's spec; bad reports each problem under field f.
func validateHelm(h *HelmSpec, f string, bad func(field, format string, a ...any)) {
	checkRelPath := func(field, p string) {
		switch {
		case p == "":
			bad(field, "is required")
		case filepath.IsAbs(p) || strings.Contains(p, "\\"):
			bad(field, "%q must be a relative path with '/' separators", p)
		case path.Clean(p) == ".." || strings.HasPrefix(path.Clean(p), "../"):
			bad(field, "%q leaves the directory of ferry.yaml", p)
		}
	}
	switch {
	case h.Repository != "":
		if !strings.HasPrefix(h.Repository, "https://") && !strings.HasPrefix(h.Repository, "http://") && !strings.HasPrefix(h.Repository, "oci://") {
			bad(f+".repository", "%q is not an http(s) chart repository or oci:// registry URL", h.Repository)
		}
		if h.Chart == "" || strings.ContainsAny(h.Chart, "/:") {
			bad(f+".chart", "%q: with a repository, chart is the chart's name", h.Chart)
		}
		if h.Version != "" {
			if _, err := semver.NewConstraint(h.Version); err != nil {
				bad(f+".version", "%q is not a semver version or range", h.Version)
			}
		}
	case strings.Contains(h.Chart, "://"):
		bad(f+".chart", "%q: a chart URL needs repository (the repository or oci:// URL) and chart (the name)", h.Chart)
	default:
		checkRelPath(f+".chart", h.Chart)
	}
	for i, v := range h.ValuesFiles {
		checkRelPath(fmt.Sprintf("%s.valuesFiles[%d]", f, i), v)
	}
	if h.ReleaseName != "" && (!dnsLabel.MatchString(h.ReleaseName) || len(h.ReleaseName) > 53) {
		bad(f+".releaseName", "%q is not a valid release name (DNS label, at most 53)", h.ReleaseName)
	}
	checkNamespace(f+".targetNamespace", h.TargetNamespace, bad)
	checkNamespace(f+".namespace", h.Namespace, bad)
	checkServiceAccount(f+".serviceAccountName", h.ServiceAccountName, bad)
	if h.Timeout != "" {
		if d, err := time.ParseDuration(h.Timeout); err != nil || d <= 0 {
			bad(f+".timeout", "%q is not a positive duration (like 5m)", h.Timeout)
		}
	}
	if h.MaxHistory != nil && *h.MaxHistory <= 0 {
		// Flux treats 0 as unbounded; an edge node's Secrets must not grow without end.
		bad(f+".maxHistory", "is %d; must be at least 1 (the default is 10)", *h.MaxHistory)
	}
	for i, r := range h.ValuesFrom {
		vf := fmt.Sprintf("%s.valuesFrom[%d]", f, i)
		if r.Kind != "ConfigMap" && r.Kind != "Secret" {
			bad(vf+".kind", "is %q, want ConfigMap or Secret", r.Kind)
		}
		if r.Name == "" {
			bad(vf+".name", "is required")
		}
		checkNamespace(vf+".namespace", r.Namespace, bad)
	}
	crds := func(field, v string) {
		if v != "" && v != "Skip" && v != "Create" && v != "CreateReplace" {
			bad(field, "is %q, want Skip, Create or CreateReplace", v)
		}
	}
	if in := h.Install; in != nil {
		crds(f+".install.crds", in.CRDs)
		if r := in.Remediation; r != nil && r.Strategy != "" {
			bad(f+".install.remediation.strategy", "is only meaningful for upgrades")
		}
	}
	if up := h.Upgrade; up != nil {
		crds(f+".upgrade.crds", up.CRDs)
		if r := up.Remediation; r != nil && r.Strategy != "" && r.Strategy != "rollback" && r.Strategy != "uninstall" {
			bad(f+".upgrade.remediation.strategy", "is %q, want rollback or uninstall", r.Strategy)
		}
	}
	for _, r := range []*Remediation{remediationOf(h.Install), remediationOfUpgrade(h.Upgrade)} {
		if r != nil && r.Retries < 0 {
			bad(f, "remediation retries must not be negative")
		}
	}
	validateDrift(h.DriftDetection, f+".driftDetection", bad)
}

func validateDrift(d *DriftDetection, f string, bad func(field, format string, a ...any)) {
	if d == nil {
		return
	}
	if d.Mode != "" && d.Mode != "enabled" && d.Mode != "warn" && d.Mode != "disabled" {
		bad(f+".mode", "is %q, want enabled, warn or disabled", d.Mode)
	}
	for i, r := range d.Ignore {
		if len(r.Paths) == 0 {
			bad(fmt.Sprintf("%s.ignore[%d].paths", f, i), "is required")
		}
		for j, p := range r.Paths {
			if !strings.HasPrefix(p, "/") {
				bad(fmt.Sprintf("%s.ignore[%d].paths[%d]", f, i, j), "%q is not a JSON pointer (it starts with /)", p)
			}
		}
	}
}

func remediationOf(i *HelmInstall) *Remediation {
	if i == nil {
		return nil
	}
	return i.Remediation
}

func remediationOfUpgrade(u *HelmUpgrade) *Remediation {
	if u == nil {
		return nil
	}
	return u.Remediation
}
