package render

import (
	"fmt"
	"strings"
	"testing"

	"github.com/ferrygitops/ferry/bundles"
)

func TestParseRenderedRoundTripsKustomizeOutput(t *testing.T) {
	rm, err := Kustomize(files(
		"kustomization.yaml", "resources: [deploy.yaml, cm.yaml]\nnamespace: web\ncommonLabels: {site: north}\n",
		"deploy.yaml", deploy,
		"cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: tricky}\ndata: {a: \"on\", b: \"0755\", c: \"1e3\", d: \"\", e: \"${X}\"}\n",
	), bundles.KustomizeSpec{Path: "."})
	if err != nil {
		t.Fatal(err)
	}
	out, err := rm.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := ParseRendered(out)
	if err != nil {
		t.Fatal(err)
	}
	again, err := AsYAML(nodes)
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != string(out) {
		t.Fatalf("printed again:\n%s\nkustomize printed:\n%s", again, out)
	}
	for i, res := range rm.Resources() {
		want, _ := res.MarshalJSON()
		got, _ := nodes[i].MarshalJSON()
		if string(got) != string(want) {
			t.Errorf("object %d: %s, built %s", i, got, want)
		}
	}
}

func TestParseRenderedRefusals(t *testing.T) {
	cm := func(name string) string { return "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: " + name + "}\n" }
	tests := []struct{ name, in, want string }{
		{"not YAML", "a: [", "document 1"},
		{"an alias that loops", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: &x [*x]\n", "anchor or alias"},
		{"an anchor", "apiVersion: v1\nkind: ConfigMap\nmetadata: &m {name: x}\n", "anchor or alias"},
		{"a bare scalar", "hello\n", "not an object"},
		{"a list, not an object", "- a\n- b\n", "not an object"},
		{"no kind", "apiVersion: v1\nmetadata: {name: x}\n", "document 1 has no apiVersion, kind or metadata.name"},
		{"no name", "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n", "metadata.name"},
		{"twice", cm("a") + "---\n" + cm("b") + "---\n" + cm("a"), "ConfigMap a appears twice (documents 1 and 3)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseRendered([]byte(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
	t.Run("too many objects", func(t *testing.T) {
		var b strings.Builder
		for i := range MaxRenderedObjects + 1 {
			fmt.Fprintf(&b, "---\n{apiVersion: v1, kind: ConfigMap, metadata: {name: c%d}}\n", i)
		}
		if _, err := ParseRendered([]byte(b.String())); err == nil || !strings.Contains(err.Error(), "over the limit") {
			t.Fatalf("err = %v", err)
		}
	})
	// The same name in two namespaces, or two kinds, is two objects.
	ok := cm("a") + "---\n" + strings.Replace(cm("a"), "{name: a}", "{name: a, namespace: other}", 1) + "---\n" + strings.Replace(cm("a"), "ConfigMap", "Secret", 1)
	if nodes, err := ParseRendered([]byte(ok)); err != nil || len(nodes) != 3 {
		t.Fatalf("%d nodes, %v", len(nodes), err)
	}
}

func FuzzParseRendered(f *testing.F) {
	f.Add([]byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: a, namespace: b}\n"))
	f.Add([]byte("- a\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		nodes, err := ParseRendered(data)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, n := range nodes {
			id := n.GetKind() + "/" + n.GetNamespace() + "/" + n.GetName()
			if n.GetKind() == "" || n.GetName() == "" || seen[id] {
				t.Fatalf("accepted %q", id)
			}
			seen[id] = true
			if _, err := n.MarshalJSON(); err != nil {
				t.Fatalf("accepted an object that does not print as JSON: %v", err)
			}
		}
	})
}
