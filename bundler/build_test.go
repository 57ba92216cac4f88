package bundler

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"oras.land/oras-go/v2/content/memory"
	"oras.land/oras-go/v2/content/oci"

	"github.com/ferrygitops/ferry/apply/render"
	"github.com/ferrygitops/ferry/bundler/bundlertest"
	"github.com/ferrygitops/ferry/bundles"
)

const spec = `apiVersion: ferry.dev/v1
kind: Bundle
metadata:
  name: demo
spec:
  version: 0.1.0
  components:
    - name: web
      kustomize:
        path: ./web
        prune: true
`

// gitTree makes a Git repository with ferry.yaml and one component.
func gitTree(t *testing.T) (string, *git.Repository) {
	t.Helper()
	return bundlertest.GitTree(t, map[string]string{
		"ferry.yaml":             spec,
		"web/kustomization.yaml": "resources: [deploy.yaml]\n",
		"web/deploy.yaml":        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n",
	}, time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC))
}

func commit(t *testing.T, repo *git.Repository, msg string, when time.Time) {
	bundlertest.Commit(t, repo, msg, when)
}

func TestBuildIsReproducible(t *testing.T) {
	dir, _ := gitTree(t)
	a, err := Build(t.Context(), memory.New(), Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	// A second build into a fresh OCI layout on disk, an hour later by the clock.
	layout, err := oci.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b, err := Build(t.Context(), layout, Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if a.Descriptor.Digest != b.Descriptor.Digest {
		t.Fatalf("two builds of one commit: %s and %s", a.Descriptor.Digest, b.Descriptor.Digest)
	}
	m := a.Metadata
	if m.Revision != 1 || m.Source.Dirty || len(m.Source.Commit) != 40 ||
		!m.Created.Equal(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)) {
		t.Fatalf("metadata %+v", m)
	}
	if m.Source.URL != "https://git.example.com/site.git" {
		t.Fatalf("source URL %q: credentials must be dropped", m.Source.URL)
	}
	got, err := layout.Resolve(t.Context(), "0.1.0")
	if err != nil || got.Digest != b.Descriptor.Digest {
		t.Fatalf("tag 0.1.0 resolves to %v, %v", got.Digest, err)
	}
	opened, err := bundles.Open(t.Context(), layout, got)
	if err != nil {
		t.Fatal(err)
	}
	files, err := opened.Layer(t.Context(), layout, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := files.Get("deploy.yaml"); !ok {
		t.Fatalf("layer lacks deploy.yaml: %+v", files)
	}
}

func TestBuildRevisionIncreasesWithCommits(t *testing.T) {
	dir, repo := gitTree(t)
	first, err := Build(t.Context(), memory.New(), Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "web", "deploy.yaml"), []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: second}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	commit(t, repo, "second", time.Date(2026, 11, 2, 12, 0, 0, 0, time.UTC))
	second, err := Build(t.Context(), memory.New(), Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if second.Metadata.Revision <= first.Metadata.Revision {
		t.Fatalf("revision %d after %d", second.Metadata.Revision, first.Metadata.Revision)
	}
	if second.Descriptor.Digest == first.Descriptor.Digest {
		t.Fatal("a changed tree built the same digest")
	}
}

func TestBuildRefusesDirtyTree(t *testing.T) {
	dir, _ := gitTree(t)
	if err := os.WriteFile(filepath.Join(dir, "web", "deploy.yaml"), []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: changed}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	store := memory.New()
	_, err := Build(t.Context(), store, Options{Dir: dir})
	if !errors.Is(err, ErrDirty) {
		t.Fatalf("err = %v, want ErrDirty", err)
	}
	if _, err := store.Resolve(t.Context(), "0.1.0"); err == nil {
		t.Fatal("a refused build left a tagged bundle behind")
	}
	res, err := Build(t.Context(), store, Options{Dir: dir, AllowDirty: true})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Metadata.Source.Dirty {
		t.Fatal("a dirty build is not marked dirty")
	}
}

func TestBuildOutsideGit(t *testing.T) {
	dir, _ := gitTree(t)
	if err := os.RemoveAll(filepath.Join(dir, ".git")); err != nil {
		t.Fatal(err)
	}
	if _, err := Build(t.Context(), memory.New(), Options{Dir: dir}); err == nil || !strings.Contains(err.Error(), "not in a Git repository") {
		t.Fatalf("err = %v", err)
	}
	if _, err := Build(t.Context(), memory.New(), Options{Dir: dir, AllowDirty: true}); err == nil || !strings.Contains(err.Error(), "--revision") {
		t.Fatalf("err = %v, want --revision asked for", err)
	}
	res, err := Build(t.Context(), memory.New(), Options{Dir: dir, AllowDirty: true, Revision: 7, Created: time.Unix(1_700_000_000, 0)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Metadata.Revision != 7 || !res.Metadata.Source.Dirty || res.Metadata.Source.Commit != "" {
		t.Fatalf("metadata %+v", res.Metadata)
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://user:token@git.example.com/a.git": "https://git.example.com/a.git",
		"ssh://git@git.example.com/a.git":          "ssh://git.example.com/a.git",
		"git@github.com:org/repo.git":              "git@github.com:org/repo.git",
		"/srv/git/repo":                            "/srv/git/repo",
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestBuildRefusesComponentThatDoesNotRender(t *testing.T) {
	dir, repo := gitTree(t)
	if err := os.WriteFile(filepath.Join(dir, "web", "kustomization.yaml"), []byte("resources:\n- https://example.com/remote.yaml\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	commit(t, repo, "remote base", time.Date(2026, 11, 3, 12, 0, 0, 0, time.UTC))
	store := memory.New()
	_, err := Build(t.Context(), store, Options{Dir: dir})
	if err == nil || !strings.Contains(err.Error(), "component web") || !strings.Contains(err.Error(), "remote base") {
		t.Fatalf("err = %v, want the remote base in component web refused", err)
	}
	if _, err := store.Resolve(t.Context(), "0.1.0"); err == nil {
		t.Fatal("a refused build left a bundle behind")
	}
}

func TestBuildHelmComponent(t *testing.T) {
	dir, _ := bundlertest.GitTree(t, map[string]string{
		"ferry.yaml": "apiVersion: ferry.dev/v1\nkind: Bundle\nmetadata: {name: edge}\nspec:\n  version: 2.0.0\n  components:\n" +
			"  - name: web\n    helm:\n      chart: ./charts/web\n      targetNamespace: edge\n      valuesFiles: [./site/values.yaml]\n      values: {replicas: 3}\n",
		"charts/web/Chart.yaml":               "apiVersion: v2\nname: web\nversion: 0.3.0\n",
		"charts/web/values.yaml":              "replicas: 1\ncolor: blue\n",
		"charts/web/templates/configmap.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\ndata: {replicas: \"{{ .Values.replicas }}\", color: {{ .Values.color }}}\n",
		"site/values.yaml":                    "color: green\n",
	}, time.Date(2026, 11, 5, 0, 0, 0, 0, time.UTC))
	store := memory.New()
	res, err := Build(t.Context(), store, Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	c := res.Metadata.Components[0]
	if c.Type != bundles.TypeHelm || c.Helm.Chart != "chart" || c.Helm.Version != "0.3.0" || c.Helm.ValuesFiles[0] != "values/00-values.yaml" {
		t.Fatalf("component %+v / %+v", c, c.Helm)
	}
	again, err := Build(t.Context(), memory.New(), Options{Dir: dir})
	if err != nil || again.Descriptor.Digest != res.Descriptor.Digest {
		t.Fatalf("helm bundle not reproducible: %v %s %s", err, again.Descriptor.Digest, res.Descriptor.Digest)
	}
	b, err := bundles.Open(t.Context(), store, res.Descriptor)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := render.FromBundle(t.Context(), store, b, 0)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := render.AsYAML(objs)
	if !strings.Contains(string(out), "color: green") || !strings.Contains(string(out), "replicas: \"3\"") {
		t.Fatalf("rendered from the bundle:\n%s", out)
	}
}

func TestBuildRefusesHelmChartSymlinkAndVersionMismatch(t *testing.T) {
	files := map[string]string{
		"ferry.yaml": "apiVersion: ferry.dev/v1\nkind: Bundle\nmetadata: {name: edge}\nspec:\n  version: 2.0.0\n  components:\n" +
			"  - name: web\n    helm:\n      chart: ./charts/web\n      version: 9.9.9\n",
		"charts/web/Chart.yaml":               "apiVersion: v2\nname: web\nversion: 0.3.0\n",
		"charts/web/templates/configmap.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\n",
	}
	dir, _ := bundlertest.GitTree(t, files, time.Date(2026, 11, 5, 0, 0, 0, 0, time.UTC))
	if _, err := Build(t.Context(), memory.New(), Options{Dir: dir}); err == nil || !strings.Contains(err.Error(), `helm.version "9.9.9"`) {
		t.Fatalf("version mismatch: err = %v", err)
	}
	os.Symlink("/etc/passwd", filepath.Join(dir, "charts", "web", "templates", "passwd"))
	if _, err := Build(t.Context(), memory.New(), Options{Dir: dir, AllowDirty: true}); err == nil || !strings.Contains(err.Error(), "symlinks are not allowed") {
		t.Fatalf("symlink in chart: err = %v", err)
	}
}
