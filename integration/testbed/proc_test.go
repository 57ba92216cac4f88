package testbed

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestProcessExitIsReportedWithLog(t *testing.T) {
	dir := t.TempDir()
	p, err := startProcess("broken", "/bin/sh", dir, []string{"-c", "echo 'bind: address already in use' >&2; exit 3"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err = p.waitReady(ctx, func(context.Context) error { return os.ErrNotExist })
	if err == nil {
		t.Fatal("waitReady succeeded for a process that exited")
	}
	for _, want := range []string{"broken exited", "exit status 3", "address already in use"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestStopKillsProcessGroup(t *testing.T) {
	dir := t.TempDir()
	childPID := filepath.Join(dir, "child.pid")
	// The service ignores SIGTERM and forks a child that does too: only the group SIGKILL
	// after the grace period gets rid of both.
	script := `trap '' TERM; sleep 300 & echo $! > ` + childPID + `; wait`
	p, err := startProcess("stubborn", "/bin/sh", dir, []string{"-c", script})
	if err != nil {
		t.Fatal(err)
	}
	var child int
	deadline := time.Now().Add(10 * time.Second)
	for child == 0 && time.Now().Before(deadline) {
		if b, err := os.ReadFile(childPID); err == nil && len(strings.TrimSpace(string(b))) > 0 {
			child, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if child == 0 {
		t.Fatal("child never started")
	}
	if err := p.stop(200 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if processAlive(p.pid()) {
		t.Errorf("service pid %d alive after stop", p.pid())
	}
	// The orphaned child is reparented and reaped by init (or a subreaper); give it a moment.
	deadline = time.Now().Add(5 * time.Second)
	for processAlive(child) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if processAlive(child) {
		t.Errorf("child pid %d of the service survived stop", child)
	}
}

func TestStopLeavesNothingBehind(t *testing.T) {
	small, err := Start(t.Context(), Options{Services: Registry | S3})
	if err != nil {
		t.Fatal(err)
	}
	pids := small.PIDs()
	if len(pids) != 2 {
		t.Fatalf("got %d processes, want registry and versitygw", len(pids))
	}
	if err := small.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if processAlive(pid) {
			t.Errorf("pid %d alive after Stop", pid)
		}
	}
	if _, err := os.Stat(small.Dir); !os.IsNotExist(err) {
		t.Errorf("testbed dir %s still there after Stop (err %v)", small.Dir, err)
	}
	if err := small.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}
