package bundler

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"oras.land/oras-go/v2/content/memory"

	"github.com/ferrygitops/ferry/apply/render"
	"github.com/ferrygitops/ferry/bundler/bundlertest"
	"github.com/ferrygitops/ferry/bundles"
)

// chartArchive makes a chart .tgz the way `helm package` lays it out: <name>/Chart.yaml, ….
func chartArchive(t *testing.T, name, version string, extra map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	files := map[string]string{
		"Chart.yaml":               fmt.Sprintf("apiVersion: v2\nname: %s\nversion: %s\n", name, version),
		"values.yaml":              "color: blue\n",
		"templates/configmap.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: " + name + "}\ndata: {version: \"{{ .Chart.Version }}\", color: {{ .Values.color }}}\n",
	}
	for k, v := range extra {
		files[k] = v
	}
	for n, data := range files {
		tw.WriteHeader(&tar.Header{Name: name + "/" + n, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg})
		tw.Write([]byte(data))
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

// chartRepo serves index.yaml and the archives of the given versions of chart "web".
func chartRepo(t *testing.T, versions []string, corrupt bool) *httptest.Server {
	t.Helper()
	archives := map[string][]byte{}
	var index strings.Builder
	index.WriteString("apiVersion: v1\nentries:\n  web:\n")
	for _, v := range versions {
		a := chartArchive(t, "web", v, nil)
		sum := sha256.Sum256(a)
		name := "web-" + v + ".tgz"
		if corrupt {
			a = chartArchive(t, "web", v, map[string]string{"templates/evil.yaml": "kind: ClusterRoleBinding\n"})
		}
		archives["/charts/"+name] = a
		fmt.Fprintf(&index, "  - name: web\n    version: %s\n    digest: %s\n    urls: [charts/%s]\n", v, hex.EncodeToString(sum[:]), name)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/index.yaml" {
			w.Write([]byte(index.String()))
			return
		}
		if a, ok := archives[r.URL.Path]; ok {
			w.Write(a)
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func repoTree(t *testing.T, repoURL, versionRange string) string {
	dir, _ := bundlertest.GitTree(t, map[string]string{
		"ferry.yaml": "apiVersion: ferry.dev/v1\nkind: Bundle\nmetadata: {name: edge}\nspec:\n  version: 1.0.0\n  components:\n" +
			"  - name: web\n    helm:\n      chart: web\n      repository: " + repoURL + "\n      version: \"" + versionRange + "\"\n      values: {color: green}\n",
	}, time.Date(2026, 11, 6, 0, 0, 0, 0, time.UTC))
	return dir
}

func TestBuildVendorsARepositoryChart(t *testing.T) {
	srv := chartRepo(t, []string{"1.0.0", "1.2.0", "1.3.0-rc.1", "2.0.0"}, false)
	for rng, want := range map[string]string{"~1.0": "1.0.0", "^1.0.0": "1.2.0", "": "2.0.0"} {
		res, err := Build(t.Context(), memory.New(), Options{Dir: repoTree(t, srv.URL, rng)})
		if err != nil {
			t.Fatalf("range %q: %v", rng, err)
		}
		if h := res.Metadata.Components[0].Helm; h.Version != want || h.Repository != srv.URL || h.Chart != "chart" {
			t.Fatalf("range %q: helm spec %+v, want version %s", rng, h, want)
		}
	}
	store := memory.New()
	res, err := Build(t.Context(), store, Options{Dir: repoTree(t, srv.URL, "^1.0.0")})
	if err != nil {
		t.Fatal(err)
	}
	srv.Close() // the bundle carries the chart: rendering needs no repository
	b, err := bundles.Open(t.Context(), store, res.Descriptor)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := render.FromBundle(t.Context(), store, b, 0)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := render.AsYAML(objs)
	if !strings.Contains(string(out), `version: 1.2.0`) || !strings.Contains(string(out), "color: green") {
		t.Fatalf("rendered:\n%s", out)
	}
}

func TestBuildRefusesAChartThatDoesNotMatchTheIndexDigest(t *testing.T) {
	srv := chartRepo(t, []string{"1.0.0"}, true)
	_, err := Build(t.Context(), memory.New(), Options{Dir: repoTree(t, srv.URL, "1.0.0")})
	if err == nil || !strings.Contains(err.Error(), "the repository index says") {
		t.Fatalf("err = %v, want a digest mismatch", err)
	}
}

func TestResolveChart(t *testing.T) {
	index := []byte("entries:\n  web:\n  - {version: 1.0.0, urls: [a]}\n  - {version: 1.10.0, urls: [b]}\n  - {version: 1.9.0, urls: [c]}\n  - {version: 2.0.0-beta.1, urls: [d]}\n  - {version: not-semver, urls: [e]}\n")
	for rng, want := range map[string]string{"": "1.10.0", "<1.10": "1.9.0", "1.0.0": "1.0.0", ">=2.0.0-0": "2.0.0-beta.1"} {
		cv, err := resolveChart(index, "web", rng)
		if err != nil || cv.Version != want {
			t.Errorf("range %q: got %v, %v; want %s", rng, cv, err, want)
		}
	}
	if _, err := resolveChart(index, "web", ">3"); err == nil {
		t.Error("an unmatched range resolved")
	}
	if _, err := resolveChart(index, "other", ""); err == nil {
		t.Error("a missing chart resolved")
	}
}

// Found in review: an index may name a chart on another host; without a digest to check it
// against, that is refused (and redirects may not leave the repository's host either).
func TestChartOnAnotherHostNeedsADigest(t *testing.T) {
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(chartArchive(t, "web", "1.0.0", nil))
	}))
	defer elsewhere.Close()
	repo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "apiVersion: v1\nentries:\n  web:\n  - {name: web, version: 1.0.0, urls: [%s/web-1.0.0.tgz]}\n", elsewhere.URL)
	}))
	defer repo.Close()
	_, err := fetchChart(t.Context(), repo.URL, "web", "", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "another host") {
		t.Fatalf("err = %v, want the foreign chart URL refused", err)
	}
}
