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
