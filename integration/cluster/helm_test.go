package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"oras.land/oras-go/v2/content/memory"

	"github.com/ferrygitops/ferry/apply"
	"github.com/ferrygitops/ferry/bundler"
	"github.com/ferrygitops/ferry/bundler/bundlertest"
	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/integration/testbed"
	"github.com/ferrygitops/ferry/rollout"
	"github.com/ferrygitops/ferry/store"
)

// chart is a small chart: a ConfigMap of the values' settings and a Deployment that never
// becomes Ready when the value fail is true.
func chart(version string) map[string]string {
	return map[string]string{
		"charts/app/Chart.yaml":  "apiVersion: v2\nname: app\nversion: " + version + "\n",
		"charts/app/values.yaml": "settings: {color: blue}\nfail: false\n",
		"charts/app/templates/settings.yaml": `apiVersion: v1
kind: ConfigMap
metadata: {name: {{ .Release.Name }}-settings}
data:
{{ toYaml .Values.settings | indent 2 }}
`,
		"charts/app/templates/web.yaml": `apiVersion: apps/v1
kind: Deployment
metadata: {name: {{ .Release.Name }}-web}
spec:
  replicas: 1
  selector: {matchLabels: {app: {{ .Release.Name }}}}
  template:
    metadata:
      labels:
        app: {{ .Release.Name }}
{{- if .Values.fail }}
        ` + testbed.FailLabel + `: "true"
{{- end }}
    spec:
      containers:
        - name: app
          image: registry.local/app:1
`,
	}
}

// helmRevision is one line of `helm history -o json`.
type helmRevision struct {
	Revision    int    `json:"revision"`
	Status      string `json:"status"`
	Description string `json:"description"`
}

// helmHistory runs the real helm CLI against the testbed.
func helmHistory(t *testing.T, ns, rel string) []helmRevision {
	t.Helper()
	out, err := exec.Command(tb.Bin("helm"), "history", rel, "-n", ns, "-o", "json", "--max", "100", "--kubeconfig", tb.Kubeconfig).CombinedOutput()
	if err != nil {
		t.Fatalf("helm history: %v: %s", err, out)
	}
	var h []helmRevision
	if err := json.Unmarshal(out, &h); err != nil {
		t.Fatalf("helm history: %v: %s", err, out)
	}
	return h
}

// uninstalled fails unless the real helm CLI finds no release rel in ns.
func uninstalled(t *testing.T, ns, rel string) {
	t.Helper()
	out, err := exec.Command(tb.Bin("helm"), "status", rel, "-n", ns, "--kubeconfig", tb.Kubeconfig).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "not found") {
		t.Fatalf("release %s/%s is still installed: %v %s", ns, rel, err, out)
	}
}

func statuses(h []helmRevision) string {
	var s []string
	for _, r := range h {
		s = append(s, fmt.Sprintf("%d:%s", r.Revision, r.Status))
	}
	return strings.Join(s, " ")
}

func helmComponent(name, ns, extra string) string {
	c := "- name: " + name + "\n  helm:\n    chart: ./charts/app\n    targetNamespace: " + ns + "\n"
	if !strings.Contains(extra, "install:") {
		c += "    install: {createNamespace: true}\n"
	}
	if !strings.Contains(extra, "timeout:") {
		c += "    timeout: 10s\n"
	}
	if extra != "" {
		c += indent(extra, "    ")
	}
	return c
}

func settings(t *testing.T, n *node, ns, name string) map[string]any {
	t.Helper()
	u := n.get(t, configMaps, ns, name)
	if u == nil {
		t.Fatalf("configmap %s/%s is missing", ns, name)
	}
	d, _, _ := unstructured.NestedMap(u.Object, "data")
	return d
}

// TestHelmInstallUpgradeRemediate: a Helm component becomes a real Helm release (the helm
// CLI sees it); a reconcile with nothing changed creates no Helm revision and sends no
// write; a value change upgrades it; an upgrade whose Deployment never becomes Ready is
// remediated by Flux's rules (retries, then rollback) and the Ferry revision is rolled
// back, with `helm history` telling the same story.
func TestHelmInstallUpgradeRemediate(t *testing.T) {
	n := newNode(t, "hr", apply.Options{})
	ctx := ctxTimeout(t, 4*time.Minute)
	const ns, rel = "hr", "hr-web"
	n.admit(t, 1, helmComponent("web", ns, "values: {settings: {color: red}}"), chart("1.0.0"))
	if _, err := n.eng.Rollout(ctx, "hr", 1); err != nil {
		t.Fatal(err)
	}
	if h := helmHistory(t, ns, rel); statuses(h) != "1:deployed" {
		t.Fatalf("after install, helm history: %s", statuses(h))
	}
	if got := settings(t, n, ns, rel+"-settings"); got["color"] != "red" {
		t.Fatalf("values not merged: %v", got)
	}
	if d := n.get(t, deployments, ns, rel+"-web"); d.GetLabels()[apply.LabelBundle] != "hr" {
		t.Fatalf("release objects are not labelled as the bundle's: %v", d.GetLabels())
	}

	// Nothing changed: no new Helm revision, no write.
	n.reqs.reset()
	if _, err := n.eng.Sync(ctx, "hr"); err != nil {
		t.Fatal(err)
	}
	reads, writes, log := n.reqs.reset()
	if writes != 0 {
		t.Fatalf("a no-op sync sent %d writes: %v", writes, log)
	}
	t.Logf("no-op sync of a release: %d reads, 0 writes", reads)
	if h := helmHistory(t, ns, rel); len(h) != 1 {
		t.Fatalf("a no-op sync made a Helm revision: %s", statuses(h))
	}

	// A value changes: one upgrade.
	n.admit(t, 2, helmComponent("web", ns, "values: {settings: {color: green}}"), chart("1.0.0"))
	if _, err := n.eng.Rollout(ctx, "hr", 2); err != nil {
		t.Fatal(err)
	}
	if h := helmHistory(t, ns, rel); statuses(h) != "1:superseded 2:deployed" {
		t.Fatalf("after upgrade, helm history: %s", statuses(h))
	}

	// An upgrade that never becomes healthy: one retry with rollback in between, the last
	// failure remediated too (Flux's default with retries), then Ferry's own rollback to
	// revision 2, which finds the release already holding revision 2's chart and values.
	n.admit(t, 3, helmComponent("web", ns, "values: {settings: {color: black}, fail: true}\nupgrade: {remediation: {retries: 1, strategy: rollback}}"), chart("1.0.0"))
	_, err := n.eng.Rollout(ctx, "hr", 3)
	if !errors.Is(err, rollout.ErrRolledBack) {
		t.Fatalf("want a rollback, got %v", err)
	}
	h := helmHistory(t, ns, rel)
	if got := statuses(h); got != "1:superseded 2:superseded 3:failed 4:superseded 5:failed 6:deployed" {
		t.Fatalf("after a failed upgrade, helm history: %s", got)
	}
	// Each remediation goes back to the deployed revision of the moment: 2, then 4 (the
	// first rollback, which holds 2's chart and values).
	if !strings.Contains(h[3].Description, "Rollback to 2") || !strings.Contains(h[5].Description, "Rollback to 4") {
		t.Fatalf("the remediations are not rollbacks to 2 then 4: %+v", h)
	}
	if got := settings(t, n, ns, rel+"-settings"); got["color"] != "green" {
		t.Fatalf("after the rollback the settings are %v", got)
	}
	if n.state(t, 3) != store.StateRolledBack || n.state(t, 2) != store.StateHealthy {
		t.Fatalf("states: %s %s", n.state(t, 2), n.state(t, 3))
	}
	// maxHistory (default 10) bounds the release's Secrets: it never grows without end.
	secrets, err := n.dyn.Resource(secrets).Namespace(ns).List(ctx, metav1.ListOptions{LabelSelector: "owner=helm,name=" + rel})
	if err != nil || len(secrets.Items) != 6 {
		t.Fatalf("release secrets: %v %v", len(secrets.Items), err)
	}
}

// TestHelmWholeRevisionRollback: revision 2 upgrades a release and adds a second one, but
// a kustomize component of revision 2 fails its health check. Ferry's rollback returns the
// first release to the Helm revision revision 1 deployed (a `helm rollback`, not another
// upgrade) and uninstalls the release that is new in revision 2.
func TestHelmWholeRevisionRollback(t *testing.T) {
	n := newNode(t, "hw", apply.Options{})
	ctx := ctxTimeout(t, 4*time.Minute)
	const ns = "hw"
	gate := func(fail bool) string {
		return deployment(ns, "gate", fail)
	}
	comps := func(color string, extra bool, fail bool) (string, map[string]string) {
		c := helmComponent("web", ns, "values: {settings: {color: "+color+"}}")
		if extra {
			c += helmComponent("extra", ns, "")
		}
		c += "- name: gate\n  kustomize: {path: ./gate, wait: true, timeout: 10s, prune: true}\n  \n"
		files := chart("1.0.0")
		files["gate/d.yaml"] = gate(fail)
		return c, files
	}
	c, f := comps("red", false, false)
	n.admit(t, 1, c, f)
	if _, err := n.eng.Rollout(ctx, "hw", 1); err != nil {
		t.Fatal(err)
	}
	c, f = comps("green", true, true)
	n.admit(t, 2, c, f)
	if _, err := n.eng.Rollout(ctx, "hw", 2); !errors.Is(err, rollout.ErrRolledBack) {
		t.Fatalf("want a rollback, got %v", err)
	}
	h := helmHistory(t, ns, "hw-web")
	if got := statuses(h); got != "1:superseded 2:superseded 3:deployed" || !strings.Contains(h[2].Description, "Rollback to 1") {
		t.Fatalf("web's helm history: %s (%+v)", got, h)
	}
	if got := settings(t, n, ns, "hw-web-settings"); got["color"] != "red" {
		t.Fatalf("web's settings after the rollback: %v", got)
	}
	uninstalled(t, ns, "hw-extra")
	if n.get(t, configMaps, ns, "hw-extra-settings") != nil {
		t.Fatal("the object of the uninstalled release survived")
	}
}

// TestHelmValuesFromAndDrift: values merge in Flux's order (chart < valuesFiles <
// valuesFrom in list order < values), an optional missing source is skipped, node variables
// are substituted into values; a hand edit of a release's object is corrected with one
// write and no new Helm revision.
func TestHelmValuesFromAndDrift(t *testing.T) {
	n := newNode(t, "hv", apply.Options{Env: apply.Env{Vars: map[string]string{"SITE": "north-7"}}})
	ctx := ctxTimeout(t, 3*time.Minute)
	const ns = "hv"
	n.createNamespace(t, ns)
	n.createObject(t, configMaps, ns, map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "from-cm"},
		"data": map[string]any{"values.yaml": "settings: {a: cm, b: cm, c: cm}\n"}})
	n.createObject(t, secrets, ns, map[string]any{"apiVersion": "v1", "kind": "Secret", "metadata": map[string]any{"name": "from-secret"},
		"stringData": map[string]any{"b": "secret"}})
	files := chart("1.0.0")
	files["charts/site.yaml"] = "settings: {a: file, z: file}\n"
	n.admit(t, 1, helmComponent("web", ns, `valuesFiles: [./charts/site.yaml]
valuesFrom:
  - {kind: ConfigMap, name: from-cm}
  - {kind: Secret, name: from-secret, valuesKey: b, targetPath: settings.b}
  - {kind: ConfigMap, name: missing, optional: true}
values: {settings: {c: inline, site: "${SITE}", other: "${NOT_A_NODE_VAR}"}}`), files)
	if _, err := n.eng.Rollout(ctx, "hv", 1); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"color": "blue", "a": "cm", "b": "secret", "c": "inline", "z": "file", "site": "north-7", "other": "${NOT_A_NODE_VAR}"}
	if got := settings(t, n, ns, "hv-web-settings"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("merged values:\n got %v\nwant %v", got, want)
	}

	// A hand edit of the release's ConfigMap is drift: corrected, no new Helm revision.
	cm := n.get(t, configMaps, ns, "hv-web-settings")
	_ = unstructured.SetNestedField(cm.Object, "edited", "data", "c")
	if _, err := n.dyn.Resource(configMaps).Namespace(ns).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	n.reqs.reset()
	rep, err := n.eng.Sync(ctx, "hv")
	if err != nil {
		t.Fatal(err)
	}
	_, writes, log := n.reqs.reset()
	if len(rep.Drift) != 1 || !rep.Drift[0].Corrected || rep.Drift[0].Path != "/data/c" || writes != 1 {
		t.Fatalf("drift %+v, writes %d %v", rep.Drift, writes, log)
	}
	if got := settings(t, n, ns, "hv-web-settings"); got["c"] != "inline" {
		t.Fatalf("drift not corrected: %v", got)
	}
	if h := helmHistory(t, ns, "hv-web"); len(h) != 1 {
		t.Fatalf("drift correction made a Helm revision: %s", statuses(h))
	}
	// A required source that is missing, a key it lacks, values that are not a map: each
	// fails the revision before Helm runs, naming the source.
	n.createObject(t, configMaps, ns, map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "junk"},
		"data": map[string]any{"values.yaml": "[not, a, map]"}})
	for i, tc := range []struct{ ref, want string }{
		{"{kind: ConfigMap, name: missing}", `"missing" not found`},
		{"{kind: ConfigMap, name: from-cm, valuesKey: nope}", `hv/from-cm has no key "nope"`},
		{"{kind: ConfigMap, name: junk}", `hv/junk key "values.yaml" is not a YAML map`},
	} {
		rev := uint64(2 + i)
		n.admit(t, rev, helmComponent("web", ns, "valuesFrom: ["+tc.ref+"]"), files)
		if _, err := n.eng.Rollout(ctx, "hv", rev); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("valuesFrom %s: want %q, got %v", tc.ref, tc.want, err)
		}
	}
	if h := helmHistory(t, ns, "hv-web"); len(h) != 1 {
		t.Fatalf("a failed values lookup reached Helm: %s", statuses(h))
	}
}

// TestHelmPendingUpgradeIsRecovered: a process killed in the middle of an upgrade leaves
// the release pending-upgrade, which locks it for every Helm action; the next rollout
// recovers it (marks it failed, rolls back to the deployed revision, whose objects the
// interrupted upgrade had changed) and upgrades.
func TestHelmPendingUpgradeIsRecovered(t *testing.T) {
	n := newNode(t, "hp", apply.Options{})
	ctx := ctxTimeout(t, 3*time.Minute)
	const ns, rel = "hp", "hp-web"
	n.admit(t, 1, helmComponent("web", ns, ""), chart("1.0.0"))
	if _, err := n.eng.Rollout(ctx, "hp", 1); err != nil {
		t.Fatal(err)
	}
	// The child upgrades the same release to a chart that never becomes Ready and waits; it
	// is killed while Helm waits, with the release pending-upgrade.
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), helmChildEnv+"="+tb.Kubeconfig)
	child.Stdout, child.Stderr = os.Stderr, os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer child.Process.Kill()
	deadline := time.Now().Add(time.Minute)
	for {
		h := helmHistory(t, ns, rel)
		if len(h) == 2 && h[1].Status == "pending-upgrade" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the child never left the release pending-upgrade: %s", statuses(h))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	n.admit(t, 2, helmComponent("web", ns, "values: {settings: {color: green}}"), chart("1.0.0"))
	if _, err := n.eng.Rollout(ctx, "hp", 2); err != nil {
		t.Fatal(err)
	}
	h := helmHistory(t, ns, rel)
	if got := statuses(h); got != "1:superseded 2:failed 3:superseded 4:deployed" {
		t.Fatalf("helm history after recovery: %s", got)
	}
	if !strings.Contains(h[1].Description, "interrupted") {
		t.Fatalf("the recovered revision does not say why it failed: %+v", h[1])
	}
}

// helmChildEnv names the kubeconfig the child process of TestHelmPendingUpgradeIsRecovered
// upgrades with.
const helmChildEnv = "FERRY_TEST_HELM_CHILD"

// helmChild runs in the child process: an engine with a store of its own upgrades release
// hp-web to a revision whose Deployment never becomes Ready, and waits to be killed.
func helmChild(kubeconfig string) error {
	return runHelmChild(kubeconfig, helmComponent("web", "hp", "values: {fail: true}\ntimeout: 5m"), chart("1.0.0"))
}

// TestFluxGuideHelmRelease: a HelmRelease of the Flux guide's shape (a chart from a
// HelmRepository, install and upgrade remediation, drift detection), imported with
// `ferry bundle build --from-flux`, behaves as helm-controller would: installed into the
// HelmRelease's namespace under its name, a hand edit corrected, a failed upgrade rolled
// back by its remediation.
func TestFluxGuideHelmRelease(t *testing.T) {
	n := newNode(t, "guide", apply.Options{})
	ctx := ctxTimeout(t, 3*time.Minute)
	// A real chart repository: the chart packaged and indexed by the helm CLI.
	work := t.TempDir()
	for name, data := range chart("6.5.0") {
		p := filepath.Join(work, "src", strings.TrimPrefix(name, "charts/"))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(strings.ReplaceAll(data, "name: app", "name: podinfo")), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	repo := filepath.Join(work, "repo")
	helm := func(args ...string) {
		cmd := exec.Command(tb.Bin("helm"), args...)
		cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+filepath.Join(work, "cache"), "HELM_CONFIG_HOME="+filepath.Join(work, "config"))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("helm %v: %v\n%s", args, err, out)
		}
	}
	helm("package", filepath.Join(work, "src", "app"), "-d", repo)
	srv := httptest.NewServer(http.FileServer(http.Dir(repo)))
	defer srv.Close()
	helm("repo", "index", repo, "--url", srv.URL)

	release := func(values string) map[string]string {
		return map[string]string{"clusters/edge/podinfo.yaml": `apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata: {name: podinfo, namespace: podinfo}
spec: {interval: 1h, url: "` + srv.URL + `"}
---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: podinfo, namespace: podinfo}
spec:
  interval: 10m
  timeout: 10s
  chart:
    spec:
      chart: podinfo
      version: ">=6.0.0"
      sourceRef: {kind: HelmRepository, name: podinfo}
  install:
    createNamespace: true
    remediation: {retries: 3}
  upgrade:
    remediation: {retries: 0, remediateLastFailure: true, strategy: rollback}
  driftDetection: {mode: enabled}
  values: ` + values + `
`}
	}
	// In order: revision 2 admitted first would make 1 a downgrade (a map's order is random).
	for i, values := range []string{"{settings: {color: red}}", "{settings: {color: red}, fail: true}"} {
		rev := uint64(i + 1)
		dir, _ := bundlertest.GitTree(t, release(values), time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC))
		mem := memory.New()
		res, err := bundler.Build(ctx, mem, bundler.Options{Dir: dir, FromFlux: filepath.Join(dir, "clusters", "edge"), Name: "guide", Version: "1.0." + itoa(rev), Revision: rev})
		if err != nil {
			t.Fatal(err)
		}
		b, err := bundles.Open(ctx, mem, res.Descriptor)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := n.st.Admit(ctx, mem, store.Admission{Name: "guide", Revision: rev, Version: b.Metadata.Version, Manifest: res.Descriptor,
			Blobs: append([]ocispec.Descriptor{b.Manifest.Config}, b.Manifest.Layers...)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := n.eng.Rollout(ctx, "guide", 1); err != nil {
		t.Fatal(err)
	}
	// helm-controller's names: release podinfo in namespace podinfo.
	if h := helmHistory(t, "podinfo", "podinfo"); statuses(h) != "1:deployed" {
		t.Fatalf("helm history: %s", statuses(h))
	}
	d := n.get(t, deployments, "podinfo", "podinfo-web")
	_ = unstructured.SetNestedField(d.Object, int64(3), "spec", "replicas")
	if _, err := n.dyn.Resource(deployments).Namespace("podinfo").Update(ctx, d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	rep, err := n.eng.Sync(ctx, "guide")
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Drift) != 1 || rep.Drift[0].Path != "/spec/replicas" || !rep.Drift[0].Corrected {
		t.Fatalf("drift %+v", rep.Drift)
	}
	if r, _, _ := unstructured.NestedInt64(n.get(t, deployments, "podinfo", "podinfo-web").Object, "spec", "replicas"); r != 1 {
		t.Fatalf("replicas %d after the drift correction", r)
	}
	if _, err := n.eng.Rollout(ctx, "guide", 2); !errors.Is(err, rollout.ErrRolledBack) {
		t.Fatalf("want a rollback, got %v", err)
	}
	if got := statuses(helmHistory(t, "podinfo", "podinfo")); got != "1:superseded 2:failed 3:deployed" {
		t.Fatalf("after the failed upgrade: %s", got)
	}
}

// TestHelmSyncDoesNotRetryAFailedUpgrade: a valuesFrom source changes under a healthy
// revision, so a sync upgrades the release; the upgrade never becomes healthy. The next
// syncs report it and do not upgrade again (no Helm revision per interval) until the
// values change; then the release is returned to its deployed revision and upgraded.
func TestHelmSyncDoesNotRetryAFailedUpgrade(t *testing.T) {
	n := newNode(t, "hs", apply.Options{})
	ctx := ctxTimeout(t, 2*time.Minute)
	const ns, rel = "hs", "hs-web"
	n.createNamespace(t, ns)
	source := func(values string) {
		u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "ConfigMap",
			"metadata": map[string]any{"name": "site", "namespace": ns}, "data": map[string]any{"values.yaml": values}}}
		if _, err := n.dyn.Resource(configMaps).Namespace(ns).Apply(ctx, "site", u, metav1.ApplyOptions{FieldManager: "test", Force: true}); err != nil {
			t.Fatal(err)
		}
	}
	source("settings: {color: red}\n")
	n.admit(t, 1, helmComponent("web", ns, "valuesFrom: [{kind: ConfigMap, name: site}]"), chart("1.0.0"))
	if _, err := n.eng.Rollout(ctx, "hs", 1); err != nil {
		t.Fatal(err)
	}
	source("fail: true\n")
	if _, err := n.eng.Sync(ctx, "hs"); err == nil {
		t.Fatal("the upgrade to values that never become healthy succeeded")
	}
	for range 2 {
		_, err := n.eng.Sync(ctx, "hs")
		if err == nil || !strings.Contains(err.Error(), "failed before") {
			t.Fatalf("want the failed upgrade reported, not retried: %v", err)
		}
	}
	if got := statuses(helmHistory(t, ns, rel)); got != "1:deployed 2:failed" {
		t.Fatalf("helm history: %s", got)
	}
	source("settings: {color: green}\n")
	if _, err := n.eng.Sync(ctx, "hs"); err != nil {
		t.Fatal(err)
	}
	// The failed upgrade's changes are undone first (a rollback to 1), then the upgrade.
	if got := statuses(helmHistory(t, ns, rel)); got != "1:superseded 2:failed 3:superseded 4:deployed" {
		t.Fatalf("helm history after the values changed: %s", got)
	}
}

// TestHelmReleaseOfAnotherBundle: a bundle whose component names a release another bundle
// installed fails without touching it, and its rollback does not uninstall it either.
func TestHelmReleaseOfAnotherBundle(t *testing.T) {
	owner, other := newNode(t, "owner", apply.Options{}), newNode(t, "other", apply.Options{})
	ctx := ctxTimeout(t, 2*time.Minute)
	const ns = "shared"
	owner.admit(t, 1, helmComponent("web", ns, "releaseName: shared"), chart("1.0.0"))
	if _, err := owner.eng.Rollout(ctx, "owner", 1); err != nil {
		t.Fatal(err)
	}
	other.admit(t, 1, "- name: app\n  kustomize: {path: ./app}\n", map[string]string{"app/cm.yaml": cm(ns, "other", "v1")})
	if _, err := other.eng.Rollout(ctx, "other", 1); err != nil {
		t.Fatal(err)
	}
	files := chart("1.0.0")
	files["app/cm.yaml"] = cm(ns, "other", "v2")
	other.admit(t, 2, "- name: app\n  kustomize: {path: ./app}\n"+helmComponent("web", ns, "releaseName: shared\nvalues: {settings: {color: stolen}}"), files)
	_, err := other.eng.Rollout(ctx, "other", 2)
	if !errors.Is(err, rollout.ErrRolledBack) || !strings.Contains(err.Error(), "belongs to bundle owner") {
		t.Fatalf("want a refusal and a rollback, got %v", err)
	}
	if got := statuses(helmHistory(t, ns, "shared")); got != "1:deployed" {
		t.Fatalf("the owner's release was touched: %s", got)
	}
	if got := settings(t, owner, ns, "shared-settings"); got["color"] != "blue" {
		t.Fatalf("the owner's values changed: %v", got)
	}
}

// TestHelmAdoptedReleaseAndMoves: a release installed by hand with the helm CLI is taken
// over by a revision that then fails: the rollback returns the release to its hand-made
// revision instead of uninstalling it. A later revision moves the release's ConfigMap into
// a kustomize component and drops the Helm component: the release is uninstalled, the
// ConfigMap stays.
func TestHelmAdoptedReleaseAndMoves(t *testing.T) {
	n := newNode(t, "adopt", apply.Options{})
	ctx := ctxTimeout(t, 3*time.Minute)
	const ns = "adopt"
	n.createNamespace(t, ns)
	src := t.TempDir()
	for name, data := range chart("1.0.0") {
		p := filepath.Join(src, filepath.FromSlash(name))
		_ = os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command(tb.Bin("helm"), "install", "adopt-web", filepath.Join(src, "charts", "app"), "-n", ns, "--kubeconfig", tb.Kubeconfig).CombinedOutput(); err != nil {
		t.Fatalf("helm install: %v\n%s", err, out)
	}
	gate := "- name: gate\n  kustomize: {path: ./gate, wait: true, timeout: 10s}\n"
	files := chart("1.0.0")
	files["gate/d.yaml"] = deployment(ns, "gate", false)
	n.admit(t, 1, gate, files)
	if _, err := n.eng.Rollout(ctx, "adopt", 1); err != nil {
		t.Fatal(err)
	}
	files["gate/d.yaml"] = deployment(ns, "gate", true)
	n.admit(t, 2, helmComponent("web", ns, "values: {settings: {color: taken}}")+gate, files)
	if _, err := n.eng.Rollout(ctx, "adopt", 2); !errors.Is(err, rollout.ErrRolledBack) {
		t.Fatalf("want a rollback, got %v", err)
	}
	h := helmHistory(t, ns, "adopt-web")
	if got := statuses(h); got != "1:superseded 2:superseded 3:deployed" || !strings.Contains(h[2].Description, "Rollback to 1") {
		t.Fatalf("the adopted release was not returned to its own revision: %s %+v", got, h)
	}
	if got := settings(t, n, ns, "adopt-web-settings"); got["color"] != "blue" {
		t.Fatalf("settings %v", got)
	}

	// Revision 3 takes the release over for good; revision 4 moves its ConfigMap into a
	// kustomize component and drops the release.
	files["gate/d.yaml"] = deployment(ns, "gate", false)
	n.admit(t, 3, helmComponent("web", ns, "")+gate, files)
	if _, err := n.eng.Rollout(ctx, "adopt", 3); err != nil {
		t.Fatal(err)
	}
	files["gate/cm.yaml"] = cm(ns, "adopt-web-settings", "moved")
	n.admit(t, 4, gate, files)
	if _, err := n.eng.Rollout(ctx, "adopt", 4); err != nil {
		t.Fatal(err)
	}
	uninstalled(t, ns, "adopt-web")
	if got := settings(t, n, ns, "adopt-web-settings"); got["value"] != "moved" {
		t.Fatalf("the moved ConfigMap: %v", got)
	}
	if n.get(t, deployments, ns, "adopt-web-web") != nil {
		t.Fatal("the release's Deployment survived its uninstall")
	}
}

// TestHelmCRDPoliciesAndHistory: the chart's crds/ follow Flux's crds policies — Skip
// installs without them, Create (the upgrade default here) creates a missing one,
// CreateReplace updates one that exists — and maxHistory bounds the release's Secrets.
func TestHelmCRDPoliciesAndHistory(t *testing.T) {
	n := newNode(t, "hc", apply.Options{})
	ctx := ctxTimeout(t, 3*time.Minute)
	const ns, rel = "hc", "hc-web"
	crdGVR := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	crd := func(short string) string {
		return `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.hc.ferry.dev}
spec:
  group: hc.ferry.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [` + short + `]}
  versions:
    - name: v1
      served: true
      storage: true
      schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
`
	}
	files := chart("1.0.0")
	files["charts/app/crds/widgets.yaml"] = crd("wg")
	step := func(rev uint64, extra string) {
		t.Helper()
		n.admit(t, rev, helmComponent("web", ns, extra), files)
		if _, err := n.eng.Rollout(ctx, "hc", rev); err != nil {
			t.Fatal(err)
		}
	}
	step(1, "install: {createNamespace: true, crds: Skip}\nmaxHistory: 2")
	if n.get(t, crdGVR, "", "widgets.hc.ferry.dev") != nil {
		t.Fatal("crds: Skip installed the CRD")
	}
	step(2, "install: {createNamespace: true}\nmaxHistory: 2\nvalues: {settings: {color: two}}")
	got := n.get(t, crdGVR, "", "widgets.hc.ferry.dev")
	if got == nil {
		t.Fatal("the upgrade's default (Create) did not create the missing CRD")
	}
	files["charts/app/crds/widgets.yaml"] = crd("wd")
	step(3, "install: {createNamespace: true}\nupgrade: {crds: Create}\nmaxHistory: 2\nvalues: {settings: {color: three}}")
	if s, _, _ := unstructured.NestedStringSlice(n.get(t, crdGVR, "", "widgets.hc.ferry.dev").Object, "spec", "names", "shortNames"); fmt.Sprint(s) != "[wg]" {
		t.Fatalf("crds: Create changed an existing CRD: %v", s)
	}
	step(4, "install: {createNamespace: true}\nupgrade: {crds: CreateReplace}\nmaxHistory: 2\nvalues: {settings: {color: four}}")
	if s, _, _ := unstructured.NestedStringSlice(n.get(t, crdGVR, "", "widgets.hc.ferry.dev").Object, "spec", "names", "shortNames"); fmt.Sprint(s) != "[wd]" {
		t.Fatalf("crds: CreateReplace did not update the CRD: %v", s)
	}
	if h := helmHistory(t, ns, rel); statuses(h) != "3:superseded 4:deployed" {
		t.Fatalf("maxHistory 2 kept: %s", statuses(h))
	}
}

// TestHelmValuesFromInItsNamespace: a HelmRelease living in one namespace (its namespace, as
// --from-flux imports metadata.namespace) that installs into another reads valuesFrom without
// a namespace where it lives, as helm-controller does.
func TestHelmValuesFromInItsNamespace(t *testing.T) {
	n := newNode(t, "hvhome", apply.Options{})
	ctx := ctxTimeout(t, 2*time.Minute)
	const target, home = "hvhome-target", "hvhome-home"
	n.createNamespace(t, home)
	n.createObject(t, configMaps, home, map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "release-values"},
		"data": map[string]any{"values.yaml": "settings: {from: home}\n"}})
	n.admit(t, 1, helmComponent("web", target, "namespace: "+home+"\nvaluesFrom: [{kind: ConfigMap, name: release-values}]"), chart("1.0.0"))
	if _, err := n.eng.Rollout(ctx, "hvhome", 1); err != nil {
		t.Fatal(err)
	}
	if got := settings(t, n, target, target+"-web-settings"); got["from"] != "home" { // release [targetNamespace-]name
		t.Fatalf("valuesFrom not read in the release's own namespace: %v", got)
	}
}
