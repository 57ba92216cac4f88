package render

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	goyaml "go.yaml.in/yaml/v3"
	"oras.land/oras-go/v2/content"
	"sigs.k8s.io/kustomize/kyaml/yaml"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/ferrygitops/ferry/bundles"
)

// MaxRenderedObjects bounds the objects one rendered layer may hold.
const MaxRenderedObjects = 100_000

// Carried reads component i's rendered layer from src and returns its objects, in order. The
// layer is the component's build output as `kustomize build` prints it (ResMap.AsYaml), made
// by the bundler with the same kustomize and options the node would use. Reading it is linear in its
// size, where building the component again is quadratic in its object count (kustomize checks
// every resource it adds against all before it). Every object must have apiVersion, kind and
// metadata.name, and no two may share kind, namespace and name.
func Carried(ctx context.Context, src content.Fetcher, b *bundles.Bundle, i int) ([]*yaml.RNode, error) {
	data, err := b.RenderedYAML(ctx, src, i)
	if err != nil {
		return nil, err // names the component
	}
	nodes, err := ParseRendered(data)
	if err != nil {
		return nil, fmt.Errorf("component %s: rendered layer: %w", b.Metadata.Components[i].Name, err)
	}
	return nodes, nil
}

// ParseRendered parses a rendered layer's YAML stream: one object per document, as kustomize
// prints them. kustomize never prints anchors or aliases (its output goes through JSON), so a
// layer holding one is refused rather than expanded: an alias can make a small document
// unbounded, or loop.
func ParseRendered(data []byte) ([]*yaml.RNode, error) {
	dec := goyaml.NewDecoder(bytes.NewReader(data))
	var nodes []*yaml.RNode
	seen := map[string]int{}
	for doc := 1; ; doc++ {
		var n goyaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", doc, err)
		}
		if len(nodes) == MaxRenderedObjects {
			return nil, fmt.Errorf("over the limit of %d objects", MaxRenderedObjects)
		}
		if err := noAliases(&n); err != nil {
			return nil, fmt.Errorf("document %d: %w", doc, err)
		}
		if len(n.Content) == 0 || n.Content[0].Kind != goyaml.MappingNode {
			return nil, fmt.Errorf("document %d is not an object", doc)
		}
		rn := yaml.NewRNode(&n)
		if rn.GetApiVersion() == "" || rn.GetKind() == "" || rn.GetName() == "" {
			return nil, fmt.Errorf("document %d has no apiVersion, kind or metadata.name", doc)
		}
		gv, _ := schemaGroup(rn.GetApiVersion())
		id := objectID(gv, rn.GetKind(), rn.GetNamespace(), rn.GetName())
		if first, dup := seen[id]; dup {
			return nil, fmt.Errorf("%s appears twice (documents %d and %d)", id, first, doc)
		}
		seen[id] = doc
		nodes = append(nodes, rn)
	}
	return nodes, nil
}

// noAliases refuses anchors and aliases anywhere in n, walking without recursion.
func noAliases(n *goyaml.Node) error {
	stack := []*goyaml.Node{n}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if n.Kind == goyaml.AliasNode || n.Anchor != "" {
			return fmt.Errorf("line %d: an anchor or alias, which kustomize never prints", n.Line)
		}
		stack = append(stack, n.Content...)
	}
	return nil
}

// AsYAML prints objects as `kustomize build` does (ResMap.AsYaml): each through JSON, so keys
// are sorted, separated by "---".
func AsYAML(nodes []*yaml.RNode) ([]byte, error) {
	var buf bytes.Buffer
	for i, n := range nodes {
		j, err := n.MarshalJSON()
		if err != nil {
			return nil, err
		}
		y, err := sigsyaml.JSONToYAML(j)
		if err != nil {
			return nil, err
		}
		if i > 0 {
			buf.WriteString("---\n")
		}
		buf.Write(y)
	}
	return buf.Bytes(), nil
}
