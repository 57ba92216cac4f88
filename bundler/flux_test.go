package bundler

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gitconfig "github.com/go-git/go-git/v5/config"
	"oras.land/oras-go/v2/content/memory"

	"github.com/ferrygitops/ferry/apply/render"
	"github.com/ferrygitops/ferry/bundler/bundlertest"
	"github.com/ferrygitops/ferry/bundles"
)

// fleet is a repository laid out like the Flux guide's fleet, with the HelmRelease for the
// ingress controller and its HelmRepository (served by a test server) in the cluster directory.
func fleet(t *testing.T, helmURL, platformURL string) string {
	t.Helper()
	dir, repo := bundlertest.GitTree(t, map[string]string{
		"clusters/production/flux-system/gotk-sync.yaml": `apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: flux-system, namespace: flux-system}
spec:
  interval: 1m
  url: ssh://git@git.example.com/site.git
  ref: {branch: master}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: flux-system, namespace: flux-system}
spec:
  interval: 10m
  path: ./clusters/production
  prune: true
  sourceRef: {kind: GitRepository, name: flux-system}
`,
		"clusters/production/flux-system/gotk-components.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: flux-system}\n",
		"clusters/production/infrastructure.yaml": `apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: infra-configs, namespace: flux-system}
spec:
  interval: 1h
  retryInterval: 1m
  path: ./infrastructure/configs
  prune: true
  wait: true
  sourceRef: {kind: GitRepository, name: flux-system}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: platform, namespace: flux-system}
spec:
  interval: 1h
  path: ./base
  prune: true
  sourceRef: {kind: GitRepository, name: platform}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: platform, namespace: flux-system}
spec:
  url: ` + platformURL + `
  ref: {branch: master}
`,
		"clusters/production/apps.yaml": `apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: apps, namespace: flux-system}
spec:
  interval: 10m
  dependsOn: [{name: infra-configs}, {name: ingress-nginx}]
  path: ./apps/production
  prune: true
  sourceRef: {kind: GitRepository, name: flux-system}
  postBuild:
    substitute: {cluster_env: production}
`,
		"clusters/production/ingress.yaml": `apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata: {name: charts, namespace: flux-system}
spec:
  interval: 24h
  url: ` + helmURL + `
---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: ingress-nginx, namespace: flux-system}
spec:
  interval: 30m
  releaseName: ingress-nginx
  targetNamespace: ingress-nginx
  dependsOn: [{name: infra-configs}]
  chart:
    spec:
      chart: web
      version: "^1.0.0"
      sourceRef: {kind: HelmRepository, name: charts}
  install: {createNamespace: true, remediation: {retries: 3}}
  values: {color: red}
`,
		"infrastructure/configs/kustomization.yaml": "resources: [ns.yaml]\n",
		"infrastructure/configs/ns.yaml":            "apiVersion: v1\nkind: Namespace\nmetadata: {name: apps}\n",
		"apps/production/kustomization.yaml":        "resources: [cm.yaml]\n",
		"apps/production/cm.yaml":                   "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: env, namespace: apps}\ndata: {env: \"${cluster_env}\"}\n",
	}, time.Date(2026, 11, 8, 0, 0, 0, 0, time.UTC))
	repo.DeleteRemote("origin")
	if _, err := repo.CreateRemote(&gitconfig.RemoteConfig{Name: "origin", URLs: []string{"https://git.example.com/site"}}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestBuildFromFlux(t *testing.T) {
	srv := chartRepo(t, []string{"1.0.0", "1.1.0"}, false)
	platform, _ := bundlertest.GitTree(t, map[string]string{
		"base/kustomization.yaml": "resources: [rbac.yaml]\n",
		"base/rbac.yaml":          "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: platform, namespace: apps}\n",
	}, time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC))
	dir := fleet(t, srv.URL, "file://"+platform)
	res, err := Build(t.Context(), memory.New(), Options{Dir: dir, FromFlux: dir + "/clusters/production", Name: "production", Version: "1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range res.Metadata.Components {
		desc := c.Name + ":" + c.Type
		switch {
		case c.Kustomize != nil:
			desc += ":prune=" + map[bool]string{true: "yes", false: "no"}[c.Kustomize.Prune]
			for _, d := range c.Kustomize.DependsOn {
				desc += ":after=" + d.Name
			}
		case c.Helm != nil:
			desc += ":" + c.Helm.Version + ":" + c.Helm.TargetNamespace
		}
		got = append(got, desc)
	}
	want := "apps:kustomize:prune=yes:after=infra-configs:after=ingress-nginx infra-configs:kustomize:prune=yes ingress-nginx:helm:1.1.0:ingress-nginx platform:kustomize:prune=yes"
	if strings.Join(got, " ") != want {
		t.Fatalf("components:\n got %s\nwant %s", strings.Join(got, " "), want)
	}
	apps := res.Metadata.Components[0].Kustomize
	if apps.PostBuild == nil || apps.PostBuild.Substitute["cluster_env"] != "production" {
		t.Fatalf("postBuild lost: %+v", apps.PostBuild)
	}
	if res.Metadata.Name != "production" || res.Metadata.Source.URL != "https://git.example.com/site" {
		t.Fatalf("metadata %+v", res.Metadata)
	}
}

func TestBuildFromFluxRefusals(t *testing.T) {
	srv := chartRepo(t, []string{"1.0.0"}, false)
	dir := fleet(t, srv.URL, "file:///nonexistent/platform.git")
	_, err := Build(t.Context(), memory.New(), Options{Dir: dir, FromFlux: dir + "/clusters/production", Name: "production", Version: "1.0.0"})
	if err == nil || !strings.Contains(err.Error(), "GitRepository flux-system/platform") {
		t.Fatalf("unreachable Git source: err = %v", err)
	}
	// A source pinned to another ref of this same repository is not built from HEAD: it is
	// cloned at its ref (here the fake origin cannot be reached, so the build fails saying so).
	pinned := fleet(t, srv.URL, "file:///nonexistent/platform.git")
	sync := filepath.Join(pinned, "clusters", "production", "flux-system", "gotk-sync.yaml")
	b, _ := os.ReadFile(sync)
	os.WriteFile(sync, []byte(strings.Replace(string(b), "ref: {branch: master}", "ref: {tag: v1.0.0}", 1)), 0o644)
	_, err = Build(t.Context(), memory.New(), Options{Dir: pinned, FromFlux: pinned + "/clusters/production", Name: "production", Version: "1.0.0", AllowDirty: true})
	if err == nil || !strings.Contains(err.Error(), "GitRepository flux-system/flux-system") {
		t.Fatalf("a tag-pinned source of this repository was built from HEAD: err = %v", err)
	}
	_, err = Build(t.Context(), memory.New(), Options{Dir: dir, FromFlux: dir + "/apps", Name: "x", Version: "1.0.0"})
	if err == nil || !strings.Contains(err.Error(), "no Flux Kustomization or HelmRelease") {
		t.Fatalf("directory without Flux objects: err = %v", err)
	}
	_, err = Build(t.Context(), memory.New(), Options{Dir: dir, FromFlux: dir + "/clusters/production", Name: "Bad_Name", Version: "1.0.0"})
	if err == nil || !strings.Contains(err.Error(), "--name") {
		t.Fatalf("bad bundle name: err = %v", err)
	}
}

// TestBuildFromFluxGuideLayout: as in the Flux guide, the ingress HelmRelease and its
// HelmRepository live inside infrastructure/controllers, applied by a Kustomization. They
// become a Helm component; the Kustomization keeps its other objects and waits for it.
func TestBuildFromFluxGuideLayout(t *testing.T) {
	srv := chartRepo(t, []string{"1.0.0"}, false)
	dir, _ := bundlertest.GitTree(t, map[string]string{
		"clusters/production/infrastructure.yaml": `apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: infra-controllers, namespace: flux-system}
spec:
  interval: 1h
  path: ./infrastructure/controllers
  prune: true
  sourceRef: {kind: GitRepository, name: flux-system}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: apps, namespace: flux-system}
spec:
  dependsOn: [{name: infra-controllers}]
  path: ./apps
  sourceRef: {kind: GitRepository, name: flux-system}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: flux-system, namespace: flux-system}
spec: {url: "https://ci:token@git.example.com/site.git"}
`,
		"infrastructure/controllers/kustomization.yaml": "resources: [ns.yaml, ingress.yaml, monitoring.yaml]\n",
		"infrastructure/controllers/monitoring.yaml": `apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: monitoring, namespace: flux-system}
spec:
  path: ./infrastructure/monitoring
  prune: true
  sourceRef: {kind: GitRepository, name: flux-system}
`,
		"infrastructure/monitoring/kustomization.yaml": "resources: [cm.yaml]\n",
		"infrastructure/monitoring/cm.yaml":            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: prometheus, namespace: ingress-nginx}\n",
		"infrastructure/controllers/ns.yaml":           "apiVersion: v1\nkind: Namespace\nmetadata: {name: ingress-nginx}\n",
		"infrastructure/controllers/ingress.yaml": `apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata: {name: charts, namespace: ingress-nginx}
spec: {url: "` + srv.URL + `"}
---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: ingress-nginx, namespace: ingress-nginx}
spec:
  chart:
    spec: {chart: web, sourceRef: {kind: HelmRepository, name: charts}}
  values: {color: red}
`,
		"apps/kustomization.yaml": "resources: [cm.yaml]\n",
		"apps/cm.yaml":            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app}\n",
	}, time.Date(2026, 11, 8, 0, 0, 0, 0, time.UTC))
	store := memory.New()
	res, err := Build(t.Context(), store, Options{Dir: dir, FromFlux: dir + "/clusters/production", Name: "production", Version: "1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]bundles.Component{}
	for _, c := range res.Metadata.Components {
		byName[c.Name] = c
	}
	if h := byName["ingress-nginx"].Helm; h == nil || h.Version != "1.0.0" {
		t.Fatalf("no helm component for the nested HelmRelease: %+v", res.Metadata.Components)
	}
	// helm-controller installs a HelmRelease without targetNamespace into its own namespace,
	// under its own name.
	if h := byName["ingress-nginx"].Helm; h.TargetNamespace != "ingress-nginx" || h.ReleaseName != "ingress-nginx" {
		t.Fatalf("release %q in %q", h.ReleaseName, h.TargetNamespace)
	}
	// The nested objects come after the Kustomization that holds them (it creates the
	// release's namespace), and what depends on it waits for them too, as in a cluster.
	depsOf := func(c bundles.Component) string { return strings.Join(c.DependsOn(), ",") }
	if got := depsOf(byName["infra-controllers"]); got != "" {
		t.Fatalf("infra-controllers depends on %q, want nothing", got)
	}
	for _, n := range []string{"ingress-nginx", "monitoring"} {
		if got := depsOf(byName[n]); got != "infra-controllers" {
			t.Fatalf("%s depends on %q, want infra-controllers, which applies it in a cluster", n, got)
		}
	}
	if got := depsOf(byName["apps"]); got != "infra-controllers,ingress-nginx,monitoring" {
		t.Fatalf("apps depends on %q: it must wait for what infra-controllers holds too", got)
	}
	if m := byName["monitoring"].Kustomize; m == nil || !m.Prune {
		t.Fatalf("nested Kustomization: %+v", byName["monitoring"])
	}
	b, err := bundles.Open(t.Context(), store, res.Descriptor)
	if err != nil {
		t.Fatal(err)
	}
	renders := map[string]string{}
	for i, c := range b.Metadata.Components {
		objs, err := render.FromBundle(t.Context(), store, b, i)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := render.AsYAML(objs)
		renders[c.Name] = string(out)
	}
	if r := renders["infra-controllers"]; strings.Contains(r, "toolkit.fluxcd.io") || !strings.Contains(r, "kind: Namespace") {
		t.Fatalf("infra-controllers renders:\n%s", r)
	}
	if !strings.Contains(renders["monitoring"], "name: prometheus") {
		t.Fatalf("monitoring renders:\n%s", renders["monitoring"])
	}
}

func TestSameRepo(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		same bool
	}{
		{"https://git.example.com/site.git", "ssh://git@git.example.com/site", true},
		{"git@git.example.com:site.git", "https://ci:token@git.example.com/site/", true},
		{"ssh://git@git.example.com:2222/site.git", "ssh://git@git.example.com:2222/site", true},
		{"ssh://git@git.example.com:2222/site.git", "https://git.example.com/2222/site.git", false},
		{"https://git.example.com/site.git", "https://git.example.com/other.git", false},
		{"", "", false},
	} {
		if got := sameRepo(tt.a, tt.b); got != tt.same {
			t.Errorf("sameRepo(%q, %q) = %v", tt.a, tt.b, got)
		}
	}
}

// TestBuildFromFluxDependsOnNamespaces: a tenant's Kustomization in its own namespace depends
// on the platform's in flux-system. As in Flux, dependsOn without a namespace means the
// tenant's own namespace, so it must say flux-system; the dependency is carried with it.
func TestBuildFromFluxDependsOnNamespaces(t *testing.T) {
	tree := func(dep string) string {
		dir, _ := bundlertest.GitTree(t, map[string]string{
			"clusters/site/infra.yaml": `apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: infra, namespace: flux-system}
spec:
  path: ./infra
  sourceRef: {kind: GitRepository, name: flux-system}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: flux-system, namespace: flux-system}
spec: {url: "https://git.example.com/site.git"}
`,
			"clusters/site/team-a.yaml": `apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: team-a, namespace: apps}
spec:
  dependsOn: [` + dep + `]
  serviceAccountName: team-a
  path: ./tenants/team-a
  sourceRef: {kind: GitRepository, name: flux-system, namespace: flux-system}
`,
			"infra/kustomization.yaml":          "resources: [ns.yaml]\n",
			"infra/ns.yaml":                     "apiVersion: v1\nkind: Namespace\nmetadata: {name: apps}\n",
			"tenants/team-a/kustomization.yaml": "resources: [cm.yaml]\n",
			"tenants/team-a/cm.yaml":            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: team-a}\n",
		}, time.Date(2026, 11, 8, 0, 0, 0, 0, time.UTC))
		return dir
	}
	dir := tree("{name: infra, namespace: flux-system}")
	res, err := Build(t.Context(), memory.New(), Options{Dir: dir, FromFlux: dir + "/clusters/site", Name: "site", Version: "1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	var team *bundles.KustomizeSpec
	for _, c := range res.Metadata.Components {
		if c.Name == "team-a" {
			team = c.Kustomize
		}
	}
	if team == nil || len(team.DependsOn) != 1 || team.DependsOn[0] != (bundles.DependencyRef{Name: "infra", Namespace: "flux-system"}) || team.Namespace != "apps" {
		t.Fatalf("team-a component: %+v", team)
	}

	dir = tree("{name: infra}")
	_, err = Build(t.Context(), memory.New(), Options{Dir: dir, FromFlux: dir + "/clusters/site", Name: "site", Version: "1.0.0"})
	if err == nil || !strings.Contains(err.Error(), "add namespace: flux-system") || !strings.Contains(err.Error(), "team-a.yaml") {
		t.Fatalf("dependsOn without the namespace of a component elsewhere: err = %v", err)
	}
	dir = tree("{name: infra, namespace: kube-system}")
	_, err = Build(t.Context(), memory.New(), Options{Dir: dir, FromFlux: dir + "/clusters/site", Name: "site", Version: "1.0.0"})
	if err == nil || !strings.Contains(err.Error(), `lives in namespace "flux-system"`) {
		t.Fatalf("dependsOn naming the wrong namespace: err = %v", err)
	}
}
