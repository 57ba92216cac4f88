package render

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"

	"github.com/pmezard/go-difflib/difflib"
	"oras.land/oras-go/v2/content"
	"sigs.k8s.io/kustomize/kyaml/yaml"

	"github.com/ferrygitops/ferry/bundles"
)

// FromBundle returns the objects of component i of bundle b, reading its layers
// (digest-checked) from src: its rendered layer when the bundle carries one, else its files
// built, SOPS files as they are. `ferry bundle diff` and the node's applier read a component
// the same way.
func FromBundle(ctx context.Context, src content.Fetcher, b *bundles.Bundle, i int) ([]*yaml.RNode, error) {
	if _, ok := b.Rendered(i); ok {
		return Carried(ctx, src, b, i)
	}
	files, err := b.Layer(ctx, src, i)
	if err != nil {
		return nil, err
	}
	c := b.Metadata.Components[i]
	rm, err := Component(files, c)
	if err != nil {
		return nil, fmt.Errorf("component %s: %w", c.Name, err)
	}
	return rm.ToRNodeSlice(), nil
}

// Object is one rendered object of a bundle, secrets masked.
type Object struct {
	Component string `json:"component"`
	ID        string `json:"id"` // Kind[.group] [namespace/]name
	YAML      string `json:"yaml,omitempty"`
}

// NewObject describes one rendered object of a component for display: its ID and its YAML
// with the values of a Secret replaced by a short keyed hash.
func NewObject(component string, n *yaml.RNode) (Object, error) {
	node := n.Copy()
	if err := maskSecret(node); err != nil {
		return Object{}, err
	}
	s, err := node.String()
	if err != nil {
		return Object{}, err
	}
	gv, _ := schemaGroup(node.GetApiVersion())
	return Object{Component: component, ID: objectID(gv, node.GetKind(), node.GetNamespace(), node.GetName()), YAML: s}, nil
}

// schemaGroup returns the group of an apiVersion ("apps/v1" → "apps", "v1" → "").
func schemaGroup(apiVersion string) (string, bool) {
	g, _, ok := strings.Cut(apiVersion, "/")
	if !ok {
		return "", false
	}
	return g, true
}

// objectID names an object the way kubectl does: Deployment.apps web/api, Namespace web.
func objectID(group, kind, namespace, name string) string {
	id := kind
	if group != "" {
		id += "." + group
	}
	if namespace != "" {
		return id + " " + namespace + "/" + name
	}
	return id + " " + name
}

// maskKey keys the hashes that stand for secret values: random per process, so two renders
// compared in one run match where values match, while a shared diff gives no way to test
// guesses against an unsalted hash.
var maskKey = func() []byte {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return k
}()

// maskSecret replaces each value under data and stringData of a core Secret with a hash.
func maskSecret(n *yaml.RNode) error {
	if n.GetKind() != "Secret" || n.GetApiVersion() != "v1" {
		return nil
	}
	for _, field := range []string{"data", "stringData"} {
		m, err := n.Pipe(yaml.Lookup(field))
		if err != nil || m == nil {
			continue
		}
		if err := m.VisitFields(func(f *yaml.MapNode) error {
			mac := hmac.New(sha256.New, maskKey)
			mac.Write([]byte(f.Value.YNode().Value))
			f.Value.YNode().Value = "<hidden " + hex.EncodeToString(mac.Sum(nil))[:12] + ">"
			f.Value.YNode().Style = 0
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}

// Change is one object that differs between two renders.
type Change struct {
	Action    string `json:"action"` // added, removed, changed
	Component string `json:"component"`
	ID        string `json:"id"`
	Diff      string `json:"diff,omitempty"`
}

// Diff compares two renders object by object (by group, kind, namespace and name) and returns
// the changes sorted by ID, each changed object with a unified diff of its YAML.
func Diff(from, to []Object) []Change {
	old := map[string]Object{}
	for _, o := range from {
		old[o.ID] = o
	}
	var out []Change
	seen := map[string]bool{}
	for _, n := range to {
		seen[n.ID] = true
		o, ok := old[n.ID]
		switch {
		case !ok:
			out = append(out, Change{Action: "added", Component: n.Component, ID: n.ID, Diff: unified("", n.YAML, n.ID)})
		case o.YAML != n.YAML:
			out = append(out, Change{Action: "changed", Component: n.Component, ID: n.ID, Diff: unified(o.YAML, n.YAML, n.ID)})
		}
	}
	for _, o := range from {
		if !seen[o.ID] {
			out = append(out, Change{Action: "removed", Component: o.Component, ID: o.ID, Diff: unified(o.YAML, "", o.ID)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func unified(a, b, name string) string {
	d, _ := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A: difflib.SplitLines(a), B: difflib.SplitLines(b),
		FromFile: "a: " + name, ToFile: "b: " + name, Context: 3,
	})
	return d
}
