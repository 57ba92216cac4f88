package bundler

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"oras.land/oras-go/v2/content/memory"

	"github.com/ferrygitops/ferry/bundler/bundlertest"
	"github.com/ferrygitops/ferry/bundles"
)

// TestBuildVendorsAPackagedChart: chart names a .tgz in the tree (what `helm package`
// writes); its files are vendored under chart/ like a chart directory's, version recorded.
func TestBuildVendorsAPackagedChart(t *testing.T) {
	src := bundlertest.WriteTree(t, map[string]string{
		"app/Chart.yaml":        "apiVersion: v2\nname: app\nversion: 2.3.4\n",
		"app/templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: {{ .Release.Name }}}\n",
	})
	ch, err := loader.LoadDir(filepath.Join(src, "app"))
	if err != nil {
		t.Fatal(err)
	}
	dir := bundlertest.WriteTree(t, map[string]string{
		"ferry.yaml": "apiVersion: ferry.dev/v1\nkind: Bundle\nmetadata: {name: tgz}\nspec:\n  version: 1.0.0\n  components:\n    - name: app\n      helm: {chart: ./charts/app-2.3.4.tgz}\n",
	})
	if err := os.MkdirAll(filepath.Join(dir, "charts"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := chartutil.Save(ch, filepath.Join(dir, "charts")); err != nil {
		t.Fatal(err)
	}
	mem := memory.New()
	res, err := Build(t.Context(), mem, Options{Dir: dir, AllowDirty: true, Revision: 1, Created: time.Unix(1_700_000_000, 0)})
	if err != nil {
		t.Fatal(err)
	}
	if v := res.Metadata.Components[0].Helm.Version; v != "2.3.4" {
		t.Fatalf("version %q", v)
	}
	b, err := bundles.Open(t.Context(), mem, res.Descriptor)
	if err != nil {
		t.Fatal(err)
	}
	files, err := b.Layer(t.Context(), mem, 0)
	if err != nil {
		t.Fatal(err)
	}
	if f, ok := files.Get("chart/templates/cm.yaml"); !ok || !strings.Contains(string(f.Data), "ConfigMap") {
		t.Fatalf("layer files %v", files)
	}

	// Not a chart archive: refused, naming the file.
	if err := os.WriteFile(filepath.Join(dir, "charts", "app-2.3.4.tgz"), []byte("not gzip"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Build(t.Context(), memory.New(), Options{Dir: dir, AllowDirty: true, Revision: 2, Created: time.Unix(1_700_000_000, 0)}); err == nil || !strings.Contains(err.Error(), "app-2.3.4.tgz") {
		t.Fatalf("a broken archive: %v", err)
	}
}
