package bundler

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"oras.land/oras-go/v2/content/memory"

	"github.com/ferrygitops/ferry/apply/render"
	"github.com/ferrygitops/ferry/bundler/bundlertest"
	"github.com/ferrygitops/ferry/bundles"
)

// agRepo is a repository whose cluster directory has an ArtifactGenerator composing an
// ExternalArtifact from this repository and a second source (a local copy, named with
// --source-override), and a Kustomization that applies it.
func agRepo(t *testing.T, copyOps string) (dir, configs string) {
	t.Helper()
	dir, _ = bundlertest.GitTree(t, map[string]string{
		"clusters/site/sync.yaml": `apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: flux-system, namespace: flux-system}
spec: {url: "https://git.example.com/site.git"}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: configs, namespace: apps}
spec: {url: "https://git.example.com/configs.git"}
---
apiVersion: source.extensions.fluxcd.io/v1beta1
kind: ArtifactGenerator
metadata: {name: app, namespace: apps}
spec:
  sources:
    - {alias: repo, kind: GitRepository, name: flux-system, namespace: flux-system}
    - {alias: cfg, kind: GitRepository, name: configs}
  artifacts:
    - name: app-composite
      copy:
` + copyOps + `
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: app, namespace: apps}
spec:
  path: ./app
  prune: true
  sourceRef: {kind: ExternalArtifact, name: app-composite}
`,
		"deploy/deploy.yaml":      "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: from-repo}\n",
		"deploy/sub/svc.yaml":     "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: from-repo-sub}\n",
		"kust/kustomization.yaml": "resources: [deploy.yaml, sub/svc.yaml, env.yaml]\n",
	}, time.Date(2026, 11, 8, 0, 0, 0, 0, time.UTC))
	configs = bundlertest.WriteTree(t, map[string]string{
		"envs/prod/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: prod-env}\n",
	})
	return dir, configs
}

const agCopy = `        - {from: "@repo/deploy/**", to: "@artifact/app/"}
        - {from: "@cfg/envs/prod/cm.yaml", to: "@artifact/app/env.yaml"}
        - {from: "@repo/kust/kustomization.yaml", to: "@artifact/app/"}`

func TestBuildFromFluxArtifactGenerator(t *testing.T) {
	dir, configs := agRepo(t, agCopy)
	store := memory.New()
	res, err := Build(t.Context(), store, Options{Dir: dir, FromFlux: dir + "/clusters/site", Name: "site", Version: "1.0.0",
		SourceOverrides: map[string]string{"apps/configs": configs}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := bundles.Open(t.Context(), store, res.Descriptor)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range b.Metadata.Components {
		if c.Name != "app" {
			continue
		}
		objs, err := render.FromBundle(t.Context(), store, b, i)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := render.AsYAML(objs)
		for _, want := range []string{"name: from-repo\n", "name: from-repo-sub", "name: prod-env"} {
			if !strings.Contains(string(out), want) {
				t.Fatalf("composed artifact renders without %q:\n%s", want, out)
			}
		}
		if strings.Contains(string(out), "ArtifactGenerator") {
			t.Fatalf("the ArtifactGenerator itself is in the component:\n%s", out)
		}
		return
	}
	t.Fatalf("no component app: %+v", b.Metadata.Components)
}

func TestFluxArtifactGeneratorRefusals(t *testing.T) {
	for name, tc := range map[string]struct{ ops, want string }{
		"unbuilt field":        {`        - {from: "@repo/deploy/**", to: "@artifact/app/", exclude: ["*.md"]}`, "copy[0].exclude is not built yet"},
		"unknown alias":        {`        - {from: "@nope/deploy/**", to: "@artifact/app/"}`, `no source has the alias "nope"`},
		"escape by to":         {`        - {from: "@repo/deploy/deploy.yaml", to: "@artifact/../../etc/x"}`, "stay inside"},
		"escape by from":       {`        - {from: "@repo/../../etc/passwd", to: "@artifact/app/"}`, "stay inside"},
		"to without @artifact": {`        - {from: "@repo/deploy/**", to: "app/"}`, "must start with @artifact/"},
		"no match":             {`        - {from: "@repo/nothing/*.yaml", to: "@artifact/app/"}`, "no files match"},
	} {
		t.Run(name, func(t *testing.T) {
			dir, configs := agRepo(t, tc.ops)
			_, err := Build(t.Context(), memory.New(), Options{Dir: dir, FromFlux: dir + "/clusters/site", Name: "site", Version: "1.0.0",
				SourceOverrides: map[string]string{"apps/configs": configs}})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "ArtifactGenerator apps/app") {
				t.Fatalf("err = %v, want one naming the generator and %q", err, tc.want)
			}
		})
	}
	// A symlink in a source that leads out of it is not followed.
	dir, configs := agRepo(t, `        - {from: "@cfg/envs/prod/cm.yaml", to: "@artifact/app/env.yaml"}`)
	os.Remove(filepath.Join(configs, "envs", "prod", "cm.yaml"))
	if err := os.Symlink("/etc/passwd", filepath.Join(configs, "envs", "prod", "cm.yaml")); err != nil {
		t.Fatal(err)
	}
	_, err := Build(t.Context(), memory.New(), Options{Dir: dir, FromFlux: dir + "/clusters/site", Name: "site", Version: "1.0.0",
		SourceOverrides: map[string]string{"apps/configs": configs}})
	if err == nil || !strings.Contains(err.Error(), "cm.yaml") {
		t.Fatalf("symlink out of a source: err = %v", err)
	}
}
