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

// Kustomize builds the component and returns its objects. The component's directory is
// spec.Path inside the layer ("." for a layer rooted at it); a layer may hold files outside
// that directory which its kustomization reaches (../base, SPEC §3).
func Kustomize(files bundles.Files, spec bundles.KustomizeSpec) (_ resmap.ResMap, err error) {
	fs := filesys.MakeFsInMemory()
	dir := path.Clean(spec.Path)
	if dir == "" || path.IsAbs(dir) || dir == ".." || strings.HasPrefix(dir, "../") {
		return nil, fmt.Errorf("kustomize.path %q: %w: not inside the layer", spec.Path, bundles.ErrUnsafePath)
	}
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
				if path.Dir(f.Name) == dir {
					hasKustomization = true
				}
			}
		}
		if path.Dir(f.Name) == dir && (strings.HasSuffix(base, ".yaml") || strings.HasSuffix(base, ".yml")) {
			yamlFiles = append(yamlFiles, base)
		}
	}
	compRoot := path.Join(componentRoot, dir)
	// Like Flux: a directory of plain manifests gets a kustomization listing them.
	if !hasKustomization {
		sort.Strings(yamlFiles)
		k := kusttypes.Kustomization{Resources: yamlFiles}
		if err := writeKustomization(fs, compRoot, k); err != nil {
			return nil, err
		}
	}
	root := compRoot
	if needsOverlay(spec) {
		if err := writeKustomization(fs, overlayRoot, overlay(spec, dir)); err != nil {
			return nil, err
		}
		root = overlayRoot
	}

	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("kustomize panicked: %v", r)
		}
	}()
	rm, err := krusty.MakeKustomizer(Options()).Run(fs, root)
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

// Options are kustomize's options for a component, as kustomize-controller sets them: no
// load restrictions (a patch or generator file may sit in ../), no plugins. What can be read
// is confined by the filesystem kustomize is given: the layer in memory on the node, the
// repository at build time (bundler).
func Options() *krusty.Options {
	opts := krusty.MakeDefaultOptions()
	opts.LoadRestrictions = kusttypes.LoadRestrictionsNone
	opts.PluginConfig = kusttypes.DisabledPluginConfig()
	return opts
}

// CheckKustomization refuses a kustomization file (name, content) that names anything
// kustomize would fetch from a network.
func CheckKustomization(name string, data []byte) error {
	return refuseRemote(bundles.File{Name: name, Data: data})
}

// IsKustomization reports whether a file name is one kustomize reads as a kustomization.
func IsKustomization(name string) bool {
	for _, k := range kustomizationNames {
		if path.Base(name) == k {
			return true
		}
	}
	return false
}

func needsOverlay(s bundles.KustomizeSpec) bool {
	return s.TargetNamespace != "" || len(s.Patches) > 0 || s.CommonMetadata != nil
}

// overlay is the kustomization Ferry puts around a component for Flux's component-level
// fields.
func overlay(s bundles.KustomizeSpec, dir string) kusttypes.Kustomization {
	k := kusttypes.Kustomization{Resources: []string{path.Join("..", path.Base(componentRoot), dir)}, Namespace: s.TargetNamespace}
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

// refuseRemote rejects a kustomization that names anything kustomize would fetch from a
// network. Kustomize loads any path-bearing field over HTTP when it is a URL (resources, but
// also patches, generator files, openapi, crds, configurations, replacements, transformers…)
// and runs git for remote bases, and it reads keys case-insensitively. So every scalar of the
// document is checked, whatever its key, except generator literals and inline patches, which
// are data; for "key=path" generator entries the path part is checked too.
func refuseRemote(f bundles.File) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(f.Data, &doc); err != nil {
		return fmt.Errorf("%s: %w", f.Name, err)
	}
	var found string
	var walk func(n *yaml.Node, key string)
	walk = func(n *yaml.Node, key string) {
		if found != "" || n == nil {
			return
		}
		switch n.Kind {
		case yaml.DocumentNode, yaml.SequenceNode:
			for _, c := range n.Content {
				walk(c, key)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				walk(n.Content[i+1], strings.ToLower(n.Content[i].Value))
			}
		case yaml.ScalarNode:
			if key == "literals" || key == "patch" || strings.ContainsAny(n.Value, " \t\n") {
				return
			}
			candidates := []string{n.Value}
			if _, path, ok := strings.Cut(n.Value, "="); ok {
				candidates = append(candidates, path)
			}
			for _, c := range candidates {
				if isRemote(c) {
					found = n.Value
				}
			}
		}
	}
	walk(&doc, "")
	if found != "" {
		return fmt.Errorf("%s: %w %q: vendor it into the bundle's tree", f.Name, ErrRemoteBase, found)
	}
	return nil
}

// isRemote reports whether kustomize would treat r as something to fetch: a URL, an scp-like
// or git:: Git address, a known Git host, or its remote-base forms (repo//subdir, ?ref=, _git/).
func isRemote(r string) bool {
	l := strings.ToLower(r)
	if strings.Contains(l, "://") || strings.HasPrefix(l, "git@") || strings.HasPrefix(l, "git::") || strings.HasPrefix(l, "gh:") {
		return true
	}
	if strings.Contains(l, "//") || strings.Contains(l, "?ref=") || strings.Contains(l, "?version=") || strings.Contains(l, "_git/") {
		return true
	}
	for _, host := range []string{"github.com/", "gitlab.com/", "bitbucket.org/", "dev.azure.com/", "ssh.dev.azure.com/"} {
		if strings.HasPrefix(l, host) {
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
