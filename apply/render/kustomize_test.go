package render

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ferrygitops/ferry/bundles"
)

func files(kv ...string) bundles.Files {
	var fs bundles.Files
	for i := 0; i+1 < len(kv); i += 2 {
		fs = append(fs, bundles.File{Name: kv[i], Mode: 0o644, Data: []byte(kv[i+1])})
	}
	// Files are sorted by name, as ReadLayer returns them.
	sort.Slice(fs, func(i, j int) bool { return fs[i].Name < fs[j].Name })
	return fs
}

const deploy = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: web:1}]}
`

func TestKustomizeWithFluxFields(t *testing.T) {
	rm, err := Kustomize(files(
		"kustomization.yaml", "resources: [deploy.yaml]\n",
		"deploy.yaml", deploy,
	), bundles.KustomizeSpec{
		TargetNamespace: "web",
		Patches: []bundles.Patch{{
			Patch:  "- op: replace\n  path: /spec/replicas\n  value: 1\n",
			Target: &bundles.Selector{Kind: "Deployment", Name: "web"},
		}},
		CommonMetadata: &bundles.CommonMetadata{Labels: map[string]string{"site": "north-7"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	out, err := rm.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"namespace: web", "replicas: 1", "site: north-7"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestKustomizeWithoutKustomization(t *testing.T) {
	rm, err := Kustomize(files("deploy.yaml", deploy, "svc.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n"), bundles.KustomizeSpec{})
	if err != nil {
		t.Fatal(err)
	}
	if rm.Size() != 2 {
		t.Fatalf("got %d objects, want 2", rm.Size())
	}
}

func TestKustomizeRefusals(t *testing.T) {
	tests := []struct {
		name  string
		files bundles.Files
		want  string
	}{
		{"remote git base", files("kustomization.yaml", "resources:\n- github.com/org/repo//base?ref=v1\n"), "remote base"},
		{"remote https", files("kustomization.yaml", "resources: [https://example.com/all.yaml]\n"), "remote base"},
		{"nested remote", files("kustomization.yaml", "resources: [sub]\n", "sub/kustomization.yaml", "components: [git@github.com:org/repo.git]\n"), "sub/kustomization.yaml"},
		{"escape the component", files("kustomization.yaml", "resources: [../../etc/passwd]\n"), "kustomize build"},
		{"helm inflation", files("kustomization.yaml", "helmCharts: [{name: x, repo: ./c}]\n"), "kustomize build"},
		{"exec function", files("kustomization.yaml", "generators: [gen.yaml]\n", "gen.yaml",
			"apiVersion: v1\nkind: G\nmetadata:\n  name: g\n  annotations:\n    config.kubernetes.io/function: |\n      exec: {path: /bin/sh}\n"), "kustomize build"},
		{"bad yaml", files("kustomization.yaml", "resources: [deploy.yaml]\n", "deploy.yaml", "kind: [\n"), "kustomize build"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Kustomize(tt.files, bundles.KustomizeSpec{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
	_, err := Kustomize(files("kustomization.yaml", "resources: [https://x/y.yaml]\n"), bundles.KustomizeSpec{})
	if !errors.Is(err, ErrRemoteBase) {
		t.Fatalf("err = %v, want ErrRemoteBase", err)
	}
}

// TestKustomizeNeverReadsTheDisk: a kustomization naming an absolute path on the node finds
// nothing, because kustomize only sees the component's files.
func TestKustomizeNeverReadsTheDisk(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "node-secret.yaml")
	if err := os.WriteFile(secret, []byte("apiVersion: v1\nkind: Secret\nmetadata: {name: stolen}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rm, err := Kustomize(files("kustomization.yaml", "resources: ["+secret+"]\n"), bundles.KustomizeSpec{})
	if err == nil {
		out, _ := rm.AsYaml()
		t.Fatalf("kustomize read a file from the node's disk:\n%s", out)
	}
}

func TestImages(t *testing.T) {
	rm, err := Kustomize(files(
		"deploy.yaml", deploy,
		"cron.yaml", "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: c}\nspec:\n  schedule: '@daily'\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          initContainers: [{name: i, image: 'busybox:1.36'}]\n          containers: [{name: c, image: 'web:1'}, {name: d, image: 'registry.local/tool@sha256:0123456789012345678901234567890123456789012345678901234567890123'}]\n",
	), bundles.KustomizeSpec{})
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(Images(rm), " ")
	if got != "busybox:1.36 registry.local/tool@sha256:0123456789012345678901234567890123456789012345678901234567890123 web:1" {
		t.Fatalf("images: %s", got)
	}
}

// Found in review: kustomize fetches over HTTP from every path-bearing field, and reads keys
// case-insensitively. None of these may reach a network; a test server counts requests.
func TestKustomizeNeverFetches(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Write([]byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: pwned}\n"))
	}))
	defer srv.Close()
	u := srv.URL + "/x.yaml"
	cm := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {a: b}\n"
	for name, k := range map[string]string{
		"capitalised Resources": "Resources:\n- " + u + "\n",
		"patch path":            "resources: [cm.yaml]\npatches:\n- path: " + u + "\n",
		"patchesStrategicMerge": "resources: [cm.yaml]\npatchesStrategicMerge:\n- " + u + "\n",
		"generator file":        "configMapGenerator:\n- name: g\n  files: [" + u + "]\n",
		"generator key=file":    "configMapGenerator:\n- name: g\n  files: [k=" + u + "]\n",
		"openapi":               "resources: [cm.yaml]\nopenapi:\n  path: " + u + "\n",
		"crds":                  "resources: [cm.yaml]\ncrds: [" + u + "]\n",
		"configurations":        "resources: [cm.yaml]\nconfigurations: [" + u + "]\n",
		"transformers":          "resources: [cm.yaml]\ntransformers: [" + u + "]\n",
		"replacements":          "resources: [cm.yaml]\nreplacements:\n- path: " + u + "\n",
		"remote base, any host": "resources:\n- example.com/org/repo//base?ref=v1\n",
		"git:: base":            "resources:\n- git::https://example.com/org/repo\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Kustomize(files("kustomization.yaml", k, "cm.yaml", cm), bundles.KustomizeSpec{})
			if !errors.Is(err, ErrRemoteBase) {
				t.Errorf("err = %v, want ErrRemoteBase", err)
			}
		})
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("kustomize made %d requests", n)
	}
	// Data that merely contains a URL is still fine.
	if _, err := Kustomize(files("kustomization.yaml", "configMapGenerator:\n- name: g\n  literals: [URL=http://svc:8080/api]\n"), bundles.KustomizeSpec{}); err != nil {
		t.Fatalf("a literal holding a URL: %v", err)
	}
}
