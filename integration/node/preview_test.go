package node

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/ferrygitops/ferry/apply"
	"github.com/ferrygitops/ferry/bundler"
	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/daemon"
	"github.com/ferrygitops/ferry/store"
	"github.com/ferrygitops/ferry/verify"
)

// TestPreview: `ferry import --dry-run` and `ferry diff` on the node. Against revision 1
// running, the preview of revision 2 names the ConfigMap it changes (with its diff), the
// Secret it creates (values masked), the Deployment it prunes and the Namespace it leaves;
// nothing is written (no revision, no event, the cluster unchanged). A revision the node
// holds is "held", an older one "refused", one the API server refuses in its dry run counts
// as refused, and an untrusted one is refused before anything is rendered.
func TestPreview(t *testing.T) {
	s := newSite(t, "preview")
	// The Deployment of revision 1 must become Ready while the other test packages load the
	// machine (kwok reported it after 37 s once in CI): the verdict is not what is tested here.
	s.timeout = "2m"
	media := filepath.Join(s.dir, "media")
	s.writeConfig(t, fmt.Sprintf("  - name: usb\n    usb: {paths: [%s], interval: 300ms}\n", media))
	if err := os.MkdirAll(filepath.Join(media, "usb0"), 0o755); err != nil {
		t.Fatal(err)
	}
	c := s.start(t)
	s.ship(t, 1, false, filepath.Join(media, "usb0", "preview-1.tar"))
	s.waitStatus(t, c, "revision 1", 3*time.Minute, func(b daemon.BundleStatus) bool {
		return b.Revision == 1 && b.State == store.StateHealthy && b.Applying == 0
	})

	// Revision 2, on a path no source watches: the ConfigMap changes, the Deployment goes, a
	// Secret comes.
	const secretValue = "s3cr3t-value-9f2"
	tree := map[string]string{
		"ferry.yaml": "apiVersion: ferry.dev/v1\nkind: Bundle\nmetadata: {name: preview}\nspec:\n  version: 1.0.2\n  components:\n" +
			"    - name: app\n      kustomize: {path: ./app, prune: true, postBuild: {}}\n",
		"app/kustomization.yaml": "resources: [ns.yaml, cm.yaml, secret.yaml]\n",
		"app/ns.yaml":            "apiVersion: v1\nkind: Namespace\nmetadata: {name: preview}\n",
		"app/cm.yaml":            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: site, namespace: preview}\ndata: {revision: \"2\", site: \"${SITE_ID}\"}\n",
		"app/secret.yaml":        "apiVersion: v1\nkind: Secret\nmetadata: {name: token, namespace: preview}\nstringData: {token: " + secretValue + "}\n",
	}
	rev2 := filepath.Join(s.dir, "out", "preview-2.tar")
	s.export(t, 2, tree, rev2)

	before := nodeRecords(t, c, s.bundle)
	var p daemon.Preview
	if err := c.Do(t.Context(), "POST", "/v1/preview", map[string]string{"ref": rev2}, &p); err != nil {
		t.Fatal(err)
	}
	t.Logf("preview: %+v", p)
	if p.Bundle != "preview" || p.Revision != 2 || p.Running != 1 || p.Admission != "new" || len(p.Signers) != 1 || p.Plan.Refused != 0 {
		t.Fatalf("preview of revision 2: %+v", p)
	}
	changes := map[string]apply.Planned{}
	for _, ch := range p.Plan.Changes {
		changes[ch.Action+" "+ch.ID] = ch
	}
	cm, ok := changes["change ConfigMap preview/site"]
	if !ok || !strings.Contains(cm.Diff, `-  revision: "1"`) || !strings.Contains(cm.Diff, `+  revision: "2"`) {
		t.Errorf("the ConfigMap's change is not shown with its diff: %+v", changes)
	}
	if strings.Contains(cm.Diff, "${SITE_ID}") {
		t.Errorf("the preview does not substitute the node's variables:\n%s", cm.Diff)
	}
	sec, ok := changes["create Secret preview/token"]
	if !ok || strings.Contains(sec.Diff, secretValue) || strings.Contains(sec.Diff, base64.StdEncoding.EncodeToString([]byte(secretValue))) || !strings.Contains(sec.Diff, "token: <hidden") {
		t.Errorf("the Secret's creation is not shown, or not masked: %+v", sec)
	}
	if _, ok := changes["prune Deployment.apps preview/web"]; !ok {
		t.Errorf("the Deployment revision 2 no longer has is not shown as pruned: %+v", changes)
	}
	if len(p.Plan.Changes) != 3 || p.Plan.Unchanged != 1 {
		t.Errorf("want 3 changes and 1 unchanged (the Namespace), got %d and %d: %+v", len(p.Plan.Changes), p.Plan.Unchanged, p.Plan.Changes)
	}
	// Nothing written: no revision, no event, the cluster as revision 1 left it.
	if after := nodeRecords(t, c, s.bundle); after != before {
		t.Errorf("the preview wrote to the node: before %s, after %s", before, after)
	}
	if d := configMapData(t, s.ns); d["revision"] != "1" {
		t.Errorf("the preview changed the cluster: ConfigMap %v", d)
	}
	cs, err := kubernetes.NewForConfig(tb.REST)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Secrets(s.ns).Get(t.Context(), "token", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the preview created the Secret: %v", err)
	}
	if _, err := cs.AppsV1().Deployments(s.ns).Get(t.Context(), "web", metav1.GetOptions{}); err != nil {
		t.Errorf("the preview pruned the Deployment: %v", err)
	}

	// The revision the node holds: "held", and nothing to change.
	if err := c.Do(t.Context(), "POST", "/v1/preview", map[string]string{"ref": filepath.Join(media, "usb0", "preview-1.tar")}, &p); err != nil {
		t.Fatal(err)
	}
	if p.Admission != "held" || len(p.Plan.Changes) != 0 || p.Plan.Unchanged != 3 {
		t.Errorf("preview of the running revision: %+v", p)
	}

	// One the API server refuses (replicas below 0): admitted, but its rollout would fail.
	tree["app/kustomization.yaml"] = "resources: [ns.yaml, cm.yaml, bad.yaml]\n"
	tree["app/bad.yaml"] = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: bad, namespace: preview}\nspec:\n  replicas: -1\n" +
		"  selector: {matchLabels: {app: bad}}\n  template:\n    metadata: {labels: {app: bad}}\n    spec: {containers: [{name: c, image: registry.local/bad:1}]}\n"
	rev3 := filepath.Join(s.dir, "out", "preview-3.tar")
	s.export(t, 3, tree, rev3)
	if err := c.Do(t.Context(), "POST", "/v1/preview", map[string]string{"ref": rev3}, &p); err != nil {
		t.Fatal(err)
	}
	refused := false
	for _, ch := range p.Plan.Changes {
		refused = refused || (ch.ID == "Deployment.apps preview/bad" && strings.Contains(ch.Error, "replicas"))
	}
	if p.Admission != "new" || p.Plan.Refused != 1 || !refused {
		t.Errorf("preview of a revision the API server refuses: %+v", p)
	}

	// Signed by a key the node does not trust: refused as untrusted, before rendering.
	other := *s
	other.key = filepath.Join(s.dir, "other.key")
	priv, _, err := bundler.GenerateKeyPair([]byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(other.key, priv, 0o600); err != nil {
		t.Fatal(err)
	}
	untrusted := filepath.Join(s.dir, "out", "untrusted.tar")
	other.export(t, 4, tree, untrusted)
	err = c.Do(t.Context(), "POST", "/v1/preview", map[string]string{"ref": untrusted}, &p)
	if !errors.Is(err, verify.ErrUntrusted) {
		t.Errorf("preview of an untrusted bundle: %v, want untrusted", err)
	}

	// Once revision 2 is running, a revision 1 with other content than the one held is
	// refused, as import would refuse it; the revision 1 it holds stays "held".
	var rev store.Revision
	if err := c.Do(t.Context(), "POST", "/v1/import", map[string]string{"ref": rev2}, &rev); err != nil {
		t.Fatal(err)
	}
	s.waitStatus(t, c, "revision 2", 3*time.Minute, func(b daemon.BundleStatus) bool { return b.Revision == 2 && b.Applying == 0 })
	other1 := filepath.Join(s.dir, "out", "preview-1-other.tar")
	s.export(t, 1, tree, other1)
	if err := c.Do(t.Context(), "POST", "/v1/preview", map[string]string{"ref": other1}, &p); err != nil {
		t.Fatal(err)
	}
	if p.Admission != "refused" || p.NotAdmitted == "" || p.Running != 2 {
		t.Errorf("preview of another revision 1: admission %q (%s), want refused", p.Admission, p.NotAdmitted)
	}

	// The daemon's log through the API (ferry logs): this bundle's records, the rollouts in it.
	var recs []daemon.LogRecord
	if err := c.Do(t.Context(), "GET", "/v1/logs?bundle=preview", nil, &recs); err != nil {
		t.Fatal(err)
	}
	admitted := 0
	for _, r := range recs {
		if r.Attrs["bundle"] != "preview" {
			t.Errorf("GET /v1/logs?bundle=preview returned %+v", r)
		}
		if r.Message == "admitted" {
			admitted++
		}
	}
	if admitted != 2 {
		t.Errorf("the log shows %d admissions of preview, want 2 (revisions 1 and 2): %+v", admitted, recs)
	}

	// The preflight against the testbed's API server, beside the running daemon.
	checks := daemon.Preflight(t.Context(), s.config, daemon.PreflightOptions{})
	got := map[string]daemon.Check{}
	for _, ch := range checks {
		got[ch.Name] = ch
		t.Logf("check %s ok=%v warning=%v: %s", ch.Name, ch.OK, ch.Warning, ch.Detail)
	}
	for _, name := range []string{"config", "kubeconfig", "api-server", "impersonation", "trust-policy", "state-dir", "image-mirror", "clock", "daemon"} {
		if ch := got[name]; !ch.OK || ch.Warning {
			t.Errorf("check %s against the testbed: %+v", name, ch)
		}
	}
	if !strings.Contains(got["api-server"].Detail, "Kubernetes v") || !strings.Contains(got["daemon"].Detail, "1 bundle") {
		t.Errorf("api-server and daemon checks: %+v %+v", got["api-server"], got["daemon"])
	}
}

// export builds the tree at revision rev, signs it with the site's key and writes it as a
// tar at path.
func (s *site) export(t *testing.T, rev uint64, tree map[string]string, path string) {
	t.Helper()
	mem, desc := s.signed(t, rev, tree)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	dst, err := bundles.ParseAddress(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bundles.Copy(t.Context(), memSource{mem}, desc, dst, bundles.Options{}); err != nil {
		t.Fatal(err)
	}
}

// nodeRecords is what the daemon holds of a bundle and its events, to compare before and
// after something that must write nothing.
func nodeRecords(t *testing.T, c *daemon.Client, bundle string) string {
	t.Helper()
	var hist []store.Revision
	if err := c.Do(t.Context(), "GET", "/v1/bundles/"+bundle+"/history", nil, &hist); err != nil {
		t.Fatal(err)
	}
	var events []store.Event
	if err := c.Do(t.Context(), "GET", "/v1/events", nil, &events); err != nil {
		t.Fatal(err)
	}
	var revs []string
	for _, r := range hist {
		revs = append(revs, fmt.Sprintf("%d:%s", r.Revision, r.State))
	}
	return fmt.Sprintf("revisions %v, %d events", revs, len(events))
}
