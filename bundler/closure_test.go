package bundler

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"oras.land/oras-go/v2/content/memory"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/ferrygitops/ferry/apply/render"
	"github.com/ferrygitops/ferry/bundler/bundlertest"
	"github.com/ferrygitops/ferry/bundles"
)

// The Flux guide's shape: apps/staging is an overlay of ../base/podinfo, with a patch file
// and a generator file from elsewhere in the tree.
var overlayTree = map[string]string{
	"apps/base/podinfo/kustomization.yaml": "resources: [deploy.yaml]\n",
	"apps/base/podinfo/deploy.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: podinfo, namespace: podinfo}\nspec:\n  replicas: 1\n" +
		"  selector: {matchLabels: {app: podinfo}}\n  template:\n    metadata: {labels: {app: podinfo}}\n    spec: {containers: [{name: podinfo, image: ghcr.io/stefanprodan/podinfo:6.5.0}]}\n",
	"apps/base/podinfo/README.md": "not part of the build\n",
	"apps/staging/kustomization.yaml": "resources: [../base/podinfo]\npatches: [{path: ../../patches/replicas.yaml}]\n" +
		"configMapGenerator: [{name: site, namespace: podinfo, files: [../../config/site.properties]}]\n",
	"patches/replicas.yaml":  "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: podinfo, namespace: podinfo}\nspec: {replicas: 3}\n",
	"config/site.properties": "site=staging\n",
	"unrelated/big.yaml":     "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}\n",
}

// diskBuild is kustomize build of dir on disk, as kustomize-controller runs it.
func diskBuild(t *testing.T, dir string) string {
	t.Helper()
	rm, err := krusty.MakeKustomizer(render.Options()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := rm.AsYaml()
	return string(out)
}

func TestOverlayReachingBase(t *testing.T) {
	files := map[string]string{"ferry.yaml": "apiVersion: ferry.dev/v1\nkind: Bundle\nmetadata: {name: site}\nspec:\n  version: 1.0.0\n" +
		"  components:\n    - name: podinfo\n      kustomize: {path: ./apps/staging}\n    - name: base\n      kustomize: {path: ./apps/base/podinfo}\n"}
	for k, v := range overlayTree {
		files[k] = v
	}
	dir, _ := bundlertest.GitTree(t, files, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	store := memory.New()
	res, err := Build(t.Context(), store, Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	b, err := bundles.Open(t.Context(), store, res.Descriptor)
	if err != nil {
		t.Fatal(err)
	}
	// The overlay's layer is rooted at the tree (it reaches patches/ and config/), with its
	// directory recorded; the base's layer is its directory alone, as before.
	if p := b.Metadata.Components[0].Kustomize.Path; p != "apps/staging" {
		t.Errorf("overlay path in the layer %q, want apps/staging", p)
	}
	if p := b.Metadata.Components[1].Kustomize.Path; p != "." {
		t.Errorf("base path in the layer %q, want .", p)
	}
	layer, err := b.Layer(t.Context(), store, 0)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range layer {
		names = append(names, f.Name)
	}
	want := "apps/base/podinfo/deploy.yaml apps/base/podinfo/kustomization.yaml apps/staging/kustomization.yaml config/site.properties patches/replicas.yaml"
	if strings.Join(names, " ") != want {
		t.Errorf("overlay layer holds %v, want %s (what it reads, nothing unrelated)", names, want)
	}
	// Object for object what kustomize builds from the tree itself.
	for i, path := range []string{"apps/staging", "apps/base/podinfo"} {
		objs, err := render.FromBundle(t.Context(), store, b, i)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := render.AsYAML(objs)
		if want := diskBuild(t, filepath.Join(dir, path)); string(got) != want {
			t.Errorf("%s renders:\n%s\nkustomize build of the tree:\n%s", path, got, want)
		}
	}
	// The same tree built again gives the same digest.
	again, err := Build(t.Context(), memory.New(), Options{Dir: dir})
	if err != nil || again.Descriptor.Digest != res.Descriptor.Digest {
		t.Fatalf("rebuild: %v, digest %s vs %s", err, again.Descriptor.Digest, res.Descriptor.Digest)
	}
}

func TestOverlayRefusals(t *testing.T) {
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "secret.yaml"), []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: stolen}\n"), 0o644)
	for name, tc := range map[string]struct {
		files map[string]string
		link  [2]string // a symlink to make: name in the tree → target
		want  string
	}{
		"outside the tree": {files: map[string]string{"app/kustomization.yaml": "resources: [../../x]\n"}, want: "outside the tree"},
		"symlink out": {files: map[string]string{"app/kustomization.yaml": "resources: [../base]\n", "base/kustomization.yaml": "resources: [secret.yaml]\n"},
			link: [2]string{"base/secret.yaml", filepath.Join(outside, "secret.yaml")}, want: "outside the tree"},
		"remote base in a base": {files: map[string]string{"app/kustomization.yaml": "resources: [../base]\n",
			"base/kustomization.yaml": "resources:\n  - github.com/org/repo//deploy?ref=v1\n"}, want: "remote base"},
		"patch outside": {files: map[string]string{"app/kustomization.yaml": "resources: []\npatches: [{path: ../../../etc/passwd}]\n"}, want: "outside the tree"},
	} {
		t.Run(name, func(t *testing.T) {
			files := map[string]string{"ferry.yaml": "apiVersion: ferry.dev/v1\nkind: Bundle\nmetadata: {name: site}\nspec:\n  version: 1.0.0\n" +
				"  components:\n    - name: app\n      kustomize: {path: ./app}\n"}
			for k, v := range tc.files {
				files[k] = v
			}
			dir := bundlertest.WriteTree(t, files)
			if tc.link[0] != "" {
				if err := os.Symlink(tc.link[1], filepath.Join(dir, tc.link[0])); err != nil {
					t.Fatal(err)
				}
			}
			_, err := Build(t.Context(), memory.New(), Options{Dir: dir, AllowDirty: true, Revision: 1, Created: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "component app") {
				t.Fatalf("err = %v, want it to name component app and say %q", err, tc.want)
			}
			if tc.want == "outside the tree" && !errors.Is(err, bundles.ErrUnsafePath) {
				t.Errorf("not ErrUnsafePath: %v", err)
			}
		})
	}
}

// --from-flux on the Flux guide's layout: clusters/staging's apps Kustomization points at
// apps/staging, an overlay of ../base/podinfo. It builds, and renders as kustomize does.
func TestBuildFromFluxOverlayReachingBase(t *testing.T) {
	files := map[string]string{
		"clusters/staging/apps.yaml": `apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: apps, namespace: flux-system}
spec:
  interval: 10m
  path: ./apps/staging
  prune: true
  sourceRef: {kind: GitRepository, name: flux-system}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: flux-system, namespace: flux-system}
spec: {url: "https://git.example.com/site.git"}
`,
	}
	for k, v := range overlayTree {
		files[k] = v
	}
	dir, _ := bundlertest.GitTree(t, files, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	store := memory.New()
	res, err := Build(t.Context(), store, Options{Dir: dir, FromFlux: dir + "/clusters/staging", Name: "staging", Version: "1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := bundles.Open(t.Context(), store, res.Descriptor)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Metadata.Components) != 1 || b.Metadata.Components[0].Kustomize.Path != "apps/staging" {
		t.Fatalf("components %+v", b.Metadata.Components)
	}
	// The Kustomization's own namespace travels: its service account and references are there.
	if ns := b.Metadata.Components[0].Kustomize.Namespace; ns != "flux-system" {
		t.Errorf("namespace %q, want the Kustomization's flux-system", ns)
	}
	objs, err := render.FromBundle(t.Context(), store, b, 0)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := render.AsYAML(objs)
	if want := diskBuild(t, filepath.Join(dir, "apps", "staging")); string(got) != want {
		t.Errorf("renders:\n%s\nkustomize build of the tree:\n%s", got, want)
	}
}

// A repository as published (no gotk-sync.yaml, so no flux-system GitRepository) builds once
// its own source is named; a HelmRepository CI cannot reach is taken from a mirror; sources
// Ferry cannot build are refused in one line that says what to do.
func TestBuildFromFluxSourceOverrides(t *testing.T) {
	mirror := chartRepo(t, []string{"1.0.0"}, false)
	files := map[string]string{
		"clusters/staging/apps.yaml": `apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: apps, namespace: flux-system}
spec:
  path: ./apps/staging
  sourceRef: {kind: GitRepository, name: flux-system}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata: {name: charts, namespace: flux-system}
spec: {url: "http://127.0.0.1:1/unreachable"}
---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: web, namespace: flux-system}
spec:
  chart: {spec: {chart: web, version: "1.x", sourceRef: {kind: HelmRepository, name: charts}}}
`,
	}
	for k, v := range overlayTree {
		files[k] = v
	}
	dir, _ := bundlertest.GitTree(t, files, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	opts := Options{Dir: dir, FromFlux: dir + "/clusters/staging", Name: "staging", Version: "1.0.0"}
	_, err := Build(t.Context(), memory.New(), opts)
	if err == nil || !strings.Contains(err.Error(), "GitRepository flux-system/flux-system is not defined") || !strings.Contains(err.Error(), "--source-override flux-system=.") {
		t.Fatalf("no gotk-sync.yaml: %v", err)
	}
	opts.SourceOverrides = map[string]string{"flux-system": dir}
	if _, err = Build(t.Context(), memory.New(), opts); err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("unreachable HelmRepository: %v", err)
	}
	opts.SourceOverrides["flux-system/charts"] = mirror.URL
	res, err := Build(t.Context(), memory.New(), opts)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range res.Metadata.Components {
		got = append(got, c.Name)
		if c.Helm != nil && (c.Helm.Version != "1.0.0" || c.Helm.Namespace != "flux-system") {
			t.Errorf("chart from the mirror: version %q, namespace %q", c.Helm.Version, c.Helm.Namespace)
		}
	}
	if strings.Join(got, ",") != "apps,web" {
		t.Errorf("components %v", got)
	}
	for _, bad := range []map[string]string{{"flux-system": "/nonexistent"}, {"a/b/c": "."}, {"flux-system/charts": dir}} {
		opts.SourceOverrides = bad
		if _, err := Build(t.Context(), memory.New(), opts); err == nil || !strings.Contains(err.Error(), "--source-override") {
			t.Errorf("override %v: %v", bad, err)
		}
	}
	// A Bucket source: one line naming the object and what to do.
	os.WriteFile(filepath.Join(dir, "clusters/staging/bucket.yaml"), []byte(`apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: from-bucket, namespace: flux-system}
spec:
  path: ./
  sourceRef: {kind: Bucket, name: site-bucket}
`), 0o644)
	opts.SourceOverrides, opts.AllowDirty = map[string]string{"flux-system": dir, "flux-system/charts": mirror.URL}, true
	if _, err := Build(t.Context(), memory.New(), opts); err == nil || !strings.Contains(err.Error(), "from-bucket") || !strings.Contains(err.Error(), "Bucket flux-system/site-bucket") || !strings.Contains(err.Error(), "--source-override") {
		t.Fatalf("Bucket: %v", err)
	}
}

// The Flux multi-tenancy example's shape: clusters/production/tenants has a kustomization
// with a patch file beside it that sets serviceAccountName on the tenant's Kustomization. The
// directory is read as its kustomize build: the patch file is not an object of its own, the
// patch applies, and the tenant component lives in its namespace. Without the kustomization,
// the patch file is read as an object and the error names the file.
func TestBuildFromFluxTenantOverlay(t *testing.T) {
	files := map[string]string{
		"clusters/production/flux-system/gotk-sync.yaml": "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata: {name: flux-system, namespace: flux-system}\nspec: {url: \"https://git.example.com/site.git\", ref: {branch: master}}\n",
		"clusters/production/kustomization.yaml":         "resources: [flux-system/gotk-sync.yaml, ../../tenants/team-a]\npatches: [{path: tenant-sa.yaml, target: {kind: Kustomization}}]\n",
		"clusters/production/tenant-sa.yaml":             "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {name: not-used}\nspec: {serviceAccountName: team-a}\n",
		"tenants/team-a/kustomization.yaml":              "resources: [sync.yaml]\n",
		"tenants/team-a/sync.yaml": `apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: team-a, namespace: team-a}
spec:
  path: ./apps/team-a
  targetNamespace: team-a
  sourceRef: {kind: GitRepository, name: flux-system, namespace: flux-system}
`,
		"apps/team-a/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: shop}\n",
	}
	dir, _ := bundlertest.GitTree(t, files, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	res, err := Build(t.Context(), memory.New(), Options{Dir: dir, FromFlux: dir + "/clusters/production", Name: "production", Version: "1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Metadata.Components) != 1 {
		t.Fatalf("components %+v", res.Metadata.Components)
	}
	k := res.Metadata.Components[0].Kustomize
	if res.Metadata.Components[0].Name != "team-a" || k.ServiceAccountName != "team-a" || k.Namespace != "team-a" || k.TargetNamespace != "team-a" {
		t.Fatalf("tenant component %+v", k)
	}
	// Without the kustomization the directory's YAML files are read one by one.
	os.Remove(filepath.Join(dir, "clusters/production/kustomization.yaml"))
	_, err = Build(t.Context(), memory.New(), Options{Dir: dir, FromFlux: dir + "/clusters/production", Name: "production", Version: "1.0.0", AllowDirty: true})
	if err == nil || !strings.Contains(err.Error(), "tenant-sa.yaml:1") || !strings.Contains(err.Error(), "is this file a patch?") {
		t.Fatalf("a patch file read as a Kustomization: %v", err)
	}
}

// Every source kind a HelmRelease or Kustomization may name is built or refused in one line
// naming the object.
func TestFluxSourceKindsRefused(t *testing.T) {
	for kind, want := range map[string]string{
		"Kustomization:ExternalArtifact": "no ArtifactGenerator under",
		"Kustomization:HelmChart":        "cannot take a HelmChart",
		"Kustomization:HelmRepository":   "cannot take a HelmRepository",
		"HelmRelease:Bucket":             "a Bucket source is not built",
		"HelmRelease:HelmChart":          "HelmReleases take charts from",
	} {
		t.Run(kind, func(t *testing.T) {
			obj, src, _ := strings.Cut(kind, ":")
			doc := "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {name: x, namespace: flux-system}\nspec: {path: ./, sourceRef: {kind: " + src + ", name: s}}\n"
			if obj == "HelmRelease" {
				doc = "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {name: x, namespace: flux-system}\nspec: {chart: {spec: {chart: c, sourceRef: {kind: " + src + ", name: s}}}}\n"
			}
			dir := bundlertest.WriteTree(t, map[string]string{"clusters/c/x.yaml": doc})
			_, err := Build(t.Context(), memory.New(), Options{Dir: dir, FromFlux: dir + "/clusters/c", Name: "c", Version: "1.0.0", AllowDirty: true, Revision: 1, Created: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)})
			if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "x") || strings.Count(err.Error(), "\n") > 0 {
				t.Fatalf("err = %v, want one line with %q", err, want)
			}
		})
	}
}
