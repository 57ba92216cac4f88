package cluster

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"bytes"
	"log/slog"

	"github.com/ferrygitops/ferry/apply"
	"github.com/ferrygitops/ferry/apply/decrypt"
	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/rollout"
	"github.com/ferrygitops/ferry/store"
)

// TestCRDAndCustomResourceInOneComponent: the CRD goes first, is waited for until
// Established, and the custom resource (namespaced, without a namespace in the manifest)
// lands in the component's namespace.
func TestCRDAndCustomResourceInOneComponent(t *testing.T) {
	n := newNode(t, "crd", apply.Options{})
	ctx := ctxTimeout(t, time.Minute)
	crd := `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.ferry.dev}
spec:
  group: example.ferry.dev
  names: {kind: Widget, plural: widgets, singular: widget}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec: {type: object, x-kubernetes-preserve-unknown-fields: true}
`
	n.admit(t, 1, "- name: app\n  kustomize: {path: ./app, targetNamespace: crd-ns, prune: true}\n", map[string]string{
		"app/kustomization.yaml": "resources: [ns.yaml, crd.yaml, widget.yaml]\n",
		"app/ns.yaml":            "apiVersion: v1\nkind: Namespace\nmetadata: {name: crd-ns}\n",
		"app/crd.yaml":           crd,
		"app/widget.yaml":        "apiVersion: example.ferry.dev/v1\nkind: Widget\nmetadata: {name: gear}\nspec: {teeth: 12}\n",
	})
	if _, err := n.eng.Rollout(ctx, "crd", 1); err != nil {
		t.Fatal(err)
	}
	w := n.get(t, gvr("example.ferry.dev", "v1", "widgets"), "crd-ns", "gear")
	if w == nil || w.Object["spec"].(map[string]any)["teeth"] != int64(12) {
		t.Fatalf("widget: %v", w)
	}
}

// TestDependsOnAndSubstitution: "app" depends on "config"; it is rendered only once
// "config" is applied, so its substituteFrom sees the ConfigMap "config" creates. Node
// variables fill what neither sets; substitute overrides both; the annotation turns
// substitution off for one object.
func TestDependsOnAndSubstitution(t *testing.T) {
	n := newNode(t, "deps", apply.Options{Env: apply.Env{Vars: map[string]string{"SITE_ID": "north-7", "GREETING": "from-node"}}})
	ctx := ctxTimeout(t, time.Minute)
	comps := `- name: app
  kustomize:
    path: ./app
    dependsOn: [{name: config}]
    postBuild:
      substitute: {TIER: edge}
      substituteFrom:
        - {kind: ConfigMap, name: vars}
        - {kind: Secret, name: absent, optional: true}
- name: config
  kustomize: {path: ./config}
`
	n.admit(t, 1, comps, map[string]string{
		"config/ns.yaml":   "apiVersion: v1\nkind: Namespace\nmetadata: {name: deps}\n",
		"config/vars.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: vars, namespace: deps}\ndata: {GREETING: from-cluster, TIER: ignored}\n",
		"app/out.yaml":     cm("deps", "out", "${GREETING} ${SITE_ID} ${TIER} ${UNSET:=dflt}"),
		"app/raw.yaml":     "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: raw\n  namespace: deps\n  annotations: {kustomize.toolkit.fluxcd.io/substitute: disabled}\ndata: {value: \"${GREETING}\"}\n",
	})
	// No targetNamespace: substituteFrom is read from the engine's namespace.
	n.eng = mustEngine(t, n, apply.Options{Env: apply.Env{Namespace: "deps", Vars: map[string]string{"SITE_ID": "north-7", "GREETING": "from-node"}}})
	if _, err := n.eng.Rollout(ctx, "deps", 1); err != nil {
		t.Fatal(err)
	}
	if got := n.get(t, configMaps, "deps", "out").Object["data"].(map[string]any)["value"]; got != "from-cluster north-7 edge dflt" {
		t.Fatalf("substituted %q", got)
	}
	if got := n.get(t, configMaps, "deps", "raw").Object["data"].(map[string]any)["value"]; got != "${GREETING}" {
		t.Fatalf("substitution not disabled: %q", got)
	}
}

func mustEngine(t *testing.T, n *node, opts apply.Options) *rollout.Manager {
	t.Helper()
	cfg := *tb.REST
	cfg.WrapTransport = n.reqs.RoundTrip
	opts.PollInterval, opts.FailureWindow = 200*time.Millisecond, time.Second
	ap, err := apply.New(&cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	eng := rollout.New(n.st, ap, rollout.Options{Log: opts.Log})
	return eng
}

// TestHostileBundlesAreRefusedBeforeAnythingIsSent: a dependsOn cycle and a kustomization
// reaching out of its component (a remote base, a ../ path) fail the revision with no write.
func TestHostileBundlesAreRefusedBeforeAnythingIsSent(t *testing.T) {
	cases := map[string]struct {
		comps []bundles.Component
		dirs  []map[string]string
		want  string
	}{
		"cycle": {
			comps: []bundles.Component{
				{Name: "a", Type: bundles.TypeKustomize, Kustomize: &bundles.KustomizeSpec{Path: ".", DependsOn: []bundles.DependencyRef{{Name: "b"}}}},
				{Name: "b", Type: bundles.TypeKustomize, Kustomize: &bundles.KustomizeSpec{Path: ".", DependsOn: []bundles.DependencyRef{{Name: "a"}}}},
			},
			dirs: []map[string]string{{"cm.yaml": cm("default", "x", "1")}, {"cm.yaml": cm("default", "y", "1")}},
			want: "cycle",
		},
		"remote base": {
			comps: []bundles.Component{{Name: "a", Type: bundles.TypeKustomize, Kustomize: &bundles.KustomizeSpec{Path: "."}}},
			dirs:  []map[string]string{{"kustomization.yaml": "resources: [cm.yaml, https://example.com/evil.yaml]\n", "cm.yaml": cm("default", "x", "1")}},
			want:  "remote",
		},
		"escape": {
			comps: []bundles.Component{{Name: "a", Type: bundles.TypeKustomize, Kustomize: &bundles.KustomizeSpec{Path: "."}}},
			dirs:  []map[string]string{{"kustomization.yaml": "resources: [cm.yaml, ../other]\n", "cm.yaml": cm("default", "x", "1")}},
			want:  "..",
		},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			n := newNode(t, "hostile", apply.Options{})
			n.admitRaw(t, 1, c.comps, c.dirs)
			n.reqs.reset()
			_, err := n.eng.Rollout(t.Context(), "hostile", 1)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want an error about %q, got %v", c.want, err)
			}
			if _, writes, log := n.reqs.reset(); writes != 0 {
				t.Fatalf("writes were sent: %v", log)
			}
			if n.state(t, 1) != store.StateFailed {
				t.Fatalf("state %s", n.state(t, 1))
			}
			if b, _ := n.st.GetBundle("hostile"); b.Current != 0 || b.Txn != nil {
				t.Fatalf("bundle record moved: %+v", b)
			}
		})
	}
}

// TestSopsSecretsArriveDecrypted: a Secret and a secretGenerator env file encrypted by the
// real sops CLI are decrypted in memory with the node's age key: the cluster gets the
// plaintext, the node's state directory and logs never hold it, and a key only in the
// environment is not used.
func TestSopsSecretsArriveDecrypted(t *testing.T) {
	ctx := ctxTimeout(t, time.Minute)
	work := t.TempDir()
	keyFile := filepath.Join(work, "age.key")
	run(t, ctx, nil, "age-keygen", "-o", keyFile)
	recipient := strings.TrimSpace(run(t, ctx, nil, "age-keygen", "-y", keyFile))
	const plain = "hunter2-only-in-the-cluster"
	secret := "apiVersion: v1\nkind: Secret\nmetadata: {name: db, namespace: sops}\nstringData:\n  password: " + plain + "\n"
	enc := func(name, data string, args ...string) string {
		p := filepath.Join(work, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return run(t, ctx, nil, "sops", append(append([]string{"--encrypt", "--age", recipient}, args...), p)...)
	}
	files := map[string]string{
		"app/kustomization.yaml": "resources: [ns.yaml, db.sops.yaml]\nsecretGenerator:\n  - name: api\n    namespace: sops\n    envs: [api.sops.env]\n    options: {disableNameSuffixHash: true}\n",
		"app/ns.yaml":            "apiVersion: v1\nkind: Namespace\nmetadata: {name: sops}\n",
		"app/db.sops.yaml":       enc("db.sops.yaml", secret, "--encrypted-regex", "^(data|stringData)$"),
		"app/api.sops.env":       enc("api.sops.env", "TOKEN="+plain+"\n"),
	}
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	comp := "- name: app\n  kustomize: {path: ./app, decryption: {provider: sops}}\n"

	// The right key only in the environment and in $HOME: not used.
	t.Setenv("SOPS_AGE_KEY_FILE", keyFile)
	home := t.TempDir()
	t.Setenv("HOME", home)
	os.MkdirAll(filepath.Join(home, ".config", "sops", "age"), 0o700)
	key, _ := os.ReadFile(keyFile)
	os.WriteFile(filepath.Join(home, ".config", "sops", "age", "keys.txt"), key, 0o600)
	other := filepath.Join(work, "other.key")
	run(t, ctx, nil, "age-keygen", "-o", other)
	otherKeys, err := decrypt.LoadKeys(other)
	if err != nil {
		t.Fatal(err)
	}
	n := newNode(t, "sops", apply.Options{Env: apply.Env{Keys: otherKeys}, Log: logger})
	n.admit(t, 1, comp, files)
	if _, err := n.eng.Rollout(ctx, "sops", 1); err == nil || strings.Contains(err.Error(), plain) {
		t.Fatalf("decrypted with a key from the environment, or leaked: %v", err)
	}

	keys, err := decrypt.LoadKeys(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	n = newNode(t, "sops", apply.Options{Env: apply.Env{Keys: keys}, Log: logger})
	n.admit(t, 1, comp, files)
	if _, err := n.eng.Rollout(ctx, "sops", 1); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"db", "api"} {
		s := n.get(t, secrets, "sops", name)
		data := secretData(t, s)
		if !strings.Contains(data["password"]+data["TOKEN"], plain) {
			t.Fatalf("secret %s: %v", name, data)
		}
	}
	if strings.Contains(logs.String(), plain) {
		t.Fatal("the plaintext is in the logs")
	}
	filepath.WalkDir(n.st.Dir(), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(plain)) {
				t.Errorf("the plaintext is on disk in %s", p)
			}
		}
		return nil
	})
}

func run(t *testing.T, ctx context.Context, env []string, tool string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(ctx, tb.Bin(tool), args...)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", tool, args, err, stderr.String())
	}
	return string(out)
}
