package apply

import (
	"context"
	"fmt"

	"oras.land/oras-go/v2/content"
	kyaml "sigs.k8s.io/kustomize/kyaml/yaml"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/ferrygitops/ferry/apply/render"
	"github.com/ferrygitops/ferry/bundles"
)

// Objects renders the components of b (all, or only the one named component) with env, as
// the node does, and returns their objects with the values of Secrets masked: what
// `ferry render` prints and `ferry bundle diff` compares.
func Objects(ctx context.Context, src content.Fetcher, b *bundles.Bundle, component string, env Env) ([]render.Object, error) {
	order, err := b.Metadata.Order()
	if err != nil {
		return nil, err
	}
	var out []render.Object
	found := false
	for _, i := range order {
		c := b.Metadata.Components[i]
		if component != "" && c.Name != component {
			continue
		}
		found = true
		us, err := RenderComponent(ctx, src, b, i, env)
		if err != nil {
			return nil, err
		}
		for _, u := range us {
			y, err := sigsyaml.Marshal(u.Object)
			if err != nil {
				return nil, err
			}
			n, err := kyaml.Parse(string(y))
			if err != nil {
				return nil, err
			}
			o, err := render.NewObject(c.Name, n)
			if err != nil {
				return nil, err
			}
			out = append(out, o)
		}
	}
	if !found {
		return nil, fmt.Errorf("bundle %s has no component %q", b.Metadata.Name, component)
	}
	return out, nil
}
