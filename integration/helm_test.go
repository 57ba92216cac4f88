package integration

import (
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
	helm := func(dir string, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, tb.Bin("helm"), args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+filepath.Join(dir, ".cache"), "HELM_CONFIG_HOME="+filepath.Join(dir, ".config"), "HELM_DATA_HOME="+filepath.Join(dir, ".data"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
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
	ours, _ := objs.AsYaml()
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
	helm := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, tb.Bin("helm"), args...)
		cmd.Dir = work
		cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+filepath.Join(work, ".cache"), "HELM_CONFIG_HOME="+filepath.Join(work, ".config"), "HELM_DATA_HOME="+filepath.Join(work, ".data"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
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
	out, _ := objs.AsYaml()
	if !strings.Contains(string(out), "size: 5Gi") || !strings.Contains(string(out), "chart: 1.1.0") {
		t.Fatalf("rendered:\n%s", out)
	}
}
