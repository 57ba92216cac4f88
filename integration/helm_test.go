package integration

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/memory"

	"github.com/ferrygitops/ferry/apply/render"
	"github.com/ferrygitops/ferry/bundler"
	"github.com/ferrygitops/ferry/bundler/bundlertest"
	"github.com/ferrygitops/ferry/bundles"
)

// TestBundleVendorsAChartFromARealHelmRepository: a repository made by the real helm CLI
// (helm package, helm repo index) is resolved and vendored at build time, and the bundle
// renders the same objects `helm template` renders.
func TestBundleVendorsAChartFromARealHelmRepository(t *testing.T) {
	ctx := t.Context()
	helm := func(dir string, args ...string) string { return runHelm(t, dir, args...) }
	src := bundlertest.WriteTree(t, map[string]string{
		"podinfo/Chart.yaml":                "apiVersion: v2\nname: podinfo\nversion: 6.5.0\n",
		"podinfo/values.yaml":               "replicaCount: 1\nmessage: hello\n",
		"podinfo/templates/deployment.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}\nspec:\n  replicas: {{ .Values.replicaCount }}\n  selector: {matchLabels: {app: podinfo}}\n  template:\n    metadata: {labels: {app: podinfo}}\n    spec:\n      containers:\n      - name: podinfo\n        image: ghcr.io/stefanprodan/podinfo:6.5.0\n        env: [{name: MSG, value: {{ .Values.message | quote }}}]\n",
	})
	repoDir := t.TempDir()
	helm(src, "package", "podinfo", "-d", repoDir)
	srv := httptest.NewServer(http.FileServer(http.Dir(repoDir)))
	defer srv.Close()
	helm(repoDir, "repo", "index", ".", "--url", srv.URL)

	dir, _ := bundlertest.GitTree(t, map[string]string{
		"ferry.yaml": "apiVersion: ferry.dev/v1\nkind: Bundle\nmetadata: {name: apps}\nspec:\n  version: 1.0.0\n  components:\n" +
			"  - name: podinfo\n    helm:\n      chart: podinfo\n      repository: " + srv.URL + "\n      version: \">=6.0.0 <7.0.0\"\n      targetNamespace: apps\n      values: {replicaCount: 2, message: from-ferry}\n",
	}, time.Date(2026, 11, 7, 0, 0, 0, 0, time.UTC))
	store := memory.New()
	res, err := bundler.Build(ctx, store, bundler.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if v := res.Metadata.Components[0].Helm.Version; v != "6.5.0" {
		t.Fatalf("resolved version %q", v)
	}
	srv.Close()

	b, err := bundles.Open(ctx, store, res.Descriptor)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := render.FromBundle(ctx, store, b, 0)
	if err != nil {
		t.Fatal(err)
	}
	ours, _ := render.AsYAML(objs)
	// The real helm, on the same chart with the same values and release name.
	theirs := helm(src, "template", "apps-podinfo", "./podinfo", "--namespace", "apps", "--set", "replicaCount=2", "--set", "message=from-ferry")
	for _, want := range []string{"name: apps-podinfo", "replicas: 2", "from-ferry"} {
		if !strings.Contains(string(ours), want) || !strings.Contains(theirs, want) {
			t.Errorf("%q: in ferry's render %v, in helm's %v\nferry:\n%s\nhelm:\n%s", want,
				strings.Contains(string(ours), want), strings.Contains(theirs, want), ours, theirs)
		}
	}
}

// TestBundleVendorsAnOCIChartPushedByHelm: `helm push` stores a chart in the testbed registry;
// the bundler resolves a version range against its tags and vendors the chart layer.
func TestBundleVendorsAnOCIChartPushedByHelm(t *testing.T) {
	ctx := t.Context()
	work := t.TempDir()
	helm := func(args ...string) string { return runHelm(t, work, args...) }
	for _, v := range []string{"0.9.0", "1.0.0", "1.1.0", "2.0.0"} {
		chartDir := filepath.Join(work, "src-"+v, "cache")
		for name, data := range map[string]string{
			"Chart.yaml":               "apiVersion: v2\nname: cache\nversion: " + v + "\n",
			"values.yaml":              "size: 1Gi\n",
			"templates/configmap.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cache}\ndata: {size: {{ .Values.size }}, chart: \"{{ .Chart.Version }}\"}\n",
		} {
			p := filepath.Join(chartDir, filepath.FromSlash(name))
			os.MkdirAll(filepath.Dir(p), 0o755)
			os.WriteFile(p, []byte(data), 0o644)
		}
		helm("package", chartDir, "-d", work)
		helm("push", filepath.Join(work, "cache-"+v+".tgz"), "oci://"+tb.Registry+"/charts", "--plain-http")
	}
	dir, _ := bundlertest.GitTree(t, map[string]string{
		"ferry.yaml": "apiVersion: ferry.dev/v1\nkind: Bundle\nmetadata: {name: cache}\nspec:\n  version: 1.0.0\n  components:\n" +
			"  - name: cache\n    helm:\n      chart: cache\n      repository: oci://" + tb.Registry + "/charts\n      version: \"~1\"\n      values: {size: 5Gi}\n",
	}, time.Date(2026, 11, 9, 0, 0, 0, 0, time.UTC))
	store := memory.New()
	res, err := bundler.Build(ctx, store, bundler.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if v := res.Metadata.Components[0].Helm.Version; v != "1.1.0" {
		t.Fatalf("resolved %q, want 1.1.0 (highest 1.x)", v)
	}
	b, err := bundles.Open(ctx, store, res.Descriptor)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := render.FromBundle(ctx, store, b, 0)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := render.AsYAML(objs)
	if !strings.Contains(string(out), "size: 5Gi") || !strings.Contains(string(out), "chart: 1.1.0") {
		t.Fatalf("rendered:\n%s", out)
	}
}

// TestFromFluxOCISources: a Kustomization whose source is an OCIRepository (an artifact as
// `flux push artifact` stores it) and a HelmRelease whose chartRef is an OCIRepository (a chart
// pushed with `helm push`) are both vendored from the testbed registry.
func TestFromFluxOCISources(t *testing.T) {
	ctx := t.Context()
	work := t.TempDir()
	// The Flux artifact: a tar+gzip of a kustomize directory, layer type of flux push.
	tree := bundlertest.WriteTree(t, map[string]string{
		"kustomization.yaml": "resources: [cm.yaml]\n",
		"cm.yaml":            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: from-oci, namespace: apps}\n",
	})
	var layer bytes.Buffer
	if err := bundles.PackDir(tree, &layer); err != nil {
		t.Fatal(err)
	}
	addr, _ := bundles.ParseAddress("oci://" + tb.Registry + "/artifacts/apps:1.2.0")
	repo, err := bundles.Options{}.Repository(addr)
	if err != nil {
		t.Fatal(err)
	}
	ld := content.NewDescriptorFromBytes("application/vnd.cncf.flux.content.v1.tar+gzip", layer.Bytes())
	if err := repo.Push(ctx, ld, bytes.NewReader(layer.Bytes())); err != nil {
		t.Fatal(err)
	}
	md, err := oras.PackManifest(ctx, repo, oras.PackManifestVersion1_1, "application/vnd.cncf.flux.config.v1+json",
		oras.PackManifestOptions{Layers: []ocispec.Descriptor{ld}})
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Tag(ctx, md, "1.2.0"); err != nil {
		t.Fatal(err)
	}
	// The chart, pushed by the real helm.
	chartDir := filepath.Join(work, "cache")
	os.MkdirAll(filepath.Join(chartDir, "templates"), 0o755)
	os.WriteFile(filepath.Join(chartDir, "Chart.yaml"), []byte("apiVersion: v2\nname: cache\nversion: 3.1.0\n"), 0o644)
	os.WriteFile(filepath.Join(chartDir, "templates", "cm.yaml"), []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cache}\ndata: {v: \"{{ .Chart.Version }}\"}\n"), 0o644)
	runHelm(t, work, "package", chartDir, "-d", work)
	runHelm(t, work, "push", filepath.Join(work, "cache-3.1.0.tgz"), "oci://"+tb.Registry+"/charts-oci", "--plain-http")
	dir, _ := bundlertest.GitTree(t, map[string]string{
		"clusters/edge/sources.yaml": `apiVersion: source.toolkit.fluxcd.io/v1beta2
kind: OCIRepository
metadata: {name: apps, namespace: flux-system}
spec:
  url: oci://` + tb.Registry + `/artifacts/apps
  ref: {semver: ">=1.0.0"}
---
apiVersion: source.toolkit.fluxcd.io/v1beta2
kind: OCIRepository
metadata: {name: cache-chart, namespace: flux-system}
spec:
  url: oci://` + tb.Registry + `/charts-oci/cache
  ref: {semver: "~3.1"}
  layerSelector: {mediaType: application/vnd.cncf.helm.chart.content.v1.tar+gzip}
`,
		"clusters/edge/apps.yaml": `apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: apps, namespace: flux-system}
spec:
  path: ./
  sourceRef: {kind: OCIRepository, name: apps}
---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: cache, namespace: flux-system}
spec:
  chartRef: {kind: OCIRepository, name: cache-chart}
`,
	}, time.Date(2026, 11, 11, 0, 0, 0, 0, time.UTC))
	store := memory.New()
	res, err := bundler.Build(ctx, store, bundler.Options{Dir: dir, FromFlux: filepath.Join(dir, "clusters", "edge"), Name: "edge", Version: "1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := bundles.Open(ctx, store, res.Descriptor)
	if err != nil {
		t.Fatal(err)
	}
	renders := map[string]string{}
	for i, c := range b.Metadata.Components {
		objs, err := render.FromBundle(ctx, store, b, i)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := render.AsYAML(objs)
		renders[c.Name] = string(out)
	}
	if !strings.Contains(renders["apps"], "name: from-oci") || !strings.Contains(renders["cache"], "v: 3.1.0") {
		t.Fatalf("renders: %v", renders)
	}
}

// runHelm runs the real helm CLI in dir, with its cache, config and data kept there.
func runHelm(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), tb.Bin("helm"), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+filepath.Join(dir, ".cache"), "HELM_CONFIG_HOME="+filepath.Join(dir, ".config"), "HELM_DATA_HOME="+filepath.Join(dir, ".data"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
