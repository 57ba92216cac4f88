package integration

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"testing"
	"time"

	"oras.land/oras-go/v2/content/memory"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/ferrygitops/ferry/apply/render"
	"github.com/ferrygitops/ferry/bundler"
	"github.com/ferrygitops/ferry/bundler/bundlertest"
	"github.com/ferrygitops/ferry/bundles"
)

// The Flux guide's repository shape, written by the test: clusters/{staging,production},
// infrastructure/{controllers,configs}, apps/base with staging and production overlays that
// reach ../base, a shared component and a patch file outside the overlay.
func fluxGuideRepo(t *testing.T) string {
	t.Helper()
	ks := func(name, path, deps string) string {
		return fmt.Sprintf(`apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: %s, namespace: flux-system}
spec:
  interval: 1h
  path: %s
  prune: true
  sourceRef: {kind: GitRepository, name: flux-system}
%s---
`, name, path, deps)
	}
	sync := "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata: {name: flux-system, namespace: flux-system}\nspec: {url: \"https://git.example.com/site.git\", ref: {branch: master}}\n"
	files := map[string]string{}
	for _, env := range []string{"staging", "production"} {
		files["clusters/"+env+"/infrastructure.yaml"] = ks("infra-controllers", "./infrastructure/controllers", "") +
			ks("infra-configs", "./infrastructure/configs", "  dependsOn: [{name: infra-controllers}]\n")
		files["clusters/"+env+"/apps.yaml"] = ks("apps", "./apps/"+env, "  dependsOn: [{name: infra-configs}]\n")
		files["clusters/"+env+"/flux-system/gotk-sync.yaml"] = sync
	}
	files["infrastructure/controllers/kustomization.yaml"] = "resources: [ns.yaml]\n"
	files["infrastructure/controllers/ns.yaml"] = "apiVersion: v1\nkind: Namespace\nmetadata: {name: ingress}\n"
	files["infrastructure/configs/kustomization.yaml"] = "resources: [../../components/cluster-config]\n"
	files["components/cluster-config/kustomization.yaml"] = "resources: [cm.yaml]\n"
	files["components/cluster-config/cm.yaml"] = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cluster-config, namespace: default}\ndata: {tier: edge}\n"
	files["apps/base/podinfo/kustomization.yaml"] = "namespace: podinfo\nresources: [ns.yaml, deploy.yaml]\n"
	files["apps/base/podinfo/ns.yaml"] = "apiVersion: v1\nkind: Namespace\nmetadata: {name: podinfo}\n"
	files["apps/base/podinfo/deploy.yaml"] = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: podinfo}\nspec:\n  replicas: 1\n" +
		"  selector: {matchLabels: {app: podinfo}}\n  template:\n    metadata: {labels: {app: podinfo}}\n    spec: {containers: [{name: podinfo, image: ghcr.io/stefanprodan/podinfo:6.5.0}]}\n"
	files["apps/staging/kustomization.yaml"] = "resources: [../base/podinfo]\npatches: [{path: podinfo-values.yaml}]\n"
	files["apps/staging/podinfo-values.yaml"] = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: podinfo, namespace: podinfo}\nspec: {replicas: 2}\n"
	files["apps/production/kustomization.yaml"] = "resources: [../base/podinfo]\npatches: [{path: ../../patches/production-replicas.yaml}]\n" +
		"configMapGenerator: [{name: podinfo-env, namespace: podinfo, envs: [../../config/production.env]}]\n"
	files["patches/production-replicas.yaml"] = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: podinfo, namespace: podinfo}\nspec: {replicas: 5}\n"
	files["config/production.env"] = "LEVEL=info\nSITE=prod\n"
	dir, _ := bundlertest.GitTree(t, files, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	return dir
}

// objectsOf splits a multi-document YAML stream into objects keyed by kind/namespace/name.
func objectsOf(t *testing.T, stream []byte) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for _, doc := range bytes.Split(stream, []byte("\n---\n")) {
		var m map[string]any
		if err := sigsyaml.Unmarshal(doc, &m); err != nil {
			t.Fatalf("%v in:\n%s", err, doc)
		}
		if m == nil {
			continue
		}
		meta, _ := m["metadata"].(map[string]any)
		out[fmt.Sprintf("%s/%v/%v", m["kind"], meta["namespace"], meta["name"])] = m
	}
	return out
}

// TestFluxGuideRendersAsKubectlKustomize: --from-flux on each cluster directory of the guide's
// shape builds, orders components as Flux reconciles them, and every component renders object
// for object what the testbed's `kubectl kustomize` builds from the same directory.
func TestFluxGuideRendersAsKubectlKustomize(t *testing.T) {
	dir := fluxGuideRepo(t)
	for _, env := range []string{"staging", "production"} {
		t.Run(env, func(t *testing.T) {
			store := memory.New()
			res, err := bundler.Build(t.Context(), store, bundler.Options{Dir: dir, FromFlux: filepath.Join(dir, "clusters", env), Name: env, Version: "1.0.0"})
			if err != nil {
				t.Fatal(err)
			}
			b, err := bundles.Open(t.Context(), store, res.Descriptor)
			if err != nil {
				t.Fatal(err)
			}
			order, err := b.Metadata.Order()
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, i := range order {
				names = append(names, b.Metadata.Components[i].Name)
			}
			if fmt.Sprint(names) != "[infra-controllers infra-configs apps]" {
				t.Errorf("reconcile order %v", names)
			}
			paths := map[string]string{"infra-controllers": "infrastructure/controllers", "infra-configs": "infrastructure/configs", "apps": "apps/" + env}
			for i, c := range b.Metadata.Components {
				objs, err := render.FromBundle(t.Context(), store, b, i)
				if err != nil {
					t.Fatalf("%s: %v", c.Name, err)
				}
				got, _ := render.AsYAML(objs)
				kubectl := exec.Command(tb.Bin("kubectl"), "kustomize", "--load-restrictor", "LoadRestrictionsNone", filepath.Join(dir, paths[c.Name]))
				want, err := kubectl.Output()
				if err != nil {
					t.Fatalf("kubectl kustomize %s: %v", paths[c.Name], err)
				}
				g, w := objectsOf(t, got), objectsOf(t, want)
				if !reflect.DeepEqual(g, w) {
					var gk, wk []string
					for k := range g {
						gk = append(gk, k)
					}
					for k := range w {
						wk = append(wk, k)
					}
					sort.Strings(gk)
					sort.Strings(wk)
					t.Errorf("%s: Ferry renders %v\n%s\nkubectl kustomize builds %v\n%s", c.Name, gk, got, wk, want)
				}
			}
		})
	}
}
