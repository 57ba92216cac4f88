package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/ferrygitops/ferry/daemon"
	"github.com/ferrygitops/ferry/store"
)

// TestAPIServerOutagesDoNotFailARevision stops the control plane (API server, controller
// manager, scheduler: what a k3s restart or upgrade does) while the daemon applies a
// revision, while it waits for its health, and while it rolls back a failing one, for a short
// outage and for one longer than the health timeout and the rollout's deadline, and starts it
// again on the same ports. A good revision must end healthy with no rollback; a failing one
// must end rolled back, with nothing of it left.
//
// The timeouts are scaled down (health 20s, deadline margin 5s, so a rollout's deadline is
// 25s). The control plane takes 15-25s to start here, so the short outage (stopped and
// started at once) falls within the health timeout and the long one (15s more) exceeds the
// timeout and the deadline both.
func TestAPIServerOutagesDoNotFailARevision(t *testing.T) {
	s := newSite(t, "outage-site")
	s.timeout, s.margin, s.configMaps = "20s", 5*time.Second, 300
	stick := filepath.Join(s.dir, "media", "usb0")
	os.MkdirAll(stick, 0o755)
	s.writeConfig(t, fmt.Sprintf("  - name: usb\n    usb: {paths: [%s/media], interval: 300ms}\n", s.dir))
	c := s.start(t)
	cs, err := kubernetes.NewForConfig(tb.REST)
	if err != nil {
		t.Fatal(err)
	}
	rev := uint64(1)
	s.ship(t, rev, false, filepath.Join(stick, "outage-1.tar"))
	s.waitStatus(t, c, "revision 1 healthy", 120*time.Second, func(b daemon.BundleStatus) bool {
		return b.Revision == 1 && b.State == store.StateHealthy
	})
	outage := func(t *testing.T, down time.Duration) time.Duration {
		t.Helper()
		begin := time.Now()
		if err := tb.StopControlPlane(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(down)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := tb.StartControlPlane(ctx); err != nil {
			t.Fatal(err)
		}
		return time.Since(begin)
	}
	history := func(t *testing.T) map[uint64]store.Revision {
		var revs []store.Revision
		if err := c.Do(t.Context(), "GET", "/v1/bundles/"+s.bundle+"/history", nil, &revs); err != nil {
			t.Fatal(err)
		}
		out := map[uint64]store.Revision{}
		for _, r := range revs {
			out[r.Revision] = r
		}
		return out
	}
	neverFailed := func(t *testing.T, rev uint64) {
		t.Helper()
		for _, tr := range history(t)[rev].History {
			if tr.State == store.StateFailed || tr.State == store.StateRolledBack {
				t.Fatalf("revision %d was recorded %s (%s) because the API server was away", rev, tr.State, tr.Note)
			}
		}
	}
	gate := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "gate", Namespace: s.ns}}
	for _, tc := range []struct {
		phase string
		down  time.Duration
	}{{"apply", 0}, {"apply", 15 * time.Second}, {"health", 0}, {"health", 15 * time.Second}} {
		t.Run(fmt.Sprintf("%s/%s", tc.phase, tc.down), func(t *testing.T) {
			rev++
			s.gate = tc.phase == "health"
			cs.CoreV1().ConfigMaps(s.ns).Delete(t.Context(), "gate", metav1.DeleteOptions{})
			s.ship(t, rev, false, filepath.Join(stick, fmt.Sprintf("outage-%d.tar", rev)))
			if tc.phase == "apply" {
				s.waitStatus(t, c, "rollout begun", 60*time.Second, func(b daemon.BundleStatus) bool { return b.Applying == rev })
			} else {
				for deadline := time.Now().Add(60 * time.Second); configMapData(t, s.ns)["revision"] != fmt.Sprint(rev); {
					if time.Now().After(deadline) {
						t.Fatal("the revision's objects never reached the cluster")
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
			took := outage(t, tc.down)
			t.Logf("control plane away for %s during %s", took.Round(100*time.Millisecond), tc.phase)
			if s.gate {
				if _, err := cs.CoreV1().ConfigMaps(s.ns).Create(t.Context(), gate, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			s.waitStatus(t, c, "healthy after the outage", 120*time.Second, func(b daemon.BundleStatus) bool {
				return b.Revision == rev && b.State == store.StateHealthy && b.Applying == 0
			})
			neverFailed(t, rev)
		})
	}
	t.Run("rollback", func(t *testing.T) {
		good := rev
		rev++
		// Fails: its Deployment never becomes Ready, so it is rolled back, pruning its 300
		// ConfigMaps; the API server goes away as the rollback begins. (The last good
		// revision waits for the gate, which is there.)
		s.gate = false
		s.ship(t, rev, true, filepath.Join(stick, fmt.Sprintf("outage-%d.tar", rev)))
		for deadline := time.Now().Add(90 * time.Second); history(t)[rev].State != store.StateFailed; {
			if time.Now().After(deadline) {
				t.Fatalf("revision %d never failed: %+v", rev, history(t)[rev])
			}
			time.Sleep(20 * time.Millisecond)
		}
		outage(t, 15*time.Second)
		s.waitStatus(t, c, "rolled back after the outage", 120*time.Second, func(b daemon.BundleStatus) bool {
			return b.Revision == good && b.State == store.StateHealthy && b.Applying == 0
		})
		if st := history(t)[rev].State; st != store.StateRolledBack {
			t.Fatalf("failed revision is %s, want rolled-back", st)
		}
		cms, err := cs.CoreV1().ConfigMaps(s.ns).List(t.Context(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, cm := range cms.Items {
			if strings.HasPrefix(cm.Name, fmt.Sprintf("extra-%d-", rev)) {
				t.Fatalf("%s of the failed revision is still in the cluster", cm.Name)
			}
		}
		if d := configMapData(t, s.ns); d["revision"] != fmt.Sprint(good) {
			t.Fatalf("cluster holds %v, want revision %d", d, good)
		}
	})
}
