package systemd

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// maxExposure is the highest `systemd-analyze security` exposure level the unit may score.
const maxExposure = 2.5

// writeUnit renders the unit for path and args into a temp dir and returns the file's path.
func writeUnit(t *testing.T, path string, args []string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), Name+".service")
	if err := os.WriteFile(f, []byte(Unit(path, args)), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// realExecutable copies a real binary to dir/name, so that `systemd-analyze verify`, which
// checks that ExecStart= names an executable file, can find it.
func realExecutable(t *testing.T, dir, name string) string {
	t.Helper()
	src, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// systemdAnalyze runs systemd-analyze, which this project's machines have: a missing one is a
// failure, not a skip, or the hardening check would silently stop running.
func systemdAnalyze(t *testing.T, args ...string) (string, error) {
	t.Helper()
	bin, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatalf("systemd-analyze is needed to check the unit (Debian: apt-get install systemd): %v", err)
	}
	out, err := exec.CommandContext(t.Context(), bin, args...).CombinedOutput()
	return string(out), err
}

func TestUnitVerifies(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// Words that need quoting and escaping: systemd must find the binary at the decoded path.
	// The executable may hold spaces, '%' and '$' (systemd refuses quotes and backslashes in
	// it); the arguments anything.
	odd := realExecutable(t, filepath.Join(t.TempDir(), `odd dir 100% $HOME`), "fer ry")
	for _, tc := range []struct {
		name, path string
		args       []string
	}{
		{"test binary", exe, Arguments(DefaultConfig)},
		{"odd path", odd, Arguments(`/etc/ferry/my "config" %i $X \x;.yaml`)},
		{"empty argument", exe, []string{"daemon", ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := writeUnit(t, tc.path, tc.args)
			out, err := systemdAnalyze(t, "verify", f)
			// verify exits 0 on unknown keys and bad values, warning on stderr: any output fails.
			if err != nil || strings.TrimSpace(out) != "" {
				t.Fatalf("systemd-analyze verify %s: %v\n%s\nunit:\n%s", f, err, out, Unit(tc.path, tc.args))
			}
		})
	}
}

// exposureLine is the last line of `systemd-analyze security`:
// "→ Overall exposure level for ferry.service: 1.6 OK 🙂".
var exposureLine = regexp.MustCompile(`Overall exposure level for \S+: ([0-9]+(?:\.[0-9]+)?)`)

func TestUnitSecurityExposure(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f := writeUnit(t, exe, Arguments(DefaultConfig))
	out, err := systemdAnalyze(t, "security", "--offline=true", "--no-pager", f)
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := exposureLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no overall exposure level in the output:\n%s", out)
	}
	level, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	if level > maxExposure {
		t.Fatalf("exposure level %.1f, want at most %.1f:\n%s", level, maxExposure, out)
	}
	t.Logf("exposure level %.1f", level)
}

// TestShippedUnitIsDefault holds the one-file invariant: what packagers ship is what Unit
// renders for the default binary and config, byte for byte.
func TestShippedUnitIsDefault(t *testing.T) {
	shipped, err := os.ReadFile(Name + ".service")
	if err != nil {
		t.Fatal(err)
	}
	if got := Unit(DefaultPath, Arguments(DefaultConfig)); got != string(shipped) {
		t.Fatalf("Unit(%q, %q) differs from ferry.service:\n%s", DefaultPath, Arguments(DefaultConfig), got)
	}
	if n := len(execStartLine.FindAllString(string(shipped), -1)); n != 1 {
		t.Fatalf("ferry.service has %d ExecStart= lines, want 1 (Unit replaces exactly one)", n)
	}
	// kardianos/service parses the unit as a template: it must find nothing to expand.
	if strings.Contains(string(shipped), "{{") {
		t.Fatal(`ferry.service contains "{{"`)
	}
}

// parseUnit returns section -> key -> values, in order, of a unit file.
func parseUnit(t *testing.T, text string) map[string]map[string][]string {
	t.Helper()
	u := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.Trim(line, "[]")
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("unit line %q: not KEY=VALUE in a section", line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

func TestUnitDirectives(t *testing.T) {
	u := parseUnit(t, Unit(DefaultPath, Arguments(DefaultConfig)))
	for _, tc := range []struct {
		section, key, want string
		contains           bool // want is one of the value's space-separated words
	}{
		{"Unit", "After", "k3s.service", true},
		{"Unit", "After", "network-online.target", true},
		{"Unit", "Wants", "k3s.service", true},
		{"Unit", "Documentation", "https://github.com/ferrygitops/ferry", false},
		{"Service", "Type", "notify", false},
		{"Service", "NotifyAccess", "main", false},
		{"Service", "WatchdogSec", "30s", false},
		{"Service", "Restart", "always", false},
		{"Service", "RestartSec", "5s", false},
		{"Service", "LimitNOFILE", "65536", false},
		{"Service", "ExecStart", "/usr/local/bin/ferry daemon --config /etc/ferry/config.yaml", false},
		{"Service", "User", "root", false},
		{"Service", "CapabilityBoundingSet", "", false},
		{"Service", "ProtectSystem", "strict", false},
		{"Service", "StateDirectory", "ferry", false},
		{"Service", "RuntimeDirectory", "ferry", false},
		{"Service", "RuntimeDirectoryMode", "0700", false},
		{"Service", "UMask", "0077", false},
		{"Install", "WantedBy", "multi-user.target", false},
	} {
		t.Run(tc.section+"/"+tc.key+"="+tc.want, func(t *testing.T) {
			vals, ok := u[tc.section][tc.key]
			if !ok {
				t.Fatalf("[%s] has no %s=", tc.section, tc.key)
			}
			for _, v := range vals {
				if v == tc.want || tc.contains && strings.Contains(" "+v+" ", " "+tc.want+" ") {
					return
				}
			}
			t.Fatalf("[%s] %s=%q, want %q", tc.section, tc.key, vals, tc.want)
		})
	}
}

func TestQuote(t *testing.T) {
	for _, tc := range []struct {
		word  string
		first bool
		want  string
	}{
		{"/usr/local/bin/ferry", true, "/usr/local/bin/ferry"},
		{"--config", false, "--config"},
		{"--config", true, `"--config"`}, // "-" would be read as the ignore-failure prefix
		{"@x", true, `"@x"`},
		{"key=value,a:b+c@d", false, "key=value,a:b+c@d"},
		{"", false, `""`},
		{"my config.yaml", false, `"my config.yaml"`},
		{"100%", false, `"100%%"`},
		{"$HOME", false, `"$$HOME"`},
		{"/opt/$x/100%/ferry", true, `"/opt/$x/100%%/ferry"`},
		{`a"b\c`, false, `"a\"b\\c"`},
		{"a;b", false, `"a;b"`},
		{";", false, `";"`},
		{"line\nbreak\ttab", false, `"line\nbreak\ttab"`},
		{"bell\x07", false, `"bell\x07"`},
		{"bad\xffutf8", false, `"bad\xffutf8"`},
		{"café", false, `"café"`},
	} {
		if got := quote(tc.word, tc.first); got != tc.want {
			t.Errorf("quote(%q, %v) = %s, want %s", tc.word, tc.first, got, tc.want)
		}
	}
}

func TestCheckVisible(t *testing.T) {
	for _, tc := range []struct {
		path, wantErr string
	}{
		{"/usr/local/bin/ferry", ""},
		{"/etc/ferry/config.yaml", ""},
		{"/opt/ferry/bin/ferry", ""},
		{"/homestead/ferry", ""},
		{"/run/media/usb/x", ""},
		{"/root/ferry", "/root, which the unit's ProtectHome=yes"},
		{"/home/ops/bin/ferry", "/home, which the unit's ProtectHome=yes"},
		{"/run/user/1000/ferry", "/run/user, which the unit's ProtectHome=yes"},
		{"/tmp/ferry", "/tmp, which the unit's PrivateTmp=yes"},
		{"/var/tmp/x/config.yaml", "/var/tmp, which the unit's PrivateTmp=yes"},
		{"/usr/../root/ferry", "/root"},
		{"ferry", "not an absolute path"},
	} {
		err := CheckVisible(tc.path)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("CheckVisible(%q) = %v, want nil", tc.path, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("CheckVisible(%q) = %v, want an error with %q", tc.path, err, tc.wantErr)
		}
	}
}

func TestInstallRefusesHiddenPaths(t *testing.T) {
	for _, tc := range []struct {
		name, path string
		args       []string
		wantErr    string
	}{
		{"binary in /root", "/root/ferry", Arguments(DefaultConfig), "binary /root/ferry is under /root"},
		{"config in /tmp", "/usr/local/bin/ferry", Arguments("/tmp/config.yaml"), "/tmp/config.yaml is under /tmp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// No kardianos service: Install must refuse before it reaches one.
			err := (&Service{path: tc.path, args: tc.args}).Install()
			if os.Geteuid() != 0 {
				if !errors.Is(err, ErrNeedsRoot) {
					t.Fatalf("Install as uid %d: %v, want ErrNeedsRoot", os.Geteuid(), err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Install: %v, want an error with %q", err, tc.wantErr)
			}
		})
	}
}

func TestCheckPlatform(t *testing.T) {
	if err := checkPlatform("linux-systemd"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"unix-systemv", "linux-openrc", "linux-upstart"} {
		err := checkPlatform(p)
		if !errors.Is(err, ErrNotSystemd) || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "not PID 1") {
			t.Errorf("checkPlatform(%q) = %v, want ErrNotSystemd naming it", p, err)
		}
	}
}

func TestNeedRoot(t *testing.T) {
	if err := needRoot(0); err != nil {
		t.Fatal(err)
	}
	if err := needRoot(1000); !errors.Is(err, ErrNeedsRoot) {
		t.Fatalf("needRoot(1000) = %v", err)
	}
}

// TestNewServiceOnThisHost: without systemd, NewService refuses with ErrNotSystemd; with it
// (or rpm-ostree, which kardianos/service takes for systemd), it accepts.
func TestNewServiceOnThisHost(t *testing.T) {
	_, statErr := os.Stat("/run/systemd/system")
	_, ostreeErr := exec.LookPath("rpm-ostree")
	_, err := NewService(DefaultPath, Arguments(DefaultConfig))
	if statErr == nil || ostreeErr == nil {
		if err != nil {
			t.Fatalf("NewService on a systemd host = %v", err)
		}
		return
	}
	if !errors.Is(err, ErrNotSystemd) {
		t.Fatalf("NewService = %v, want ErrNotSystemd", err)
	}
}

func TestNewServiceRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, path, config, wantErr string
	}{
		{"template action in path", "/opt/{{.Path}}/ferry", DefaultConfig, "template action"},
		{"template action in config", DefaultPath, "/etc/{{x}}.yaml", "template action"},
		{"relative executable", "bin/ferry", DefaultConfig, "not an absolute path"},
		{"quote in executable", `/opt/"x"/ferry`, DefaultConfig, `systemd refuses an executable path with '"'`},
		{"backslash in executable", `/opt/a\b/ferry`, DefaultConfig, `with '\\'`},
		{"newline in executable", "/opt/a\nb/ferry", DefaultConfig, `with '\n'`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewService(tc.path, Arguments(tc.config))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("NewService(%q) = %v, want an error with %q", tc.path, err, tc.wantErr)
			}
		})
	}
}

// listenNotify creates a unixgram socket like systemd's notify socket and points
// NOTIFY_SOCKET at it.
func listenNotify(t *testing.T) *net.UnixConn {
	t.Helper()
	// A short path: sun_path holds 108 bytes, and t.TempDir() can be long.
	dir, err := os.MkdirTemp("", "sdn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	addr := &net.UnixAddr{Name: filepath.Join(dir, "notify"), Net: "unixgram"}
	conn, err := net.ListenUnixgram("unixgram", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", addr.Name)
	return conn
}

// receive returns the next datagram, failing after a deadline instead of hanging.
func receive(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, _, err := conn.ReadFromUnix(buf)
	if err != nil {
		t.Fatalf("reading the notify socket: %v", err)
	}
	return string(buf[:n])
}

func TestNotifierSends(t *testing.T) {
	conn := listenNotify(t)
	var n Notifier
	for _, tc := range []struct {
		name string
		send func() error
		want string
	}{
		{"ready", n.Ready, "READY=1"},
		{"stopping", n.Stopping, "STOPPING=1"},
		{"status", func() error { return n.Status("applying edge-apps r12") }, "STATUS=applying edge-apps r12"},
		{"status newlines", func() error { return n.Status("x\nREADY=1\r\ny") }, "STATUS=x READY=1 y"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.send(); err != nil {
				t.Fatal(err)
			}
			if got := receive(t, conn); got != tc.want {
				t.Fatalf("systemd received %q, want %q", got, tc.want)
			}
		})
	}
}

func TestNotifierReportsUnreachableSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "gone"))
	err := Notifier{}.Ready()
	if err == nil || !strings.Contains(err.Error(), "sd_notify READY") {
		t.Fatalf("Ready = %v, want an error naming sd_notify READY", err)
	}
}

func TestRunWatchdog(t *testing.T) {
	conn := listenNotify(t)
	t.Setenv("WATCHDOG_USEC", "100000") // keep-alives every 50ms
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- Notifier{}.RunWatchdog(ctx) }()
	for range 3 { // the first at once, then on the ticker
		if got := receive(t, conn); got != "WATCHDOG=1" {
			t.Fatalf("systemd received %q, want WATCHDOG=1", got)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("RunWatchdog = %v after cancel, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("RunWatchdog did not return after its context was cancelled")
	}
}

// returnsAtOnce runs RunWatchdog with a context that is never cancelled: it must return by
// itself.
func returnsAtOnce(t *testing.T) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- Notifier{}.RunWatchdog(t.Context()) }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("RunWatchdog kept running with no watchdog to feed")
		return nil
	}
}

func TestRunWatchdogNoOps(t *testing.T) {
	pid := strconv.Itoa(os.Getpid())
	for _, tc := range []struct {
		name, socket, usec, pid string
	}{
		{"no watchdog asked", "sock", "", ""},
		{"watchdog of another process", "sock", "100000", strconv.Itoa(os.Getpid() + 1)},
		{"not under systemd", "", "100000", pid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.socket != "" {
				conn := listenNotify(t)
				t.Cleanup(func() {
					// Nothing was sent: a read finds the socket empty.
					conn.SetReadDeadline(time.Now())
					if n, _, err := conn.ReadFromUnix(make([]byte, 64)); !errors.Is(err, os.ErrDeadlineExceeded) {
						t.Errorf("notify socket got %d bytes (%v), want none", n, err)
					}
				})
			} else {
				t.Setenv("NOTIFY_SOCKET", "")
			}
			t.Setenv("WATCHDOG_USEC", tc.usec)
			t.Setenv("WATCHDOG_PID", tc.pid)
			if err := returnsAtOnce(t); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestRunWatchdogBadInterval(t *testing.T) {
	listenNotify(t)
	t.Setenv("WATCHDOG_USEC", "soon")
	t.Setenv("WATCHDOG_PID", "")
	if err := returnsAtOnce(t); err == nil || !strings.Contains(err.Error(), "systemd watchdog") {
		t.Fatalf("RunWatchdog = %v, want an error about WATCHDOG_USEC", err)
	}
}

func TestNotifierWithoutSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	var n Notifier
	for name, send := range map[string]func() error{
		"Ready":    n.Ready,
		"Stopping": n.Stopping,
		"Status":   func() error { return n.Status("x") },
	} {
		if err := send(); err != nil {
			t.Errorf("%s without NOTIFY_SOCKET = %v, want nil", name, err)
		}
	}
}
