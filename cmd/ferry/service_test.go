package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/ferrygitops/ferry/systemd"
)

func TestServiceUnit(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		args       []string
		wantConfig string
	}{
		{"default config", nil, systemd.DefaultConfig},
		{"config flag", []string{"--config", "/etc/ferry/site-north.yaml"}, "/etc/ferry/site-north.yaml"},
		{"relative config made absolute", []string{"--config", "conf/ferry.yaml"}, filepath.Join(wd, "conf/ferry.yaml")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runFerry(t, append([]string{"service", "unit"}, tc.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			if want := systemd.Unit(exe, systemd.Arguments(tc.wantConfig)); out != want {
				t.Fatalf("ferry service unit printed:\n%s\nwant:\n%s", out, want)
			}
			if line := "\nExecStart=" + exe + " daemon --config " + tc.wantConfig + "\n"; !strings.Contains(out, line) {
				t.Fatalf("output lacks %q:\n%s", line, out)
			}
		})
	}
	if _, err := runFerry(t, "service", "unit", "extra"); err == nil {
		t.Fatal("ferry service unit accepted an argument")
	}
}

func TestServiceCommandsHaveHelp(t *testing.T) {
	var svc *cobra.Command
	for _, c := range newRootCommand().Commands() {
		if c.Name() == "service" {
			svc = c
		}
	}
	if svc == nil {
		t.Fatal("ferry has no service command")
	}
	want := map[string]bool{"install": true, "uninstall": true, "start": true, "stop": true, "status": true, "unit": true}
	for _, c := range svc.Commands() {
		delete(want, c.Name())
		if c.Short == "" || c.Long == "" || c.Example == "" {
			t.Errorf("ferry service %s: Short, Long and Example must all be set", c.Name())
		}
	}
	for name := range want {
		t.Errorf("ferry service %s is missing", name)
	}
}

// TestServiceStatus runs only the read-only status, and checks the answer the host calls for:
// without systemd, a plain refusal; with it, a state and no error.
func TestServiceStatus(t *testing.T) {
	comm, _ := os.ReadFile("/proc/1/comm")
	_, statErr := os.Stat("/run/systemd/system")
	_, ostreeErr := exec.LookPath("rpm-ostree") // kardianos/service takes rpm-ostree for systemd
	systemd := statErr == nil || strings.TrimSpace(string(comm)) == "systemd" || ostreeErr == nil
	out, err := runFerry(t, "service", "status")
	switch {
	case systemd && err != nil:
		t.Fatalf("ferry service status on a systemd host: %v", err)
	case systemd && strings.TrimSpace(out) == "":
		t.Fatal("ferry service status printed no state")
	case !systemd && (err == nil || !strings.HasPrefix(err.Error(), "ferry service status: systemd is not PID 1 on this host")):
		t.Fatalf("ferry service status = %v, want it to say systemd is not running", err)
	}
}
