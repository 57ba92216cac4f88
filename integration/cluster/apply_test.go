package cluster

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/ferrygitops/ferry/apply"
	"github.com/ferrygitops/ferry/integration/testbed"
	"github.com/ferrygitops/ferry/rollout"
	"github.com/ferrygitops/ferry/store"
)

func cm(ns, name, data string, annotations ...string) string {
	s := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: " + name + "\n  namespace: " + ns + "\n"
	if len(annotations) > 0 {
		s += "  annotations:\n"
		for _, a := range annotations {
			s += "    " + a + "\n"
		}
	}
	return s + "data:\n  value: \"" + data + "\"\n"
}

// TestApplyAndPruneAcrossRevisions: revision 2 changes one object, drops two; the one
// annotated prune: disabled survives, the other is deleted, and nothing else is touched.
func TestApplyAndPruneAcrossRevisions(t *testing.T) {
	n := newNode(t, "prune", apply.Options{})
	ctx := ctxTimeout(t, 2*time.Minute)
	comp := "- name: app\n  kustomize: {path: ./app, prune: true, wait: true, timeout: 30s}\n"
	n.admit(t, 1, comp, map[string]string{
		"app/ns.yaml":   "apiVersion: v1\nkind: Namespace\nmetadata: {name: prune-a}\n",
		"app/a.yaml":    cm("prune-a", "a", "one"),
		"app/b.yaml":    cm("prune-a", "b", "one"),
		"app/keep.yaml": cm("prune-a", "keep", "one", "kustomize.toolkit.fluxcd.io/prune: disabled"),
	})
	rep, err := n.eng.Rollout(ctx, "prune", 1)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Applied != 4 || n.state(t, 1) != store.StateHealthy {
		t.Fatalf("revision 1: %+v, state %s", rep, n.state(t, 1))
	}
	n.admit(t, 2, comp, map[string]string{
		"app/ns.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: prune-a}\n",
		"app/a.yaml":  cm("prune-a", "a", "two"),
	})
	n.reqs.reset()
	rep, err = n.eng.Rollout(ctx, "prune", 2)
	if err != nil {
		t.Fatal(err)
	}
	_, _, writes := n.reqs.reset()
	if rep.Applied != 1 || rep.Unchanged != 1 || rep.Pruned != 1 {
		t.Fatalf("revision 2: %+v (writes %v)", rep, writes)
	}
	if got := n.get(t, configMaps, "prune-a", "a"); got == nil || got.Object["data"].(map[string]any)["value"] != "two" {
		t.Fatalf("a not updated: %v", got)
	}
	if n.get(t, configMaps, "prune-a", "b") != nil {
		t.Fatal("b was not pruned")
	}
	if n.get(t, configMaps, "prune-a", "keep") == nil {
		t.Fatal("the prune-disabled object was deleted")
	}
	b, _ := n.st.GetBundle("prune")
	if b.Current != 2 || b.LastGood != 2 || b.Txn != nil {
		t.Fatalf("bundle record %+v", b)
	}
}

// TestNothingChangedSendsNoWrite counts the requests of a sync after a rollout: no write,
// a handful of reads; then a hand edit is corrected with exactly one write.
func TestNothingChangedSendsNoWrite(t *testing.T) {
	n := newNode(t, "noop", apply.Options{})
	ctx := ctxTimeout(t, 2*time.Minute)
	files := map[string]string{"app/ns.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: noop}\n"}
	for _, c := range []string{"a", "b", "c", "d", "e"} {
		files["app/"+c+".yaml"] = cm("noop", c, c)
	}
	files["app/deploy.yaml"] = deployment("noop", "web", false)
	n.admit(t, 1, "- name: app\n  kustomize: {path: ./app, prune: true, wait: true, timeout: 60s}\n", files)
	if _, err := n.eng.Rollout(ctx, "noop", 1); err != nil {
		t.Fatal(err)
	}
	n.reqs.reset()
	rep, err := n.eng.Sync(ctx, "noop")
	if err != nil {
		t.Fatal(err)
	}
	reads, writes, log := n.reqs.reset()
	if writes != 0 || rep.Applied != 0 || rep.Unchanged != 7 {
		t.Fatalf("a sync with nothing changed sent %d writes %v (%+v)", writes, log, rep)
	}
	if reads >= 20 {
		t.Fatalf("a sync with nothing changed sent %d reads, want fewer than 20", reads)
	}
	t.Logf("nothing changed: %d reads, 0 writes", reads)
	// Rolling out the same revision again is the same no-op.
	if _, err := n.eng.Rollout(ctx, "noop", 1); err != nil {
		t.Fatal(err)
	}
	if _, writes, log := n.reqs.reset(); writes != 0 {
		t.Fatalf("re-rollout of the current revision wrote %v", log)
	}

	// A hand edit of a field Ferry owns is drift: corrected with one apply.
	patch := []byte(`{"data":{"value":"edited by hand"}}`)
	if _, err := n.dyn.Resource(configMaps).Namespace("noop").Patch(ctx, "c", types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "kubectl-edit"}); err != nil {
		t.Fatal(err)
	}
	n.reqs.reset()
	rep, err = n.eng.Sync(ctx, "noop")
	if err != nil {
		t.Fatal(err)
	}
	_, writes, log = n.reqs.reset()
	if writes != 1 || len(rep.Drift) != 1 || !rep.Drift[0].Corrected || rep.Drift[0].Path != "/data/value" {
		t.Fatalf("drift: %+v, writes %v", rep, log)
	}
	if got := n.get(t, configMaps, "noop", "c"); got.Object["data"].(map[string]any)["value"] != "c" {
		t.Fatalf("drift not corrected: %v", got.Object["data"])
	}
	// A label someone else adds is not Ferry's business: no write.
	patch = []byte(`{"metadata":{"labels":{"team":"ops"}}}`)
	if _, err := n.dyn.Resource(configMaps).Namespace("noop").Patch(ctx, "d", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	n.reqs.reset()
	if _, err := n.eng.Sync(ctx, "noop"); err != nil {
		t.Fatal(err)
	}
	if _, writes, log := n.reqs.reset(); writes != 0 {
		t.Fatalf("a label added by someone else caused writes %v", log)
	}
}

// TestDriftWarnOnlyReports: in warn mode a hand edit is reported, every time, and left.
func TestDriftWarnOnlyReports(t *testing.T) {
	n := newNode(t, "warn", apply.Options{})
	ctx := ctxTimeout(t, time.Minute)
	n.admit(t, 1, "- name: app\n  kustomize:\n    path: ./app\n    driftDetection: {mode: warn}\n", map[string]string{
		"app/ns.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: warn}\n",
		"app/a.yaml":  cm("warn", "a", "bundle"),
	})
	if _, err := n.eng.Rollout(ctx, "warn", 1); err != nil {
		t.Fatal(err)
	}
	patch := []byte(`{"data":{"value":"hand"}}`)
	if _, err := n.dyn.Resource(configMaps).Namespace("warn").Patch(ctx, "a", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		n.reqs.reset()
		rep, err := n.eng.Sync(ctx, "warn")
		if err != nil {
			t.Fatal(err)
		}
		if _, writes, log := n.reqs.reset(); writes != 0 || len(rep.Drift) != 1 || rep.Drift[0].Corrected {
			t.Fatalf("sync %d in warn mode: %+v, writes %v", i, rep, log)
		}
	}
	if got := n.get(t, configMaps, "warn", "a"); got.Object["data"].(map[string]any)["value"] != "hand" {
		t.Fatal("warn mode changed the object")
	}
}

func deployment(ns, name string, fail bool) string {
	labels := "app: " + name
	if fail {
		labels += "\n        " + testbed.FailLabel + ": \"true\""
	}
	return `apiVersion: apps/v1
kind: Deployment
metadata: {name: ` + name + `, namespace: ` + ns + `}
spec:
  replicas: 1
  selector: {matchLabels: {app: ` + name + `}}
  template:
    metadata:
      labels:
        ` + labels + `
    spec:
      containers:
        - name: app
          image: registry.local/app:1
`
}

// TestFailedHealthRollsBack: revision 2's Deployment never becomes Ready (the testbed's kwok
// keeps its pods unready), so the engine applies revision 1 again by itself: the Deployment
// is back to revision 1's template, the ConfigMap revision 2 added is gone, revision 2 is
// recorded rolled back with the reason, and it is not tried again by itself.
func TestFailedHealthRollsBack(t *testing.T) {
	n := newNode(t, "rb", apply.Options{})
	ctx := ctxTimeout(t, 3*time.Minute)
	comp := "- name: app\n  kustomize: {path: ./app, prune: true, wait: true, timeout: 15s}\n"
	ns := "apiVersion: v1\nkind: Namespace\nmetadata: {name: rb}\n"
	n.admit(t, 1, comp, map[string]string{"app/ns.yaml": ns, "app/d.yaml": deployment("rb", "web", false), "app/cm.yaml": cm("rb", "settings", "v1")})
	if _, err := n.eng.Rollout(ctx, "rb", 1); err != nil {
		t.Fatal(err)
	}
	n.admit(t, 2, comp, map[string]string{"app/ns.yaml": ns, "app/d.yaml": deployment("rb", "web", true),
		"app/cm.yaml": cm("rb", "settings", "v2"), "app/added.yaml": cm("rb", "added", "v2")})
	begin := time.Now()
	rep, err := n.eng.Rollout(ctx, "rb", 2)
	if !errors.Is(err, rollout.ErrRolledBack) {
		pods, _ := n.dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "pods"}).Namespace("rb").List(ctx, metav1.ListOptions{})
		for _, p := range pods.Items {
			t.Logf("pod %s deleting=%v labels=%v status=%v finalizers=%v", p.GetName(), p.GetDeletionTimestamp(), p.GetLabels(), p.Object["status"].(map[string]any)["phase"], p.GetFinalizers())
		}
		rss, _ := n.dyn.Resource(schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "replicasets"}).Namespace("rb").List(ctx, metav1.ListOptions{})
		for _, p := range rss.Items {
			t.Logf("rs %s spec=%v status=%v", p.GetName(), p.Object["spec"].(map[string]any)["replicas"], p.Object["status"])
		}
		d := n.get(t, deployments, "rb", "web")
		t.Logf("deploy gen=%d status=%v", d.GetGeneration(), d.Object["status"])
		t.Fatalf("want a rollback, got %v", err)
	}
	t.Logf("failed and rolled back in %s (health timeout 15s): %v", time.Since(begin).Round(time.Millisecond), err)
	if rep.RolledBackTo != 1 || n.state(t, 2) != store.StateRolledBack || n.state(t, 1) != store.StateHealthy {
		t.Fatalf("report %+v, states %s/%s", rep, n.state(t, 1), n.state(t, 2))
	}
	b, _ := n.st.GetBundle("rb")
	if b.Current != 1 || b.LastGood != 1 || b.Txn != nil {
		t.Fatalf("bundle record %+v", b)
	}
	d := n.get(t, deployments, "rb", "web")
	if lbls := d.Object["spec"].(map[string]any)["template"].(map[string]any)["metadata"].(map[string]any)["labels"].(map[string]any); lbls[testbed.FailLabel] != nil {
		t.Fatalf("the Deployment still has revision 2's template: %v", lbls)
	}
	if n.get(t, configMaps, "rb", "added") != nil {
		t.Fatal("the object revision 2 added survived the rollback")
	}
	if got := n.get(t, configMaps, "rb", "settings"); got.Object["data"].(map[string]any)["value"] != "v1" {
		t.Fatal("settings not rolled back")
	}
	r2, _ := n.st.GetRevision("rb", 2)
	if !strings.Contains(r2.History[len(r2.History)-2].Note, "not healthy") {
		t.Fatalf("the failure reason is not recorded: %+v", r2.History)
	}
	// Not retried by itself; an explicit retry may.
	if _, err := n.eng.Rollout(ctx, "rb", 2); !errors.Is(err, rollout.ErrFailedBefore) {
		t.Fatalf("a failed revision was tried again: %v", err)
	}
}

// TestRollbackRestoresWhatTheFailedRevisionChanged: with driftDetection disabled, an object
// the failed revision changed is still sent back by the rollback. The rollback compares each
// object with what the failed revision sent (its records are the newest), not with what the
// good one sent long ago, which would read the failed revision's change as drift and, with
// drift disabled, leave it.
func TestRollbackRestoresWhatTheFailedRevisionChanged(t *testing.T) {
	n := newNode(t, "rbd", apply.Options{})
	ctx := ctxTimeout(t, 3*time.Minute)
	comp := "- name: app\n  kustomize: {path: ./app, prune: true, wait: true, timeout: 10s, driftDetection: {mode: disabled}}\n"
	ns := "apiVersion: v1\nkind: Namespace\nmetadata: {name: rbd}\n"
	n.admit(t, 1, comp, map[string]string{"app/ns.yaml": ns, "app/d.yaml": deployment("rbd", "web", false), "app/cm.yaml": cm("rbd", "settings", "v1")})
	if _, err := n.eng.Rollout(ctx, "rbd", 1); err != nil {
		t.Fatal(err)
	}
	n.admit(t, 2, comp, map[string]string{"app/ns.yaml": ns, "app/d.yaml": deployment("rbd", "web", true), "app/cm.yaml": cm("rbd", "settings", "v2")})
	if _, err := n.eng.Rollout(ctx, "rbd", 2); !errors.Is(err, rollout.ErrRolledBack) {
		t.Fatalf("want a rollback, got %v", err)
	}
	if got := n.get(t, configMaps, "rbd", "settings"); got.Object["data"].(map[string]any)["value"] != "v1" {
		t.Fatalf("the rollback left revision 2's ConfigMap: %v", got.Object["data"])
	}
	d := n.get(t, deployments, "rbd", "web")
	if lbls := d.Object["spec"].(map[string]any)["template"].(map[string]any)["metadata"].(map[string]any)["labels"].(map[string]any); lbls[testbed.FailLabel] != nil {
		t.Fatalf("the Deployment still has revision 2's template: %v", lbls)
	}
}

// TestInterruptedRolloutIsResumedOrReverted: a rollout stopped in the middle (the daemon
// killed during the health wait) leaves its transaction open; on start, Resume applies the
// revision again when it is still within its deadline, and restores the last good revision
// when the interrupted one had already failed.
func TestInterruptedRolloutIsResumedOrReverted(t *testing.T) {
	n := newNode(t, "resume", apply.Options{})
	ctx := ctxTimeout(t, 2*time.Minute)
	comp := "- name: app\n  kustomize: {path: ./app, prune: true, wait: true, timeout: 60s}\n"
	ns := "apiVersion: v1\nkind: Namespace\nmetadata: {name: resume}\n"
	n.admit(t, 1, comp, map[string]string{"app/ns.yaml": ns, "app/cm.yaml": cm("resume", "v", "1")})
	if _, err := n.eng.Rollout(ctx, "resume", 1); err != nil {
		t.Fatal(err)
	}
	// Revision 2's Deployment never becomes Ready; the "daemon" dies 2s into the wait.
	n.admit(t, 2, comp, map[string]string{"app/ns.yaml": ns, "app/cm.yaml": cm("resume", "v", "2"), "app/d.yaml": deployment("resume", "web", true)})
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err := n.eng.Rollout(short, "resume", 2)
	cancel()
	if err == nil {
		t.Fatal("the interrupted rollout reported success")
	}
	b, _ := n.st.GetBundle("resume")
	if b.Txn == nil || b.Txn.Revision != 2 || b.Txn.LastGood != 1 || b.Txn.Phase != store.StateApplying || b.Current != 2 {
		t.Fatalf("no open transaction after the interruption: %+v", b)
	}
	if n.get(t, configMaps, "resume", "v").Object["data"].(map[string]any)["value"] != "2" {
		t.Fatal("revision 2 was not being applied")
	}
	// The node comes back after revision 2 was found failed (its rollback interrupted too).
	if err := n.st.SetState("resume", 2, store.StateFailed, "component app: not healthy"); err != nil {
		t.Fatal(err)
	}
	restarted := mustEngine(t, n, apply.Options{})
	rep, err := restarted.Resume(ctx, "resume")
	if !errors.Is(err, rollout.ErrRolledBack) || rep.RolledBackTo != 1 {
		t.Fatalf("resume: %+v, %v", rep, err)
	}
	if n.get(t, deployments, "resume", "web") != nil || n.get(t, configMaps, "resume", "v").Object["data"].(map[string]any)["value"] != "1" {
		t.Fatal("revision 1 is not what the cluster holds")
	}
	if b, _ := n.st.GetBundle("resume"); b.Current != 1 || b.Txn != nil {
		t.Fatalf("bundle record %+v", b)
	}

	// Within its deadline, an interrupted rollout is simply applied again.
	n.admit(t, 3, comp, map[string]string{"app/ns.yaml": ns, "app/cm.yaml": cm("resume", "v", "3"), "app/d.yaml": deployment("resume", "web", false)})
	short, cancel = context.WithCancel(ctx)
	cancel() // dies before sending anything
	if _, err := n.eng.Rollout(short, "resume", 3); err == nil {
		t.Fatal("a cancelled rollout reported success")
	}
	if rep, err := restarted.Resume(ctx, "resume"); err != nil || rep.State != store.StateHealthy {
		t.Fatalf("resume within the deadline: %+v, %v", rep, err)
	}
	if b, _ := n.st.GetBundle("resume"); b.Current != 3 || b.LastGood != 3 || b.Txn != nil {
		t.Fatalf("bundle record %+v", b)
	}
}
