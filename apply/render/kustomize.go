package render

import (
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/resmap"
	kusttypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/kustomize/kyaml/resid"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/ferrygitops/ferry/bundles"
)

// Where the component and Ferry's overlay live in the in-memory filesystem.
const (
	componentRoot = "/component"
	overlayRoot   = "/ferry-overlay"
)

var kustomizationNames = []string{"kustomization.yaml", "kustomization.yml", "Kustomization"}

// ErrRemoteBase is returned for a kustomization that refers to a remote Git or HTTP base: a
// bundle must carry everything it needs.
var ErrRemoteBase = errors.New("remote base")

// Kustomize builds the component and returns its objects.
func Kustomize(files bundles.Files, spec bundles.KustomizeSpec) (_ resmap.ResMap, err error) {
	fs := filesys.MakeFsInMemory()
	hasKustomization := false
	var yamlFiles []string
	for _, f := range files {
		p := path.Join(componentRoot, f.Name)
		if err := fs.MkdirAll(path.Dir(p)); err != nil {
			return nil, err
		}
		if err := fs.WriteFile(p, f.Data); err != nil {
			return nil, err
		}
		base := path.Base(f.Name)
		for _, k := range kustomizationNames {
			if base == k {
				if err := refuseRemote(f); err != nil {
					return nil, err
				}
				if f.Name == base {
					hasKustomization = true
				}
			}
		}
		if !strings.Contains(f.Name, "/") && (strings.HasSuffix(base, ".yaml") || strings.HasSuffix(base, ".yml")) {
			yamlFiles = append(yamlFiles, f.Name)
		}
	}
	// Like Flux: a directory of plain manifests gets a kustomization listing them.
	if !hasKustomization {
		sort.Strings(yamlFiles)
		k := kusttypes.Kustomization{Resources: yamlFiles}
		if err := writeKustomization(fs, componentRoot, k); err != nil {
			return nil, err
		}
	}
	root := componentRoot
	if needsOverlay(spec) {
		if err := writeKustomization(fs, overlayRoot, overlay(spec)); err != nil {
			return nil, err
		}
		root = overlayRoot
	}

	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("kustomize panicked: %v", r)
		}
	}()
	opts := krusty.MakeDefaultOptions()
	opts.LoadRestrictions = kusttypes.LoadRestrictionsRootOnly
	opts.PluginConfig = kusttypes.DisabledPluginConfig()
	rm, err := krusty.MakeKustomizer(opts).Run(fs, root)
	if err != nil {
		return nil, fmt.Errorf("kustomize build: %w", cleanPaths(err))
	}
	return rm, nil
}

// cleanPaths removes the in-memory mount points from kustomize's messages.
func cleanPaths(err error) error {
	msg := strings.NewReplacer(componentRoot+"/", "", overlayRoot+"/", "", componentRoot, ".", overlayRoot, "(overlay)").Replace(err.Error())
	return errors.New(msg)
}

func needsOverlay(s bundles.KustomizeSpec) bool {
	return s.TargetNamespace != "" || len(s.Patches) > 0 || s.CommonMetadata != nil
}

// overlay is the kustomization Ferry puts around a component for Flux's component-level
// fields.
func overlay(s bundles.KustomizeSpec) kusttypes.Kustomization {
	k := kusttypes.Kustomization{Resources: []string{"../" + path.Base(componentRoot)}, Namespace: s.TargetNamespace}
	for _, p := range s.Patches {
		kp := kusttypes.Patch{Patch: p.Patch}
		if t := p.Target; t != nil {
			kp.Target = &kusttypes.Selector{
				ResId:         resIDFor(t),
				LabelSelector: t.LabelSelector, AnnotationSelector: t.AnnotationSelector,
			}
		}
		k.Patches = append(k.Patches, kp)
	}
	if cm := s.CommonMetadata; cm != nil {
		if len(cm.Labels) > 0 {
			k.Labels = []kusttypes.Label{{Pairs: cm.Labels, IncludeSelectors: false}}
		}
		k.CommonAnnotations = cm.Annotations
	}
	return k
}

func writeKustomization(fs filesys.FileSystem, dir string, k kusttypes.Kustomization) error {
	k.APIVersion, k.Kind = kusttypes.KustomizationVersion, kusttypes.KustomizationKind
	b, err := sigsyaml.Marshal(k)
	if err != nil {
		return err
	}
	if err := fs.MkdirAll(dir); err != nil {
		return err
	}
	return fs.WriteFile(path.Join(dir, "kustomization.yaml"), b)
}

// refuseRemote rejects kustomization entries that would fetch from a network.
func refuseRemote(f bundles.File) error {
	var k struct {
		Resources  []string `yaml:"resources"`
		Bases      []string `yaml:"bases"`
		Components []string `yaml:"components"`
	}
	if err := yaml.Unmarshal(f.Data, &k); err != nil {
		return fmt.Errorf("%s: %w", f.Name, err)
	}
	for _, list := range [][]string{k.Resources, k.Bases, k.Components} {
		for _, r := range list {
			if isRemote(r) {
				return fmt.Errorf("%s: %w %q: vendor it into the bundle's tree", f.Name, ErrRemoteBase, r)
			}
		}
	}
	return nil
}

func isRemote(r string) bool {
	if strings.Contains(r, "://") || strings.HasPrefix(r, "git@") {
		return true
	}
	for _, host := range []string{"github.com/", "gitlab.com/", "bitbucket.org/"} {
		if strings.HasPrefix(r, host) {
			return true
		}
	}
	return false
}

func resIDFor(t *bundles.Selector) resid.ResId {
	return resid.ResId{
		Gvk:       resid.Gvk{Group: t.Group, Version: t.Version, Kind: t.Kind},
		Name:      t.Name,
		Namespace: t.Namespace,
	}
}
