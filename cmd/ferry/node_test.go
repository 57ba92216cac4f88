package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ferrygitops/ferry/daemon"
)

// syncBuffer is the daemon's stdout (its log), written by its goroutines while the test
// reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestNodeCommands runs `ferry daemon` in this process, with no API server behind it
// (127.0.0.1:1), so that bundles are admitted and never applied, and drives it with the
// node commands as a technician would: status of a bundle never applied, reconcile of a
// suspended bundle, an unsigned import, times with their zone, SIGTERM, and the daemon gone.
func TestNodeCommands(t *testing.T) {
	t.Setenv("COSIGN_PASSWORD", "")
	dir := t.TempDir()
	if _, err := runFerry(t, "keys", "generate", "--prefix", filepath.Join(dir, "ci")); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "trust.yaml"), []byte("apiVersion: ferry.dev/v1\nkind: TrustPolicy\nkeys:\n  - name: ci\n    path: ci.pub\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "kubeconfig"), []byte(`apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: none, user: {}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
`), 0o600)
	os.Mkdir(filepath.Join(dir, "media"), 0o755)
	config := filepath.Join(dir, "config.yaml")
	socket := filepath.Join(dir, "run", "ferry.sock")
	os.WriteFile(config, fmt.Appendf(nil, `stateDir: %[1]s/state
kubeconfig: %[1]s/kubeconfig
trust: %[1]s/trust.yaml
socket: %[2]s
metricsAddress: "off"
imagesAddress: "off"
sources: [{name: usb, usb: {paths: [%[1]s/media]}}]
`, dir, socket), 0o600)

	tree := gitTree(t)
	layout := filepath.Join(t.TempDir(), "demo")
	unsigned, signed := filepath.Join(dir, "unsigned.tar"), filepath.Join(dir, "signed.tar")
	for _, args := range [][]string{
		{"bundle", "build", tree, "--to", layout},
		{"bundle", "export", layout, unsigned},
		{"bundle", "sign", layout, "--key", filepath.Join(dir, "ci.key")},
		{"bundle", "export", layout, signed},
	} {
		if _, err := runFerry(t, args...); err != nil {
			t.Fatalf("ferry %s: %v", strings.Join(args, " "), err)
		}
	}

	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		root := newRootCommand()
		root.SetOut(logs)
		root.SetErr(logs)
		root.SetArgs([]string{"daemon", "--config", config})
		done <- root.ExecuteContext(ctx)
	}()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cancel()
			<-done
		}
	})
	node := func(args ...string) (string, error) {
		t.Helper()
		return runFerry(t, append(args, "--socket", socket)...)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := node("status"); err == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("ferry daemon stopped: %v\n%s", err, logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("ferry daemon not answering in 30s:\n%s", logs)
		}
	}

	if out, err := node("import", signed); err != nil || !strings.Contains(out, "admitted demo revision 1") {
		t.Fatalf("import: %v\n%s", err, out)
	}
	// The same revision again: said once, as already admitted, and not an error.
	if out, err := node("import", signed); err != nil || !strings.Contains(out, "already admitted") || strings.Count(out, "demo") != 1 {
		t.Fatalf("import of the revision the node holds: %v\n%s", err, out)
	}

	// The node's receipt, carried back: read at headquarters with the node's key, and the
	// base of a thin export; refused with any other key.
	receipts := filepath.Join(dir, "receipts")
	if out, err := node("receipt", "--out", receipts); err != nil || !strings.Contains(out, "receipt written") {
		t.Fatalf("receipt: %v\n%s", err, out)
	}
	found, _ := filepath.Glob(filepath.Join(receipts, "*.receipt.json"))
	if len(found) != 1 {
		t.Fatalf("receipt files %v", found)
	}
	nodePub := filepath.Join(dir, "state", "node.pub")
	if out, err := runFerry(t, "receipts", receipts, "--node-keys", nodePub); err != nil || !strings.Contains(out, "demo") || !strings.Contains(out, "HEALTHY") {
		t.Fatalf("receipts: %v\n%s", err, out)
	}
	if out, err := runFerry(t, "receipts", receipts, "--node-keys", filepath.Join(dir, "ci.pub")); exitCode(err) != exitUntrusted || !strings.Contains(out, "refused") {
		t.Fatalf("receipts under an unknown key: exit %d, %v\n%s", exitCode(err), err, out)
	}
	thin := filepath.Join(dir, "thin.tar")
	if out, err := runFerry(t, "bundle", "export", layout, thin, "--receipt", found[0], "--node-keys", nodePub); err != nil || !strings.Contains(out, "thin") {
		t.Fatalf("thin export: %v\n%s", err, out)
	}
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"bundle", "export", layout, filepath.Join(dir, "x.tar"), "--receipt", found[0], "--node-keys", filepath.Join(dir, "ci.pub")}, exitUntrusted},
		{[]string{"bundle", "export", layout, filepath.Join(dir, "x.tar"), "--receipt", found[0]}, exitBadInput},
		{[]string{"bundle", "export", layout, filepath.Join(dir, "x.tar"), "--node-keys", nodePub}, exitBadInput},
		{[]string{"mirror", layout, "oci://127.0.0.1:1/x/y", "--receipt", found[0], "--node-keys", nodePub}, exitBadInput},
	} {
		if _, err := runFerry(t, c.args...); exitCode(err) != c.code {
			t.Errorf("ferry %s: exit %d (%v), want %d", strings.Join(c.args, " "), exitCode(err), err, c.code)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "x.tar")); err == nil {
		t.Fatal("a refused thin export wrote its destination")
	}

	// Nothing applied: no revision, no state, no time, said so instead of 0, "" and year 1.
	out, err := node("status")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("status:\n%s", out)
	}
	row := strings.Join(strings.Fields(lines[1]), " ")
	if want := "demo none - not applied none 1 -"; !strings.HasPrefix(row, want) {
		t.Errorf("status row %q, want it to start with %q", row, want)
	}
	if out, err := node("status", "-o", "json"); err != nil || strings.Contains(out, "0001-01-01") {
		t.Errorf("status -o json: %v\n%s", err, out)
	}

	// The preflight beside the running daemon: the daemon answers, the API server (nothing
	// listens at its address) does not, so the check fails with exit 1 and says which.
	out, err = runFerry(t, "check", "--config", config, "-o", "json")
	if exitCode(err) != exitDiffers {
		t.Errorf("ferry check with no API server: exit %d (%v), want %d", exitCode(err), err, exitDiffers)
	}
	var checks []daemon.Check
	if err := json.Unmarshal([]byte(out), &checks); err != nil {
		t.Fatalf("ferry check -o json: %v\n%s", err, out)
	}
	outcome := map[string]bool{}
	for _, c := range checks {
		outcome[c.Name] = c.OK
	}
	if outcome["api-server"] || !outcome["daemon"] || !outcome["trust-policy"] || !outcome["state-dir"] {
		t.Errorf("ferry check: want api-server failed, daemon, trust-policy and state-dir passed:\n%s", out)
	}
	if out, _ := runFerry(t, "check", "--config", config); !strings.Contains(out, "✖ api-server") || !strings.Contains(out, "✔ daemon") {
		t.Errorf("ferry check table:\n%s", out)
	}

	// An unsigned bundle is refused as untrusted, and the exit code says so.
	if _, err := node("import", unsigned); exitCode(err) != exitUntrusted || !strings.Contains(err.Error(), "not signed") {
		t.Errorf("import of an unsigned bundle: exit %d (%v), want %d", exitCode(err), err, exitUntrusted)
	}

	// Reconcile of a suspended bundle would do nothing: it says so, and how to resume.
	if out, err := node("suspend", "demo"); err != nil || !strings.Contains(out, "demo: suspended") {
		t.Fatalf("suspend: %v\n%s", err, out)
	}
	out, err = node("reconcile", "demo")
	if exitCode(err) != exitSuspended || !strings.Contains(fmt.Sprint(err), "suspended") || !strings.Contains(fmt.Sprint(err), "ferry resume demo") {
		t.Errorf("reconcile of a suspended bundle: exit %d (%v), want %d saying it is suspended and how to resume\n%s", exitCode(err), err, exitSuspended, out)
	}
	if strings.Contains(out, "reconcile requested") {
		t.Errorf("reconcile of a suspended bundle printed %q", out)
	}
	if _, err := node("resume", "demo"); err != nil {
		t.Fatal(err)
	}
	if out, err := node("reconcile", "demo"); err != nil || !strings.Contains(out, "reconcile requested") {
		t.Errorf("reconcile after resume: %v\n%s", err, out)
	}

	// Times carry their zone: RFC 3339 in UTC.
	for _, args := range [][]string{{"events"}, {"history", "demo"}} {
		out, err := node(args...)
		if err != nil {
			t.Fatal(err)
		}
		rows := strings.Split(strings.TrimSpace(out), "\n")[1:]
		if len(rows) == 0 {
			t.Fatalf("ferry %s printed no rows", args[0])
		}
		col := 1 // events: SEQ TIME …
		if args[0] == "history" {
			col = 3 // REVISION VERSION STATE ADMITTED …
		}
		for _, r := range rows {
			f := strings.Fields(r)
			if ts, err := time.Parse(time.RFC3339, f[col]); err != nil || !strings.HasSuffix(f[col], "Z") || ts.IsZero() {
				t.Errorf("ferry %s: time %q is not RFC 3339 in UTC: %s", args[0], f[col], r)
			}
		}
	}

	// One revision in full: its signer from the stored verification record, its states.
	if out, err := node("history", "demo", "1"); err != nil || !strings.Contains(out, "demo revision 1") || !strings.Contains(out, "Signed by:") || !strings.Contains(out, "Digest:") {
		t.Errorf("history demo 1: %v\n%s", err, out)
	}
	if out, err := node("history", "demo", "1", "-o", "json"); err != nil || !strings.Contains(out, `"signers": [`) {
		t.Errorf("history demo 1 -o json: %v\n%s", err, out)
	}
	if _, err := node("history", "demo", "99"); err == nil || !strings.Contains(err.Error(), "has no revision 99") {
		t.Errorf("history of a revision the node lacks: %v", err)
	}
	if _, err := node("history", "demo", "x"); exitCode(err) != exitBadInput {
		t.Errorf("history demo x: exit %d", exitCode(err))
	}

	// Shell completion asks the daemon: bundle names, then a bundle's revisions.
	if out, err := runFerry(t, "__complete", "history", "--socket", socket, ""); err != nil || !strings.Contains(out, "demo\trevision") {
		t.Errorf("completion of a bundle name: %v\n%s", err, out)
	}
	if out, err := runFerry(t, "__complete", "rollback", "--socket", socket, "demo", ""); err != nil || !strings.Contains(out, "1\t") {
		t.Errorf("completion of a revision: %v\n%s", err, out)
	}
	if out, err := runFerry(t, "completion", "bash"); err != nil || !strings.Contains(out, "__start_ferry") {
		t.Errorf("ferry completion bash: %v", err)
	}

	// The daemon's log through the API: all of it, one bundle's, a level's, as JSON.
	out, err = node("logs")
	if err != nil || !strings.Contains(out, "daemon started") || !strings.Contains(out, "admitted") {
		t.Errorf("ferry logs: %v\n%s", err, out)
	}
	if out, err := node("logs", "--bundle", "demo", "-o", "json"); err != nil {
		t.Errorf("ferry logs --bundle demo: %v", err)
	} else {
		var recs []daemon.LogRecord
		if err := json.Unmarshal([]byte(out), &recs); err != nil || len(recs) == 0 {
			t.Errorf("ferry logs --bundle demo -o json: %v\n%s", err, out)
		}
		for _, r := range recs {
			if r.Attrs["bundle"] != "demo" {
				t.Errorf("ferry logs --bundle demo printed %+v", r)
			}
		}
	}
	if out, err := node("logs", "--level", "error"); err != nil || strings.Contains(out, "daemon started") {
		t.Errorf("ferry logs --level error shows info records: %v\n%s", err, out)
	}
	if _, err := node("logs", "--level", "loud"); exitCode(err) != exitBadInput {
		t.Errorf("ferry logs --level loud: exit %d (%v), want %d", exitCode(err), err, exitBadInput)
	}

	// Followers: logs -f and events --watch print what comes after they started, one JSON
	// object per line, until stopped.
	follow := func(args ...string) (stop func() string) {
		fctx, fcancel := context.WithCancel(context.Background())
		buf := &syncBuffer{}
		fdone := make(chan struct{})
		go func() {
			defer close(fdone)
			root := newRootCommand()
			root.SetOut(buf)
			root.SetErr(buf)
			root.SetArgs(append(args, "--socket", socket, "-o", "json"))
			root.ExecuteContext(fctx)
		}()
		return func() string {
			fcancel()
			<-fdone
			return buf.String()
		}
	}
	stopLogs, stopEvents := follow("logs", "-f", "--tail", "1"), follow("events", "--watch")
	time.Sleep(500 * time.Millisecond) // both have printed what was there before
	if _, err := node("suspend", "demo"); err != nil {
		t.Fatal(err)
	}
	if _, err := node("resume", "demo"); err != nil {
		t.Fatal(err)
	}
	var logLines, eventLines []string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		out, _ := node("events", "-o", "json")
		if strings.Contains(out, `"reason": "resumed"`) {
			break
		}
	}
	time.Sleep(1500 * time.Millisecond) // one more poll of the watcher (every second)
	logLines = strings.Split(strings.TrimSpace(stopLogs()), "\n")
	eventLines = strings.Split(strings.TrimSpace(stopEvents()), "\n")
	for name, lines := range map[string][]string{"logs -f": logLines, "events --watch": eventLines} {
		for _, l := range lines {
			if !json.Valid([]byte(l)) || !strings.HasPrefix(l, "{") {
				t.Errorf("ferry %s -o json: line %q is not one JSON object", name, l)
			}
		}
	}
	if last := eventLines[len(eventLines)-1]; !strings.Contains(last, `"reason":"resumed"`) {
		t.Errorf("ferry events --watch did not print the event written while it watched; last line %q", last)
	}

	// SIGTERM: the daemon says it is stopping, and why, then returns.
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		stopped = true
		if err != nil {
			t.Fatalf("ferry daemon after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("ferry daemon still running 30s after SIGTERM:\n%s", logs)
	}
	var stopping bool
	for line := range strings.Lines(logs.String()) {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "stopping" && rec["signal"] == "terminated" {
			stopping = true
		}
	}
	if !stopping {
		t.Errorf("no stopping log with the signal:\n%s", logs)
	}

	// The daemon gone: its own exit code, naming the socket.
	if _, err := node("status"); exitCode(err) != exitUnreachable || !strings.Contains(err.Error(), socket) {
		t.Errorf("status with the daemon stopped: exit %d (%v), want %d naming the socket", exitCode(err), err, exitUnreachable)
	}
}
