package render

import (
	"fmt"
	"path"
	"sort"
	"strings"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"sigs.k8s.io/kustomize/api/provider"
	"sigs.k8s.io/kustomize/api/resmap"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/ferrygitops/ferry/bundles"
)

// Component renders one component of a bundle from its layer's files.
func Component(files bundles.Files, c bundles.Component) (resmap.ResMap, error) {
	switch {
	case c.Type == bundles.TypeKustomize && c.Kustomize != nil:
		return Kustomize(files, *c.Kustomize)
	case c.Type == bundles.TypeHelm && c.Helm != nil:
		return Helm(files, c.Name, *c.Helm)
	}
	return nil, fmt.Errorf("component %s: type %q without its spec", c.Name, c.Type)
}

// ReleaseName is the Helm release name of a component, as Flux derives it: releaseName when
// set, else [targetNamespace-]name.
func ReleaseName(component string, h bundles.HelmSpec) string {
	switch {
	case h.ReleaseName != "":
		return h.ReleaseName
	case h.TargetNamespace != "":
		return h.TargetNamespace + "-" + component
	}
	return component
}

// LoadChart loads the chart vendored under chart/ in a Helm component's layer.
func LoadChart(files bundles.Files) (*chart.Chart, error) {
	var bf []*loader.BufferedFile
	prefix := bundles.HelmChartDir + "/"
	for _, f := range files {
		if name, ok := strings.CutPrefix(f.Name, prefix); ok {
			bf = append(bf, &loader.BufferedFile{Name: name, Data: f.Data})
		}
	}
	if len(bf) == 0 {
		return nil, fmt.Errorf("no chart under %s/ in the component", bundles.HelmChartDir)
	}
	ch, err := loader.LoadFiles(bf)
	if err != nil {
		return nil, fmt.Errorf("load chart: %w", err)
	}
	return ch, nil
}

// Values merges a Helm component's values in Flux's order, later winning: the chart's
// defaults (applied by Helm), then valuesFiles in order, then inline values. valuesFrom
// (cluster objects) is merged by the node before the inline values.
func Values(files bundles.Files, h bundles.HelmSpec, fromCluster ...map[string]any) (map[string]any, error) {
	merged := map[string]any{}
	for _, name := range h.ValuesFiles {
		f, ok := files.Get(name)
		if !ok {
			return nil, fmt.Errorf("values file %s is not in the component", name)
		}
		var v map[string]any
		if err := sigsyaml.Unmarshal(f.Data, &v); err != nil {
			return nil, fmt.Errorf("values file %s: %w", name, err)
		}
		merged = chartutil.MergeTables(v, merged)
	}
	for _, v := range fromCluster {
		merged = chartutil.MergeTables(v, merged)
	}
	if h.Values != nil {
		// Round-trip through JSON so YAML-decoded maps have the types Helm expects.
		b, err := sigsyaml.Marshal(h.Values)
		if err != nil {
			return nil, err
		}
		var inline map[string]any
		if err := sigsyaml.Unmarshal(b, &inline); err != nil {
			return nil, err
		}
		merged = chartutil.MergeTables(inline, merged)
	}
	return merged, nil
}

// Helm renders a Helm component as `helm template` would, with the SDK and without a
// cluster: CRDs from the chart's crds/ directory first, then the templates in name order.
// The values are the component's own (Values), as written.
func Helm(files bundles.Files, component string, h bundles.HelmSpec) (resmap.ResMap, error) {
	vals, err := Values(files, h)
	if err != nil {
		return nil, err
	}
	return Template(files, component, h, vals)
}

// Template is Helm with the given values: a node previews a component with the values it
// installs the release with.
func Template(files bundles.Files, component string, h bundles.HelmSpec, vals map[string]any) (_ resmap.ResMap, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("helm template panicked: %v", r)
		}
	}()
	ch, err := LoadChart(files)
	if err != nil {
		return nil, err
	}
	ns := h.TargetNamespace
	if ns == "" {
		ns = "default"
	}
	rv, err := chartutil.ToRenderValues(ch, vals, chartutil.ReleaseOptions{
		Name: ReleaseName(component, h), Namespace: ns, Revision: 1, IsInstall: true,
	}, chartutil.DefaultCapabilities)
	if err != nil {
		return nil, fmt.Errorf("values: %w", err)
	}
	out, err := engine.Render(ch, rv)
	if err != nil {
		return nil, fmt.Errorf("helm template: %w", err)
	}
	var docs []string
	for _, crd := range ch.CRDObjects() {
		docs = append(docs, string(crd.File.Data))
	}
	names := make([]string, 0, len(out))
	for name := range out {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		base := path.Base(name)
		if strings.HasPrefix(base, "_") || base == "NOTES.txt" || strings.TrimSpace(out[name]) == "" {
			continue
		}
		docs = append(docs, out[name])
	}
	rf := provider.NewDefaultDepProvider().GetResourceFactory()
	rm, err := resmap.NewFactory(rf).NewResMapFromBytes([]byte(strings.Join(docs, "\n---\n")))
	if err != nil {
		return nil, fmt.Errorf("helm template output: %w", err)
	}
	return rm, nil
}
