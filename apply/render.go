package apply

import (
	"context"
	"encoding/base64"
	"fmt"
	"maps"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"oras.land/oras-go/v2/content"
	"sigs.k8s.io/kustomize/api/resmap"
	kyaml "sigs.k8s.io/kustomize/kyaml/yaml"

	"github.com/ferrygitops/ferry/apply/decrypt"
	"github.com/ferrygitops/ferry/apply/render"
	"github.com/ferrygitops/ferry/bundles"
)

// Env is what a node adds to a bundle when it renders it.
type Env struct {
	// Vars are the node's variables (site id, node name…), the lowest-precedence source of
	// postBuild substitution: substituteFrom overrides them, substitute overrides both.
	Vars map[string]string
	// Keys decrypt SOPS files of components with decryption set; nil refuses them.
	Keys *decrypt.Keys
	// Namespace is where a component without targetNamespace reads substituteFrom, and the
	// namespace of its namespaced objects that name none. "" means "default".
	Namespace string
	// Lookup reads the data of a ConfigMap or Secret (kind) for substituteFrom, returning an
	// error for which apierrors.IsNotFound holds when it does not exist. nil treats every
	// source as missing (a preview without a cluster).
	Lookup func(ctx context.Context, kind, namespace, name string) (map[string]string, error)
	// Lenient leaves variables that are unset and have no default empty instead of failing
	// (previews only; a node always renders strictly).
	Lenient bool
	// KeepVariables skips postBuild substitution, leaving ${VAR} as written (a diff of two
	// bundles, whose variables come from the node).
	KeepVariables bool
	// NoDecrypt renders SOPS files as they are, still encrypted (previews without the node's
	// key; Secret values are masked in previews anyway).
	NoDecrypt bool
	// NoCrossNamespaceRefs refuses substituteFrom, valuesFrom, healthChecks and dependsOn
	// that name another namespace than the component's (Flux's --no-cross-namespace-refs).
	NoCrossNamespaceRefs bool

	// scopes are the signing keys' scopes of the component being rendered (applier only).
	scopes []*bundles.Scope
}

// Namespace returns the namespace a component works in: its targetNamespace, else env's.
func (env Env) namespaceOf(c bundles.Component) string {
	switch {
	case c.Kustomize != nil && c.Kustomize.TargetNamespace != "":
		return c.Kustomize.TargetNamespace
	case c.Helm != nil && c.Helm.TargetNamespace != "":
		return c.Helm.TargetNamespace
	case env.Namespace != "":
		return env.Namespace
	}
	return "default"
}

// homeOf is the namespace component c lives in: its serviceAccountName is an account there,
// and references without a namespace (substituteFrom, valuesFrom, healthChecks) are read
// there. It is the component's namespace field (a Flux object's metadata.namespace), else
// the namespace its objects go to.
func (env Env) homeOf(c bundles.Component) string {
	switch {
	case c.Kustomize != nil && c.Kustomize.Namespace != "":
		return c.Kustomize.Namespace
	case c.Helm != nil && c.Helm.Namespace != "":
		return c.Helm.Namespace
	}
	return env.namespaceOf(c)
}

// RenderComponent renders component i of bundle b (its layer read, digest-checked, from src)
// exactly as the node applies it: SOPS files decrypted in memory, kustomize or Helm, then
// postBuild substitution. `ferry render` and the applier share it.
func RenderComponent(ctx context.Context, src content.Fetcher, b *bundles.Bundle, i int, env Env) ([]*unstructured.Unstructured, error) {
	nodes, err := env.build(ctx, src, b, i)
	if err != nil {
		return nil, err
	}
	return env.finish(ctx, b.Metadata.Components[i], nodes)
}

// build returns a component's objects before substitution: its rendered layer when the bundle
// carries one, else its files decrypted and built. What only the cluster knows
// (substituteFrom) is left for finish, which the applier calls once the component's
// dependencies are applied.
func (env Env) build(ctx context.Context, src content.Fetcher, b *bundles.Bundle, i int) ([]*kyaml.RNode, error) {
	if _, ok := b.Rendered(i); ok {
		return render.Carried(ctx, src, b, i)
	}
	c := b.Metadata.Components[i]
	files, err := b.Layer(ctx, src, i)
	if err != nil {
		return nil, err // Layer names the component
	}
	if env.NoDecrypt {
		// A preview: encrypted files are rendered as they are.
	} else if c.Kustomize != nil && c.Kustomize.Decryption != nil {
		files, _, err = env.Keys.Files(files)
		if err != nil {
			return nil, fmt.Errorf("component %s: %w", c.Name, err)
		}
	} else {
		for _, f := range files {
			if decrypt.IsEncrypted(f.Name, f.Data) {
				return nil, fmt.Errorf("component %s: %s is SOPS-encrypted but the component has no decryption (set decryption: {provider: sops})", c.Name, f.Name)
			}
		}
	}
	var rm resmap.ResMap
	if c.Type == bundles.TypeHelm && c.Helm != nil {
		// A preview of a Helm component: the values its release would be installed with
		// (the applier installs it from helmChart, not from here).
		var vals map[string]any
		if vals, err = env.values(files, *c.Helm); err == nil {
			rm, err = render.Template(files, c.Name, *c.Helm, vals)
		}
	} else {
		rm, err = render.Component(files, c)
	}
	if err != nil {
		return nil, fmt.Errorf("component %s: %w", c.Name, err)
	}
	return rm.ToRNodeSlice(), nil
}

// helmChart reads a Helm component's layer and loads its chart: the applier installs it as a
// Helm release rather than applying rendered objects.
func (env Env) helmChart(ctx context.Context, src content.Fetcher, b *bundles.Bundle, i int) (*helmChart, error) {
	c := b.Metadata.Components[i]
	files, err := b.Layer(ctx, src, i)
	if err != nil {
		return nil, err // Layer names the component
	}
	for _, f := range files {
		if decrypt.IsEncrypted(f.Name, f.Data) {
			return nil, fmt.Errorf("component %s: %s is SOPS-encrypted; Helm components take secrets through valuesFrom", c.Name, f.Name)
		}
	}
	ch, err := render.LoadChart(files)
	if err != nil {
		return nil, fmt.Errorf("component %s: %w", c.Name, err)
	}
	return &helmChart{release: render.ReleaseName(c.Name, *c.Helm), chart: ch, files: files, layer: b.Manifest.Layers[i].Digest, spec: *c.Helm}, nil
}

// finish substitutes variables (postBuild) into the objects, leaving nodes as they are, and
// returns them.
func (env Env) finish(ctx context.Context, c bundles.Component, nodes []*kyaml.RNode) ([]*unstructured.Unstructured, error) {
	if c.Kustomize != nil && c.Kustomize.PostBuild != nil && !env.KeepVariables {
		vars, err := env.variables(ctx, c, *c.Kustomize.PostBuild)
		if err != nil {
			return nil, fmt.Errorf("component %s: %w", c.Name, err)
		}
		if nodes, err = render.Substitute(nodes, vars, !env.Lenient); err != nil {
			return nil, fmt.Errorf("component %s: %w", c.Name, err)
		}
	}
	out := make([]*unstructured.Unstructured, 0, len(nodes))
	for _, n := range nodes {
		// As through JSON: numbers are int64/float64, as client-go expects everywhere.
		u, err := render.Unstructured(n)
		if err != nil {
			return nil, fmt.Errorf("component %s: %s %s: %w", c.Name, n.GetKind(), n.GetName(), err)
		}
		if u.GetName() == "" || u.GetKind() == "" || u.GetAPIVersion() == "" {
			return nil, fmt.Errorf("component %s: an object has no apiVersion, kind or metadata.name", c.Name)
		}
		out = append(out, u)
	}
	return out, nil
}

// variables merges, lowest first: node variables, substituteFrom in list order, substitute.
func (env Env) variables(ctx context.Context, c bundles.Component, pb bundles.PostBuild) (map[string]string, error) {
	vars := maps.Clone(env.Vars)
	if vars == nil {
		vars = map[string]string{}
	}
	own := env.homeOf(c)
	for i, ref := range pb.SubstituteFrom {
		ns, err := env.refNamespace(own, ref.Namespace, fmt.Sprintf("postBuild.substituteFrom[%d]", i))
		if err != nil {
			return nil, err
		}
		var data map[string]string
		if env.Lookup == nil {
			err = apierrors.NewNotFound(corev1Resource(ref.Kind), ref.Name)
		} else {
			data, err = env.Lookup(ctx, ref.Kind, ns, ref.Name)
		}
		if apierrors.IsNotFound(err) && (ref.Optional || env.Lookup == nil) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("postBuild.substituteFrom %s %s/%s: %w", ref.Kind, ns, ref.Name, err)
		}
		maps.Copy(vars, data)
	}
	maps.Copy(vars, pb.Substitute)
	return vars, nil
}

// secretData decodes a Secret's data.
func secretData(u *unstructured.Unstructured) (map[string]string, error) {
	raw, _, _ := unstructured.NestedStringMap(u.Object, "data")
	out := make(map[string]string, len(raw))
	for k, v := range raw {
		b, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			return nil, fmt.Errorf("data.%s is not base64", k)
		}
		out[k] = string(b)
	}
	return out, nil
}
