package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrygitops/ferry/bundler/bundlertest"
)

// TestPolicyCheck: policy check says which key admits a bundle and under which scope, lists
// each component and object the scope would refuse (exit 4), passes a bundle within it
// (exit 0), and refuses one whose scope requires provenance it lacks, naming the rule.
func TestPolicyCheck(t *testing.T) {
	t.Setenv("COSIGN_PASSWORD", "ci-secret")
	keys := t.TempDir()
	if _, err := runFerry(t, "keys", "generate", "--prefix", filepath.Join(keys, "team")); err != nil {
		t.Fatal(err)
	}
	build := func(files map[string]string) string {
		dir, _ := bundlertest.GitTree(t, files, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
		layout := filepath.Join(t.TempDir(), "layout")
		if out, err := runFerry(t, "bundle", "build", dir, "--to", layout); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if _, err := runFerry(t, "bundle", "sign", layout, "--key", filepath.Join(keys, "team.key")); err != nil {
			t.Fatal(err)
		}
		return layout
	}
	spec := func(comps string) string {
		return "apiVersion: ferry.dev/v1\nkind: Bundle\nmetadata: {name: team-a-web}\nspec:\n  version: 0.2.0\n  components:\n" + comps
	}
	within := build(map[string]string{
		"ferry.yaml":             spec("  - name: web\n    kustomize: {path: ./web, targetNamespace: team-a}\n"),
		"web/kustomization.yaml": "resources: [cm.yaml]\n",
		"web/cm.yaml":            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\n",
	})
	outside := build(map[string]string{
		"ferry.yaml": spec("  - name: web\n    kustomize: {path: ./web, targetNamespace: team-a}\n" +
			"  - name: ops\n    kustomize: {path: ./ops}\n  - name: sys\n    kustomize: {path: ./ops, targetNamespace: kube-system}\n" +
			"  - name: flux\n    kustomize: {path: ./web, namespace: flux-system, targetNamespace: team-a}\n"),
		"web/kustomization.yaml": "resources: [cm.yaml, role.yaml]\n",
		"web/cm.yaml":            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\n",
		"web/role.yaml":          "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: everything}\nrules: []\n",
		"ops/kustomization.yaml": "resources: [cm.yaml]\n",
		"ops/cm.yaml":            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ops, namespace: monitoring}\n",
	})
	policy := filepath.Join(t.TempDir(), "policy.yaml")
	writeOrFail(t, policy, "apiVersion: ferry.dev/v1\nkind: TrustPolicy\nkeys:\n- name: team-a\n  path: "+filepath.Join(keys, "team.pub")+
		"\n  scope: {bundles: [team-a-*], namespaces: [team-a]}\n")

	out, err := runFerry(t, "policy", "check", within, "--policy", policy)
	if err != nil || !strings.Contains(out, "team-a-web 0.2.0 (revision 1): admitted") || !strings.Contains(out, "nothing") {
		t.Fatalf("a bundle within its scope: %v\n%s", err, out)
	}
	js, err := runFerry(t, "policy", "check", outside, "--policy", policy, "-o", "json")
	if exitCode(err) != exitUntrusted {
		t.Fatalf("a bundle outside its scope: exit %d (%v)\n%s", exitCode(err), err, js)
	}
	var rep policyReport
	if err := json.Unmarshal([]byte(js), &rep); err != nil {
		t.Fatalf("%v\n%s", err, js)
	}
	var refused []string
	for _, r := range rep.Refused {
		refused = append(refused, r.Component+"|"+r.Object)
	}
	if got, want := strings.Join(refused, ","), "web|ClusterRole everything,ops|ConfigMap ops,sys|,sys|ConfigMap ops,flux|,flux|ClusterRole everything"; !rep.Admitted || got != want || rep.Signers[0].Scope == nil {
		t.Fatalf("refused %s, want %s (report %+v)", got, want, rep)
	}

	strict := filepath.Join(t.TempDir(), "policy.yaml")
	writeOrFail(t, strict, "apiVersion: ferry.dev/v1\nkind: TrustPolicy\nkeys:\n- name: team-a\n  path: "+filepath.Join(keys, "team.pub")+
		"\n  scope: {bundles: [team-a-*], provenance: {attestors: [team-a]}}\n")
	out, err = runFerry(t, "policy", "check", within, "--policy", strict)
	if exitCode(err) != exitUntrusted || !strings.Contains(out, "refused") || !strings.Contains(out, "team-a requires provenance attested by team-a") {
		t.Fatalf("a scope requiring provenance: exit %d (%v)\n%s", exitCode(err), err, out)
	}
}
