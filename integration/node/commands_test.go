package node

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/ferrygitops/ferry/daemon"
	"github.com/ferrygitops/ferry/rollout"
	"github.com/ferrygitops/ferry/store"
)

// TestTechnicianCommands drives the daemon through its API as `ferry` does: suspend holds a
// new revision back and resume lets it through; rollback goes back to an old revision and
// stays there; import takes a bundle from a path no source watches; metrics, /healthz and
// /readyz answer on loopback.
func TestTechnicianCommands(t *testing.T) {
	s := newSite(t, "tech")
	media := filepath.Join(s.dir, "media")
	stick := filepath.Join(media, "usb0")
	os.MkdirAll(stick, 0o755)
	s.metrics = freeAddr(t)
	s.writeConfig(t, fmt.Sprintf("  - name: usb\n    usb: {paths: [%s], interval: 300ms}\n", media))
	c := s.start(t)
	healthy := func(rev uint64) func(daemon.BundleStatus) bool {
		return func(b daemon.BundleStatus) bool {
			return b.Revision == rev && b.State == store.StateHealthy && b.Applying == 0
		}
	}
	s.ship(t, 1, false, filepath.Join(stick, "tech-1.tar"))
	s.waitStatus(t, c, "revision 1", time.Minute, healthy(1))
	s.ship(t, 2, false, filepath.Join(stick, "tech-2.tar"))
	s.waitStatus(t, c, "revision 2", time.Minute, healthy(2))

	// Suspended, a new revision is admitted but not applied.
	var out map[string]string
	if err := c.Do(t.Context(), "POST", "/v1/bundles/tech/suspend", nil, &out); err != nil || out["result"] != "suspended" {
		t.Fatalf("suspend: %v %v", out, err)
	}
	s.ship(t, 3, false, filepath.Join(stick, "tech-3.tar"))
	s.waitStatus(t, c, "revision 3 admitted", time.Minute, func(b daemon.BundleStatus) bool { return b.Newest == 3 && b.Suspended })
	time.Sleep(3 * time.Second) // several drift intervals (2s): nothing may move
	if st := s.waitStatus(t, c, "status", time.Second, func(daemon.BundleStatus) bool { return true }); st.Revision != 2 {
		t.Fatalf("a suspended bundle moved to revision %d", st.Revision)
	}
	if err := c.Do(t.Context(), "POST", "/v1/bundles/tech/resume", nil, &out); err != nil {
		t.Fatal(err)
	}
	s.waitStatus(t, c, "revision 3 after resume", time.Minute, healthy(3))

	// Rollback to 1: applied, and 2 and 3 are marked rolled back, so the daemon stays.
	var rep rollout.Report
	if err := c.Do(t.Context(), "POST", "/v1/bundles/tech/rollback", map[string]uint64{"revision": 1}, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Revision != 1 || rep.State != store.StateHealthy {
		t.Fatalf("rollback report %+v", rep)
	}
	if d := configMapData(t, s.ns); d["revision"] != "1" {
		t.Fatalf("cluster after rollback: %v", d)
	}
	time.Sleep(3 * time.Second)
	s.waitStatus(t, c, "still revision 1", time.Second, healthy(1))
	if err := c.Do(t.Context(), "POST", "/v1/bundles/tech/rollback", map[string]uint64{"revision": 99}, &rep); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("rollback to a revision the node does not have: %v", err)
	}

	// Import from a path no source watches.
	elsewhere := filepath.Join(s.dir, "handed-over.tar")
	s.ship(t, 4, false, elsewhere)
	var rev store.Revision
	if err := c.Do(t.Context(), "POST", "/v1/import", map[string]string{"ref": elsewhere}, &rev); err != nil || rev.Revision != 4 {
		t.Fatalf("import: %+v %v", rev, err)
	}
	s.waitStatus(t, c, "imported revision 4", time.Minute, healthy(4))
	if err := c.Do(t.Context(), "POST", "/v1/import", map[string]string{"ref": elsewhere}, &rev); err == nil {
		t.Fatal("importing the same revision again was accepted")
	}
	// ferry import's progress line reads this while an import runs; none runs now.
	var ip daemon.ImportProgress
	if err := c.Do(t.Context(), "GET", "/v1/import/progress", nil, &ip); err != nil || ip.Active {
		t.Fatalf("import progress with no import running: %+v %v", ip, err)
	}

	// A hand edit is drift: corrected at the next drift check (2s here) and recorded as an event.
	cs, err := kubernetes.NewForConfig(tb.REST)
	if err != nil {
		t.Fatal(err)
	}
	patch := []byte(`{"data":{"revision":"edited by hand"}}`)
	if _, err := cs.CoreV1().ConfigMaps(s.ns).Patch(t.Context(), "site", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		var evs []store.Event
		c.Do(t.Context(), "GET", "/v1/events?limit=1000", nil, &evs)
		found := false
		for _, e := range evs {
			found = found || (e.Reason == "Drift" && strings.Contains(e.Message, "1 corrected") && strings.Contains(e.Message, "/data/revision"))
		}
		if found && configMapData(t, s.ns)["revision"] == "4" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no corrected drift event; cluster holds %v", configMapData(t, s.ns))
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Metrics and probes.
	get := func(path string) string {
		resp, err := http.Get("http://" + s.metrics + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %s %s", path, resp.Status, b)
		}
		return string(b)
	}
	m := get("/metrics")
	for _, want := range []string{`ferry_revision_info{bundle="tech",revision="4",state="healthy",version="1.0.4"} 1`,
		`ferry_reconcile_duration_seconds_count{bundle="tech",operation="rollout"}`, `ferry_ingest_bytes_total{source="usb"}`, "process_resident_memory_bytes"} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	get("/healthz")
	get("/readyz")
}
