package bundles

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const goodSpec = `apiVersion: ferry.dev/v1
kind: Bundle
metadata:
  name: edge-apps
spec:
  version: 1.4.0
  components:
    - name: infra
      kustomize:
        path: ./infra
    - name: web
      kustomize:
        path: ./apps/web
        prune: true
        wait: true
        timeout: 5m
        targetNamespace: web
        dependsOn: [{name: infra}]
        postBuild:
          substitute: {SITE: "north-7"}
          substituteFrom: [{kind: ConfigMap, name: site-vars, optional: true}]
        patches:
          - patch: |
              - op: replace
                path: /spec/replicas
                value: 1
            target: {kind: Deployment, name: web}
        decryption: {provider: sops}
`

func TestLoadSpec(t *testing.T) {
	dir := writeTree(t, map[string]string{
		SpecFile:                      goodSpec,
		"infra/kustomization.yaml":    "resources: []\n",
		"apps/web/kustomization.yaml": "resources: []\n",
	})
	s, err := LoadSpec(dir)
	if err != nil {
		t.Fatal(err)
	}
	web := s.Spec.Components[1].Kustomize
	if s.Metadata.Name != "edge-apps" || !web.Prune || web.Timeout != "5m" || web.DependsOn[0].Name != "infra" ||
		web.PostBuild.Substitute["SITE"] != "north-7" || web.Patches[0].Target.Kind != "Deployment" {
		t.Fatalf("parsed %+v", web)
	}
}

func TestSpecRefusals(t *testing.T) {
	tests := []struct {
		name string
		spec string
		want []string // each must appear in the error
	}{
		{"unknown field", strings.Replace(goodSpec, "        prune: true\n", "        prune: true\n        pruen: false\n", 1),
			[]string{"ferry.yaml:15", "spec.components[1].kustomize.pruen", "unknown field"}},
		{"unknown top-level field", goodSpec + "status: {}\n", []string{"ferry.yaml:29: status: unknown field"}},
		{"bad name and version", strings.Replace(strings.Replace(goodSpec, "edge-apps", "Edge_Apps", 1), "1.4.0", "v1.4", 1),
			[]string{"ferry.yaml:4: metadata.name", "ferry.yaml:6: spec.version"}},
		{"path escape", strings.Replace(goodSpec, "./infra", "../../etc", 1),
			[]string{"ferry.yaml:10: spec.components[0].kustomize.path", "leaves the directory"}},
		{"absolute path", strings.Replace(goodSpec, "./infra", "/etc", 1), []string{"must be a relative path"}},
		{"unknown dependency", strings.Replace(goodSpec, "[{name: infra}]", "[{name: db}]", 1), []string{`"db" is not a component`}},
		{"dependency in another namespace, named without it", strings.Replace(strings.Replace(goodSpec, "        path: ./infra\n", "        path: ./infra\n        namespace: flux-system\n", 1), "        prune: true\n", "        prune: true\n        namespace: apps\n", 1),
			[]string{"spec.components[1].kustomize.dependsOn[0].namespace", `means "apps"`, "add namespace: flux-system"}},
		{"dependency named in the wrong namespace", strings.Replace(strings.Replace(goodSpec, "        path: ./infra\n", "        path: ./infra\n        namespace: flux-system\n", 1), "[{name: infra}]", "[{name: infra, namespace: kube-system}]", 1),
			[]string{"dependsOn[0].namespace", `is "kube-system", but component "infra" lives in namespace "flux-system"`}},
		{"cycle", strings.Replace(goodSpec, "        path: ./infra\n", "        path: ./infra\n        dependsOn: [{name: web}]\n", 1),
			[]string{"dependsOn cycle: infra -> web -> infra"}},
		{"bad timeout", strings.Replace(goodSpec, "5m", "soon", 1), []string{"timeout", `"soon"`}},
		{"bad substituteFrom kind", strings.Replace(goodSpec, "kind: ConfigMap", "kind: Pod", 1), []string{"substituteFrom[0].kind"}},
		{"helm repository chart", strings.Replace(goodSpec, "      kustomize:\n        path: ./infra\n", "      helm:\n        chart: https://charts.example.com/x\n", 1),
			[]string{"spec.components[0].helm.chart", "needs repository"}},
		{"helm oci chart URL as chart", strings.Replace(goodSpec, "      kustomize:\n        path: ./infra\n", "      helm:\n        chart: oci://ghcr.io/stefanprodan/charts/podinfo\n", 1),
			[]string{"spec.components[0].helm.chart", "oci:// URL) and chart (the name)"}},
		{"helm repository scheme", strings.Replace(goodSpec, "      kustomize:\n        path: ./infra\n", "      helm:\n        chart: podinfo\n        repository: ftp://charts.example.com\n", 1),
			[]string{"spec.components[0].helm.repository"}},
		{"helm bad range", strings.Replace(goodSpec, "      kustomize:\n        path: ./infra\n", "      helm:\n        chart: podinfo\n        repository: https://charts.example.com\n        version: \">=banana\"\n", 1),
			[]string{"spec.components[0].helm.version"}},
		{"helm unbounded history", strings.Replace(goodSpec, "      kustomize:\n        path: ./infra\n", "      helm:\n        chart: ./charts/x\n        maxHistory: 0\n", 1),
			[]string{"spec.components[0].helm.maxHistory", "at least 1"}},
		{"helm strategy", strings.Replace(goodSpec, "      kustomize:\n        path: ./infra\n", "      helm:\n        chart: ./charts/x\n        upgrade: {remediation: {strategy: reinstall}}\n", 1),
			[]string{"upgrade.remediation.strategy"}},
		{"helm unknown field", strings.Replace(goodSpec, "      kustomize:\n        path: ./infra\n", "      helm:\n        chart: ./charts/x\n        chartRef: x\n", 1),
			[]string{"spec.components[0].helm.chartRef: unknown field"}},
		{"both types", strings.Replace(goodSpec, "      kustomize:\n        path: ./infra\n", "      kustomize:\n        path: ./infra\n      helm:\n        chart: ./charts/x\n", 1),
			[]string{"has both kustomize and helm"}},
		{"duplicate names", strings.Replace(goodSpec, "name: web", "name: infra", 1), []string{"appears twice"}},
		{"bad service account", strings.Replace(goodSpec, "        path: ./infra\n", "        path: ./infra\n        serviceAccountName: Team_A\n", 1),
			[]string{"spec.components[0].kustomize.serviceAccountName", "not a valid service account name"}},
		{"bad substituteFrom namespace", strings.Replace(goodSpec, "kind: ConfigMap,", "kind: ConfigMap, namespace: ../b,", 1),
			[]string{"substituteFrom[0].namespace", "not a valid namespace name"}},
		{"helm bad valuesFrom namespace", strings.Replace(goodSpec, "      kustomize:\n        path: ./infra\n", "      helm:\n        chart: ./charts/x\n        serviceAccountName: ok\n        valuesFrom: [{kind: Secret, name: s, namespace: NS}]\n", 1),
			[]string{"spec.components[0].helm.valuesFrom[0].namespace"}},
		{"two documents", goodSpec + "---\nkind: Bundle\n", []string{"more than one YAML document"}},
		{"wrong kind", strings.Replace(goodSpec, "kind: Bundle", "kind: Kustomization", 1), []string{"ferry.yaml:2: kind"}},
		{"not yaml", "{{{", []string{"ferry.yaml"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := ParseSpec("ferry.yaml", []byte(tt.spec))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestLoadSpecRefusesSymlinkOutOfTree(t *testing.T) {
	outside := t.TempDir()
	dir := writeTree(t, map[string]string{SpecFile: goodSpec, "infra/kustomization.yaml": "resources: []\n"})
	if err := os.MkdirAll(filepath.Join(dir, "apps"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "apps", "web")); err != nil {
		t.Fatal(err)
	}
	_, err := LoadSpec(dir)
	if !errors.Is(err, ErrUnsafePath) && (err == nil || !strings.Contains(err.Error(), "outside")) {
		t.Fatalf("err = %v, want a refusal of the symlink leaving the tree", err)
	}
	if err != nil && !strings.Contains(err.Error(), "spec.components[1].kustomize.path") {
		t.Fatalf("err = %v does not name the field", err)
	}
}

func TestLoadSpecMissingPath(t *testing.T) {
	dir := writeTree(t, map[string]string{SpecFile: goodSpec, "infra/kustomization.yaml": "x: 1\n"})
	_, err := LoadSpec(dir)
	if err == nil || !strings.Contains(err.Error(), "spec.components[1].kustomize.path") {
		t.Fatalf("err = %v, want the missing apps/web named", err)
	}
}

func FuzzParseSpec(f *testing.F) {
	f.Add([]byte(goodSpec))
	f.Add([]byte("apiVersion: ferry.dev/v1\nkind: Bundle\n"))
	f.Add([]byte("spec: {components: [{name: a, kustomize: {path: ../x}}]}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, _, err := ParseSpec("ferry.yaml", b)
		if err != nil {
			return
		}
		for _, c := range s.Spec.Components {
			p := filepath.Clean(c.Kustomize.Path)
			if filepath.IsAbs(p) || p == ".." || strings.HasPrefix(p, "../") {
				t.Fatalf("accepted escaping path %q", c.Kustomize.Path)
			}
		}
		if err := dependencyCycle(s.Spec.Components); err != nil {
			t.Fatalf("accepted a spec with a cycle: %v", err)
		}
	})
}

func TestLoadSpecHelm(t *testing.T) {
	spec := strings.Replace(goodSpec, "      kustomize:\n        path: ./infra\n",
		"      helm:\n        chart: ./charts/ingress\n        releaseName: ingress\n        targetNamespace: ingress\n        valuesFiles: [./values/site.yaml]\n        values: {replicas: 2}\n        install: {createNamespace: true, crds: Create, remediation: {retries: 3}}\n        upgrade: {remediation: {retries: 2, strategy: rollback}}\n        driftDetection: {mode: warn}\n", 1)
	dir := writeTree(t, map[string]string{
		SpecFile:                      spec,
		"charts/ingress/Chart.yaml":   "apiVersion: v2\nname: ingress\nversion: 1.2.3\n",
		"values/site.yaml":            "replicas: 1\n",
		"apps/web/kustomization.yaml": "resources: []\n",
	})
	s, err := LoadSpec(dir)
	if err != nil {
		t.Fatal(err)
	}
	h := s.Spec.Components[0].Helm
	if h == nil || h.ReleaseName != "ingress" || h.Upgrade.Remediation.Strategy != "rollback" || h.Values["replicas"] != 2 {
		t.Fatalf("helm spec %+v", h)
	}
	// A values file that is missing is named.
	os.Remove(filepath.Join(dir, "values", "site.yaml"))
	if _, err := LoadSpec(dir); err == nil || !strings.Contains(err.Error(), "spec.components[0].helm.valuesFiles[0]") {
		t.Fatalf("err = %v", err)
	}
}
