package node

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/ferrygitops/ferry/apply"
	"github.com/ferrygitops/ferry/daemon"
	"github.com/ferrygitops/ferry/rollout"
	"github.com/ferrygitops/ferry/store"
)

// removable is the tree of revision rev of a bundle for the tests of ferry tree and ferry
// remove: the site's Namespace (annotated prune: disabled, so that what others keep in it
// outlives a removal), the ConfigMap site and the Deployment web. With gate, the component's
// health waits for a ConfigMap "gate" the test creates. With helm, a Helm component "cache"
// follows: release cache, with the ConfigMap cache-settings.
func (s *site) removable(rev uint64, gate, helm bool) map[string]string {
	checks := ""
	if gate {
		checks = ", healthChecks: [{apiVersion: v1, kind: ConfigMap, name: gate, namespace: " + s.ns + "}]"
	}
	files := map[string]string{
		"ferry.yaml": fmt.Sprintf("apiVersion: ferry.dev/v1\nkind: Bundle\nmetadata: {name: %s}\nspec:\n  version: 1.0.%d\n  components:\n"+
			"    - name: app\n      kustomize: {path: ./app, prune: true, wait: true, timeout: 90s, postBuild: {}%s}\n", s.bundle, rev, checks),
		"app/ns.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: " + s.ns + ", annotations: {ferry.dev/prune: disabled}}\n",
		"app/cm.yaml": fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: site, namespace: %s}\ndata: {revision: \"%d\"}\n", s.ns, rev),
		"app/deploy.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: " + s.ns + "}\nspec:\n  replicas: 1\n" +
			"  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: registry.local/web:1}]}\n",
	}
	if helm {
		files["ferry.yaml"] += "    - name: cache\n      helm: {chart: ./charts/cache, releaseName: cache, targetNamespace: " + s.ns + ", timeout: 30s}\n"
		files["charts/cache/Chart.yaml"] = fmt.Sprintf("apiVersion: v2\nname: cache\nversion: 1.0.%d\n", rev)
		files["charts/cache/templates/settings.yaml"] = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: {{ .Release.Name }}-settings}\ndata: {size: small}\n"
	}
	return files
}

// removeSite is a site whose USB source watches media/usb0; stick returns where a revision
// goes on it.
func removeSite(t *testing.T, bundle string) (s *site, stick func(rev uint64) string) {
	t.Helper()
	s = newSite(t, bundle)
	media := filepath.Join(s.dir, "media")
	if err := os.MkdirAll(filepath.Join(media, "usb0"), 0o755); err != nil {
		t.Fatal(err)
	}
	s.writeConfig(t, fmt.Sprintf("  - name: usb\n    usb: {paths: [%s], interval: 300ms}\n", media))
	return s, func(rev uint64) string { return filepath.Join(media, "usb0", fmt.Sprintf("%s-%d.tar", bundle, rev)) }
}

func healthyAt(rev uint64) func(daemon.BundleStatus) bool {
	return func(b daemon.BundleStatus) bool {
		return b.Revision == rev && b.State == store.StateHealthy && b.Applying == 0
	}
}

func removedStatus(b daemon.BundleStatus) bool {
	return b.Revision == 0 && b.LastGood == 0 && b.Applying == 0 && b.State == "" && !b.Removed.IsZero()
}

// present reports which of the named objects of the site's namespace exist: ConfigMaps by
// name, "deployment/web", "namespace".
func (s *site) present(t *testing.T, names ...string) map[string]bool {
	t.Helper()
	cs, err := kubernetes.NewForConfig(tb.REST)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, n := range names {
		var err error
		switch n {
		case "deployment/web":
			_, err = cs.AppsV1().Deployments(s.ns).Get(t.Context(), "web", metav1.GetOptions{})
		case "namespace":
			var ns *corev1.Namespace
			if ns, err = cs.CoreV1().Namespaces().Get(t.Context(), s.ns, metav1.GetOptions{}); err == nil && ns.DeletionTimestamp != nil {
				err = apierrors.NewNotFound(corev1.Resource("namespaces"), s.ns) // going
			}
		default:
			_, err = cs.CoreV1().ConfigMaps(s.ns).Get(t.Context(), n, metav1.GetOptions{})
		}
		switch {
		case err == nil:
			out[n] = true
		case !apierrors.IsNotFound(err):
			t.Fatalf("get %s: %v", n, err)
		}
	}
	return out
}

func (s *site) createConfigMap(t *testing.T, name string) {
	t.Helper()
	cs, err := kubernetes.NewForConfig(tb.REST)
	if err != nil {
		t.Fatal(err)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.ns}, Data: map[string]string{"owner": "someone else"}}
	if _, err := cs.CoreV1().ConfigMaps(s.ns).Create(t.Context(), cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func tree(t *testing.T, c *daemon.Client, bundle, query string) (rollout.Tree, error) {
	t.Helper()
	var tr rollout.Tree
	err := c.Do(t.Context(), "GET", "/v1/bundles/"+bundle+"/tree"+query, nil, &tr)
	return tr, err
}

// statuses is a tree's objects as "ID=Status".
func statuses(tr rollout.Tree) []string {
	var out []string
	for _, c := range tr.Components {
		for _, o := range c.Objects {
			out = append(out, o.ID+"="+o.Status)
		}
	}
	slices.Sort(out)
	return out
}

func history(t *testing.T, c *daemon.Client, bundle string) map[uint64]store.State {
	t.Helper()
	var revs []store.Revision
	if err := c.Do(t.Context(), "GET", "/v1/bundles/"+bundle+"/history", nil, &revs); err != nil {
		t.Fatal(err)
	}
	out := map[uint64]store.State{}
	for _, r := range revs {
		out[r.Revision] = r.State
	}
	return out
}

// stayGone checks, over several drift intervals (2s), that none of the named objects comes
// back: the daemon applies nothing of a removed bundle by itself.
func (s *site) stayGone(t *testing.T, c *daemon.Client, names ...string) {
	t.Helper()
	for end := time.Now().Add(3 * 2 * time.Second); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		if got := s.present(t, names...); len(got) > 0 {
			t.Fatalf("re-applied after the removal: %v", got)
		}
	}
	s.waitStatus(t, c, "still removed", time.Second, removedStatus)
}

// TestTreeAndRemove: ferry tree shows the running revision's objects with their health;
// ferry remove deletes what the bundle applied and stops the daemon applying it, while the
// node keeps its history and a newer revision rolls out as usual.
func TestTreeAndRemove(t *testing.T) {
	s, stick := removeSite(t, "treerm")
	c := s.start(t)
	s.export(t, 1, s.removable(1, false, true), stick(1))
	s.waitStatus(t, c, "revision 1", time.Minute, healthyAt(1))
	s.createConfigMap(t, "bystander") // not Ferry's, in the bundle's namespace

	tr, err := tree(t, c, s.bundle, "")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"ConfigMap treerm/cache-settings=Current", "ConfigMap treerm/site=Current", "Deployment.apps treerm/web=Current", "Namespace treerm=Current"}
	if got := statuses(tr); tr.Revision != 1 || !tr.Running || tr.State != store.StateHealthy || len(tr.Components) != 2 ||
		tr.Components[0].Name != "app" || tr.Components[0].Release != nil || !slices.Equal(got, want) {
		t.Fatalf("tree of the running revision: %+v, objects %v, want %v", tr, got, want)
	}
	if rel := tr.Components[1].Release; tr.Components[1].Name != "cache" || rel == nil || rel.Name != "cache" || rel.Namespace != s.ns ||
		rel.Status != "Current" || rel.Version != 1 || len(tr.Components[1].Objects) != 1 {
		t.Fatalf("the Helm component in the tree: %+v", tr.Components[1])
	}
	if tr1, err := tree(t, c, s.bundle, "?revision=1"); err != nil || !slices.Equal(statuses(tr1), want) {
		t.Fatalf("tree of revision 1 named: %v %v", statuses(tr1), err)
	}
	for _, q := range []struct{ bundle, query string }{{s.bundle, "?revision=7"}, {"nosuchbundle", ""}} {
		if _, err := tree(t, c, q.bundle, q.query); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("tree of %s%s: %v, want not found", q.bundle, q.query, err)
		}
	}
	if _, err := tree(t, c, s.bundle, "?revision=x"); err == nil {
		t.Error("tree with revision=x was answered")
	}

	var rm apply.Removal
	if err := c.Do(t.Context(), "POST", "/v1/bundles/"+s.bundle+"/remove", nil, &rm); err != nil {
		t.Fatal(err)
	}
	var pruned []string
	for _, o := range rm.Pruned {
		pruned = append(pruned, o.String())
	}
	slices.Sort(pruned)
	if rm.Revision != 1 || !slices.Equal(pruned, []string{"ConfigMap treerm/site", "Deployment.apps treerm/web"}) || !slices.Equal(rm.Releases, []string{"treerm/cache"}) {
		t.Fatalf("removal %+v, pruned %v", rm, pruned)
	}
	if got := s.present(t, "site", "deployment/web", "cache-settings", "bystander", "namespace"); len(got) != 2 || !got["bystander"] || !got["namespace"] {
		t.Fatalf("after the removal the cluster holds %v, want the bystander ConfigMap and the Namespace (prune: disabled) only", got)
	}
	s.waitStatus(t, c, "removed", 5*time.Second, removedStatus)
	if h := history(t, c, s.bundle); len(h) != 1 || h[1] != store.StateRemoved {
		t.Fatalf("history after the removal: %v", h)
	}
	if _, err := tree(t, c, s.bundle, ""); !errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), "removed") {
		t.Errorf("tree of a removed bundle: %v", err)
	}
	// The Namespace stays, still labelled as the bundle's (prune: disabled leaves it as it is).
	if tr, err := tree(t, c, s.bundle, "?revision=1"); err != nil || tr.Running || tr.State != store.StateRemoved ||
		!slices.Equal(statuses(tr), []string{"ConfigMap treerm/cache-settings=NotFound", "ConfigMap treerm/site=NotFound", "Deployment.apps treerm/web=NotFound", "Namespace treerm=Current"}) ||
		len(tr.Components) != 2 || tr.Components[1].Release == nil || tr.Components[1].Release.Status != "NotFound" {
		t.Errorf("tree of the removed revision: %+v %v %v", tr, statuses(tr), err)
	}
	var ae *daemon.APIError
	if err := c.Do(t.Context(), "POST", "/v1/bundles/"+s.bundle+"/remove", nil, nil); !errors.As(err, &ae) || ae.Status != 409 {
		t.Errorf("removing a removed bundle: %v, want a 409", err)
	}
	s.stayGone(t, c, "site", "deployment/web", "cache-settings")

	s.export(t, 2, s.removable(2, false, true), stick(2))
	s.waitStatus(t, c, "revision 2 after the removal", time.Minute, healthyAt(2))
	if d := configMapData(t, s.ns); d["revision"] != "2" {
		t.Fatalf("cluster after revision 2: %v", d)
	}
	if h := history(t, c, s.bundle); h[1] != store.StateRemoved || h[2] != store.StateHealthy {
		t.Fatalf("history after revision 2: %v", h)
	}
}

// TestRemoveSuspendedAndRollback: a removal is refused, naming the rollout, while one is in
// progress; a suspended bundle can be removed; an object that no longer carries the bundle's
// label is left; resuming applies nothing; ferry rollback brings the bundle back.
func TestRemoveSuspendedAndRollback(t *testing.T) {
	s, stick := removeSite(t, "rmsusp")
	c := s.start(t)
	s.export(t, 1, s.removable(1, false, false), stick(1))
	s.waitStatus(t, c, "revision 1", time.Minute, healthyAt(1))

	s.export(t, 2, s.removable(2, true, false), stick(2))
	s.waitStatus(t, c, "revision 2 applying", time.Minute, func(b daemon.BundleStatus) bool { return b.Applying == 2 })
	var ae *daemon.APIError
	err := c.Do(t.Context(), "POST", "/v1/bundles/"+s.bundle+"/remove", nil, nil)
	if !errors.As(err, &ae) || ae.Status != 409 || !strings.Contains(err.Error(), "revision 2 is being applied") {
		t.Fatalf("remove during the rollout of 2: %v, want a 409 naming it", err)
	}
	s.createConfigMap(t, "gate")
	s.waitStatus(t, c, "revision 2", time.Minute, healthyAt(2))

	if err := c.Do(t.Context(), "POST", "/v1/bundles/"+s.bundle+"/suspend", nil, nil); err != nil {
		t.Fatal(err)
	}
	// Someone takes the ConfigMap over: it no longer carries the bundle's label.
	cs, err := kubernetes.NewForConfig(tb.REST)
	if err != nil {
		t.Fatal(err)
	}
	patch := fmt.Appendf(nil, `{"metadata":{"labels":{%q:null}}}`, apply.LabelBundle)
	if _, err := cs.CoreV1().ConfigMaps(s.ns).Patch(t.Context(), "site", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	var rm apply.Removal
	if err := c.Do(t.Context(), "POST", "/v1/bundles/"+s.bundle+"/remove", nil, &rm); err != nil {
		t.Fatal(err)
	}
	if rm.Revision != 2 || len(rm.Pruned) != 1 || rm.Pruned[0].String() != "Deployment.apps rmsusp/web" {
		t.Fatalf("removal of the suspended bundle: %+v", rm)
	}
	if got := s.present(t, "site", "deployment/web", "gate"); !got["site"] || got["deployment/web"] || !got["gate"] {
		t.Fatalf("after the removal the cluster holds %v, want the ConfigMap taken over and the gate", got)
	}
	if err := c.Do(t.Context(), "POST", "/v1/bundles/"+s.bundle+"/resume", nil, nil); err != nil {
		t.Fatal(err)
	}
	s.stayGone(t, c, "deployment/web")
	if h := history(t, c, s.bundle); h[1] != store.StateHealthy || h[2] != store.StateRemoved {
		t.Fatalf("history after the removal: %v", h)
	}

	var rep rollout.Report
	if err := c.Do(t.Context(), "POST", "/v1/bundles/"+s.bundle+"/rollback", map[string]uint64{"revision": 1}, &rep); err != nil {
		t.Fatal(err)
	}
	s.waitStatus(t, c, "rolled back to 1", 5*time.Second, healthyAt(1))
	if got := s.present(t, "deployment/web"); !got["deployment/web"] || configMapData(t, s.ns)["revision"] != "1" {
		t.Fatalf("after the rollback to 1: %v, ConfigMap %v", got, configMapData(t, s.ns))
	}
}

// TestRemoveCrash: a daemon killed in the middle of a removal (the removal recorded, nothing
// pruned yet; everything pruned, the removal not yet closed) finishes it when it starts
// again, and applies nothing of the bundle.
func TestRemoveCrash(t *testing.T) {
	s, stick := removeSite(t, "rmcrash")
	socket := filepath.Join(s.dir, "run", "ferry.sock")
	c := daemon.NewClient(socket)
	for i, point := range []string{"remove:begun", "remove:pruned"} {
		rev := uint64(i + 1)
		stop := s.startChild(t, "")
		s.export(t, rev, s.removable(rev, false, false), stick(rev))
		s.waitStatus(t, c, fmt.Sprintf("revision %d", rev), time.Minute, healthyAt(rev))
		stop()

		exited := s.startChild(t, point)
		s.waitStatus(t, c, "daemon up", 30*time.Second, healthyAt(rev))
		if err := c.Do(t.Context(), "POST", "/v1/bundles/"+s.bundle+"/remove", nil, nil); err == nil {
			t.Fatalf("%s: the removal returned, the daemon was to be killed at the crash point", point)
		}
		exited()

		stop = s.startChild(t, "")
		s.waitStatus(t, c, point+": removed after the restart", time.Minute, removedStatus)
		if h := history(t, c, s.bundle); h[rev] != store.StateRemoved {
			t.Fatalf("%s: history %v", point, h)
		}
		s.stayGone(t, c, "site", "deployment/web")
		stop()
	}
}

// startChild runs the site's daemon as a child process (see runChild), with FERRY_CRASH_AT
// set to crashAt if not empty, and returns a function that waits for it to end: SIGTERM
// first when it was started without a crash point, otherwise for the crash point's SIGKILL.
func (s *site) startChild(t *testing.T, crashAt string) func() {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+s.config)
	if crashAt != "" {
		cmd.Env = append(cmd.Env, "FERRY_CRASH_AT="+crashAt)
	}
	log := &lineLog{changed: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	done := false
	wait := func() {
		t.Helper()
		if done {
			return
		}
		done = true
		if crashAt == "" {
			cmd.Process.Signal(syscall.SIGTERM)
		}
		select {
		case err := <-exited:
			ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
			if crashAt != "" && ws.Signal() != syscall.SIGKILL {
				t.Fatalf("the daemon was not killed at %s (%v); its log:\n%s", crashAt, err, log)
			}
			if crashAt == "" && err != nil {
				t.Fatalf("the daemon stopped with %v; its log:\n%s", err, log)
			}
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("the daemon did not stop; its log:\n%s", log)
		}
	}
	t.Cleanup(func() {
		if !done {
			cmd.Process.Kill()
			<-exited
		}
	})
	return wait
}
