package cluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ferrygitops/ferry/apply"
	"github.com/ferrygitops/ferry/rollout"
	"github.com/ferrygitops/ferry/store"
)

// TestFullStateDirPausesTheRollout fills the state directory (a small tmpfs) after revision 2
// was admitted, leaving room for the rollout's small writes but not for its inventory: the
// rollout must stop with the revision neither failed nor rolled back, then finish once there
// is room again. (Measured before: the
// good revision was recorded failed, rolled back, and stayed rejected after space was freed.)
func TestFullStateDirPausesTheRollout(t *testing.T) {
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("this test needs to mount a small tmpfs (root, as the testbed machine is): %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	n := newNodeAt(t, filepath.Join(dir, "state"), "fullsd", apply.Options{})
	ns := "fullsd"
	comp := "- name: app\n  kustomize: {path: ./app, prune: true}\n"
	n.admit(t, 1, comp, map[string]string{"app/ns.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: " + ns + "}\n", "app/cm.yaml": cm(ns, "one", "1")})
	if _, err := n.eng.Rollout(ctxTimeout(t, 60e9), "fullsd", 1); err != nil {
		t.Fatal(err)
	}
	// Revision 2: 1,500 ConfigMaps, so its inventory needs pages the database does not have.
	var many strings.Builder
	for i := range 1500 {
		many.WriteString("---\n" + cm(ns, fmt.Sprintf("many-%04d", i), "2"))
	}
	n.admit(t, 2, comp, map[string]string{"app/ns.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: " + ns + "}\n", "app/many.yaml": many.String()})
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for block := make([]byte, 64<<10); ; {
		if _, err := f.Write(block); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	// Room for the small writes of the rollout (opening it, recording a state), not for
	// its inventory: the disk fills in the middle of the rollout, as it did when measured.
	fi, _ := f.Stat()
	if err := f.Truncate(fi.Size() - 96<<10); err != nil {
		t.Fatal(err)
	}
	f.Close()

	_, err = n.eng.Rollout(ctxTimeout(t, 120e9), "fullsd", 2)
	if err == nil {
		t.Fatal("the rollout succeeded on a full state directory: the test setup is off")
	}
	t.Logf("rollout on a full state directory: %v", err)
	if !store.WriteFailed(err) || errors.Is(err, rollout.ErrRolledBack) {
		t.Fatalf("err = %v, want a state-directory failure that pauses the rollout", err)
	}
	if st := n.state(t, 2); st == store.StateFailed || st == store.StateRolledBack {
		t.Fatalf("revision 2 is %s after a full disk; the revision is not at fault", st)
	}
	if b, _ := n.st.GetBundle("fullsd"); b.LastGood != 1 {
		t.Fatalf("bundle %+v", b)
	}

	os.Remove(filler)
	if _, err := n.eng.Resume(ctxTimeout(t, 120e9), "fullsd"); err != nil {
		t.Fatal(err)
	}
	b, _ := n.st.GetBundle("fullsd")
	if b.Txn == nil && b.Current != 2 {
		// Nothing was recorded before the disk filled: the rollout starts anew.
		if _, err := n.eng.Rollout(ctxTimeout(t, 120e9), "fullsd", 2); err != nil {
			t.Fatal(err)
		}
	}
	if st := n.state(t, 2); st != store.StateHealthy {
		t.Fatalf("revision 2 is %s once there is room, want healthy", st)
	}
	cms, err := n.dyn.Resource(gvr("", "v1", "configmaps")).Namespace(ns).List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(cms.Items) < 1500 {
		t.Fatalf("%d ConfigMaps in %s, want the 1,500 of revision 2", len(cms.Items), ns)
	}
}
