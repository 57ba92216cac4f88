package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"oras.land/oras-go/v2/content/memory"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/ferrygitops/ferry/apply"
	"github.com/ferrygitops/ferry/bundler"
	"github.com/ferrygitops/ferry/bundler/bundlertest"
	"github.com/ferrygitops/ferry/bundles"
)

// kitchenSink is a tree that uses what kustomize does across resources and per resource:
// an overlay reaching ../base, namespace, namePrefix, commonLabels and labels, annotations,
// a configMapGenerator and a secretGenerator whose hashed names are fixed up in the
// Deployment, strategic-merge and JSON 6902 patches, a Component, images and replicas,
// a directory without a kustomization, and scalars YAML 1.1 and 1.2 read differently.
func kitchenSink() map[string]string {
	deploy := `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      serviceAccountName: web
      containers:
      - name: web
        image: registry.example.com/web:1.0
        envFrom: [{configMapRef: {name: web-env}}, {secretRef: {name: web-secret}}]
        args: ["--replicas=${REPLICAS}", "--site=${SITE_ID:=nowhere}"]
`
	tricky := `apiVersion: v1
kind: ConfigMap
metadata: {name: tricky}
data:
  yes: "on"
  octal: "0755"
  hex: "0x1F"
  exp: "1e3"
  empty: ""
  multiline: |
    line one
    line two: with colon
  dollar: "$${NOT_A_VAR}"
  var: "${SITE_ID}"
`
	return map[string]string{
		"ferry.yaml": `apiVersion: ferry.dev/v1
kind: Bundle
metadata: {name: sink}
spec:
  version: 1.0.0
  components:
    - name: plain
      kustomize: {path: ./plain}
    - name: overlay
      kustomize:
        path: ./overlays/site
        postBuild:
          substitute: {REPLICAS: "3", SITE_ID: "north-7"}
    - name: flux-fields
      kustomize:
        path: ./overlays/site
        targetNamespace: moved
        commonMetadata: {labels: {owner: platform}, annotations: {note: "from ferry.yaml"}}
        patches:
          - patch: |
              - op: replace
                path: /spec/replicas
                value: 4
            target: {kind: Deployment}
        postBuild:
          substitute: {REPLICAS: "on", SITE_ID: "007"}
`,
		"plain/a.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: plain}\n---\n" + tricky,
		"plain/b.yml":  "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: web, namespace: plain}\n",
		"base/kustomization.yaml": "resources: [deploy.yaml, svc.yaml, sa.yaml, tricky.yaml]\n" +
			"configMapGenerator: [{name: web-env, literals: [MODE=edge, 'FLAG=on']}]\n",
		"base/deploy.yaml": deploy,
		"base/svc.yaml":    "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}\n",
		"base/sa.yaml":     "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: web}\n",
		"base/tricky.yaml": tricky,
		"components/monitoring/kustomization.yaml": "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\n" +
			"patches: [{patch: '[{\"op\": \"add\", \"path\": \"/metadata/annotations\", \"value\": {\"prometheus.io/scrape\": \"true\"}}]', target: {kind: Service}}]\n",
		"overlays/site/kustomization.yaml": `resources: [../../base, extra.yaml]
components: [../../components/monitoring]
namespace: site
namePrefix: edge-
commonLabels: {site: north}
labels: [{pairs: {tier: web}, includeSelectors: false}]
commonAnnotations: {owner: "team-a"}
secretGenerator: [{name: web-secret, literals: [TOKEN=not-a-real-token]}]
patches:
  - path: replicas.yaml
  - target: {kind: Service, name: web}
    patch: '[{"op": "replace", "path": "/spec/ports/0/port", "value": 8080}]'
images: [{name: registry.example.com/web, newTag: "1.1"}]
replicas: [{name: web, count: 2}]
`,
		"overlays/site/replicas.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n    spec:\n      containers: [{name: web, resources: {limits: {memory: 64Mi}}}]\n",
		"overlays/site/extra.yaml":    "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: web}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}\nsubjects: [{kind: ServiceAccount, name: web, namespace: default}]\n",
	}
}

// manyConfigMaps writes n ConfigMaps over a few files of one plain component.
func manyConfigMaps(n int) map[string]string {
	files := map[string]string{"ferry.yaml": "apiVersion: ferry.dev/v1\nkind: Bundle\nmetadata: {name: many}\nspec:\n  version: 1.0.0\n  components: [{name: cms, kustomize: {path: ./cms}}]\n"}
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm-%05d, namespace: many}\ndata: {index: \"%d\", mode: edge}\n", i, i)
		if i%250 == 249 || i == n-1 {
			files[fmt.Sprintf("cms/part-%03d.yaml", i/250)] = b.String()
			b.Reset()
		}
	}
	return files
}

// TestRenderedLayerIsKustomizeBuild: what the bundler carries as a component's rendered layer
// is byte for byte what the real `kustomize build` prints for the component's directory, and
// the node's objects from it equal, object for object, the node's objects from building the
// component's files again (a bundle built with --rendered=false), variables substituted or
// kept, for the example bundle, a tree using what kustomize does across resources, a plain
// tree of 600 ConfigMaps and the Flux guide's repository.
func TestRenderedLayerIsKustomizeBuild(t *testing.T) {
	examples, err := filepath.Abs("../bundles/examples/edge-site")
	if err != nil {
		t.Fatal(err)
	}
	exampleFiles := map[string]string{}
	if err := filepath.Walk(examples, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(examples, p)
		exampleFiles[filepath.ToSlash(rel)] = string(b)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	trees := map[string]map[string]string{
		"edge-site":    exampleFiles,
		"kitchen-sink": kitchenSink(),
		"600-cms":      manyConfigMaps(600),
	}
	when := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	for name, files := range trees {
		t.Run(name, func(t *testing.T) {
			dir, _ := bundlertest.GitTree(t, files, when)
			compareRenderedPaths(t, dir, bundler.Options{Dir: dir})
		})
	}
	t.Run("flux-guide", func(t *testing.T) {
		dir := fluxGuideRepo(t)
		compareRenderedPaths(t, dir, bundler.Options{Dir: dir, FromFlux: filepath.Join(dir, "clusters", "production"), Name: "production", Version: "1.0.0"})
	})
}

// compareRenderedPaths builds the tree with and without rendered layers and checks both
// node paths and the kustomize CLI agree.
func compareRenderedPaths(t *testing.T, dir string, opts bundler.Options) {
	t.Helper()
	ctx := t.Context()
	open := func(noRendered bool) (*memory.Store, *bundles.Bundle) {
		store := memory.New()
		o := opts
		o.NoRendered = noRendered
		res, err := bundler.Build(ctx, store, o)
		if err != nil {
			t.Fatal(err)
		}
		b, err := bundles.Open(ctx, store, res.Descriptor)
		if err != nil {
			t.Fatal(err)
		}
		return store, b
	}
	rs, rb := open(false)
	bs, bb := open(true)
	carried := 0
	for i, c := range rb.Metadata.Components {
		_, has := rb.Rendered(i)
		if has != c.CanRender() {
			t.Fatalf("%s: rendered layer %v, want %v", c.Name, has, c.CanRender())
		}
		if _, ok := bb.Rendered(i); ok {
			t.Fatalf("%s: a rendered layer in a bundle built with NoRendered", c.Name)
		}
		if !has {
			continue
		}
		carried++
		k := c.Kustomize
		plain := k.TargetNamespace == "" && len(k.Patches) == 0 && k.CommonMetadata == nil
		if plain {
			// The layer itself is kustomize build's output of the directory (the bundler's
			// copy of it: the component's path, relative to the directory holding ferry.yaml
			// or the repository, is not in the signed config, so take it from the layer).
			y, err := rb.RenderedYAML(ctx, rs, i)
			if err != nil {
				t.Fatal(err)
			}
			want := kustomizeBuildLayer(t, rb, rs, i)
			// Object for object, each printed the same; not in the same order: the CLI
			// sorts kinds (its legacy order), the library as Flux's kustomize-controller
			// calls it (and Ferry) does not, and the applier orders objects itself.
			g, w := documents(t, y), documents(t, want)
			if len(g) != len(w) {
				t.Errorf("%s: %d objects in the rendered layer, kustomize build printed %d", c.Name, len(g), len(w))
			}
			for id, doc := range w {
				if g[id] != doc {
					t.Errorf("%s: %s differs from kustomize build:\n%s", c.Name, id, firstDiff([]byte(g[id]), []byte(doc)))
				}
			}
		}
		for _, env := range []apply.Env{
			{Vars: map[string]string{"SITE_ID": "node-1"}},
			{KeepVariables: true},
			{Lenient: true, Namespace: "fallback"},
		} {
			got, err := apply.RenderComponent(ctx, rs, rb, i, env)
			if err != nil {
				t.Fatalf("%s: rendered path: %v", c.Name, err)
			}
			want, err := apply.RenderComponent(ctx, bs, bb, i, env)
			if err != nil {
				t.Fatalf("%s: build path: %v", c.Name, err)
			}
			if len(got) != len(want) {
				t.Fatalf("%s: %d objects from the rendered layer, %d built", c.Name, len(got), len(want))
			}
			for j := range got {
				if !reflect.DeepEqual(got[j].Object, want[j].Object) {
					t.Errorf("%s: object %d differs:\nrendered: %v\nbuilt:    %v", c.Name, j, got[j].Object, want[j].Object)
				}
			}
		}
	}
	if carried == 0 {
		t.Fatal("no component carried a rendered layer")
	}
}

// kustomizeBuildLayer runs the real kustomize CLI over component i's files, written out from
// its (digest-checked) layer, at its kustomize.path, with kustomize-controller's options.
func kustomizeBuildLayer(t *testing.T, b *bundles.Bundle, src *memory.Store, i int) []byte {
	t.Helper()
	files, err := b.Layer(t.Context(), src, i)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	for _, f := range files {
		p := filepath.Join(root, filepath.FromSlash(f.Name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, f.Data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(root, filepath.FromSlash(b.Metadata.Components[i].Kustomize.Path))
	if !hasKustomization(dir) {
		// As Flux and the node do for a directory of plain manifests.
		var names []string
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if n := e.Name(); !e.IsDir() && (strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml")) {
				names = append(names, n)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte("resources: ["+strings.Join(names, ", ")+"]\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(tb.Bin("kustomize"), "build", "--load-restrictor", "LoadRestrictionsNone", dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kustomize build: %v: %s", err, stderr.String())
	}
	return out
}

// documents splits a YAML stream as kustomize prints it into its objects' texts, by kind,
// namespace and name.
func documents(t *testing.T, stream []byte) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, doc := range strings.Split(string(stream), "\n---\n") {
		var meta struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name, Namespace string
			} `json:"metadata"`
		}
		if err := sigsyaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatalf("%v in:\n%s", err, doc)
		}
		id := meta.Kind + " " + meta.Metadata.Namespace + "/" + meta.Metadata.Name
		if _, dup := out[id]; dup {
			t.Fatalf("%s twice in the stream", id)
		}
		out[id] = strings.TrimSuffix(doc, "\n")
	}
	return out
}

func hasKustomization(dir string) bool {
	for _, n := range []string{"kustomization.yaml", "kustomization.yml", "Kustomization"} {
		if _, err := os.Stat(filepath.Join(dir, n)); err == nil {
			return true
		}
	}
	return false
}

// firstDiff shows where two texts part.
func firstDiff(a, b []byte) string {
	al, bl := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
	for i := 0; i < len(al) || i < len(bl); i++ {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			return fmt.Sprintf("line %d:\n  ferry:     %q\n  kustomize: %q", i+1, x, y)
		}
	}
	return "(equal)"
}
