package systemd

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/kardianos/service"
)

var (
	// ErrNotSystemd is returned when the host's init system is not systemd: the only unit Ferry
	// has is a systemd unit.
	ErrNotSystemd = errors.New("systemd is not PID 1 on this host")

	// ErrNeedsRoot is returned when a change to the unit is asked of a user other than root.
	ErrNeedsRoot = errors.New("needs root")

	// ErrInstalled is returned by Install when the unit file already exists.
	ErrInstalled = errors.New("already installed")

	// ErrNotInstalled is returned by Uninstall when there is no unit to remove.
	ErrNotInstalled = errors.New("not installed")

	// ErrRunning is returned by Uninstall while the daemon runs.
	ErrRunning = errors.New("running")
)

// State is what systemd reports about the unit.
type State string

// The states Service.Status reports.
const (
	StateRunning      State = "running" // active or activating
	StateStopped      State = "stopped" // installed, inactive
	StateFailed       State = "failed"  // the last run failed; `systemctl status ferry` says why
	StateNotInstalled State = "not installed"
)

// systemdPlatform is what kardianos's Service.Platform reports for systemd.
const systemdPlatform = "linux-systemd"

// unitDir is where kardianos (v1.2.4, service_systemd_linux.go configPath) writes a system
// unit; Install looks there first to name the file when it already exists.
const unitDir = "/etc/systemd/system"

// Service is ferry's unit on this host, installed and controlled with kardianos/service.
type Service struct {
	svc  service.Service
	path string
	args []string
}

// NewService returns the unit that runs the binary at path with args (see Arguments). It
// returns ErrNotSystemd, naming the init system it found, when that is not systemd.
func NewService(path string, args []string) (*Service, error) {
	if err := checkExecutable(path); err != nil {
		return nil, err
	}
	unit := Unit(path, args)
	// kardianos parses SystemdScript as a text/template (template.Must: it would panic).
	if strings.Contains(unit, "{{") {
		return nil, fmt.Errorf("%s %s: contains \"{{\", which kardianos/service would read as a template action",
			path, strings.Join(args, " "))
	}
	svc, err := service.New(noProgram{}, &service.Config{
		Name:       Name,
		Executable: path,
		Arguments:  args,
		Option:     service.KeyValue{"SystemdScript": unit},
	})
	if errors.Is(err, service.ErrNoServiceSystemDetected) {
		return nil, fmt.Errorf("%w (no init system kardianos/service knows was found); Ferry has only a systemd unit", ErrNotSystemd)
	}
	if err != nil {
		return nil, err
	}
	if err := checkPlatform(svc.Platform()); err != nil {
		return nil, err
	}
	return &Service{svc: svc, path: path, args: args}, nil
}

// checkExecutable refuses what systemd refuses in an ExecStart= executable: a relative path,
// and quotes, backslashes or control characters (string_is_safe in systemd's string-util.c).
func checkExecutable(path string) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("%s: not an absolute path", path)
	}
	if i := strings.IndexFunc(path, func(r rune) bool {
		return r < ' ' || r == 0x7f || r == '"' || r == '\'' || r == '\\'
	}); i >= 0 {
		return fmt.Errorf("%q: systemd refuses an executable path with %q in it", path, path[i])
	}
	return nil
}

func checkPlatform(platform string) error {
	if platform != systemdPlatform {
		return fmt.Errorf("%w (the init system found is %s); Ferry has only a systemd unit", ErrNotSystemd, platform)
	}
	return nil
}

// needRoot returns ErrNeedsRoot unless euid is root's. systemctl would otherwise ask polkit or
// fail with "Access denied" halfway through, after the unit file was written.
func needRoot(euid int) error {
	if euid != 0 {
		return ErrNeedsRoot
	}
	return nil
}

// Install writes the unit to /etc/systemd/system/ferry.service, enables it and reloads systemd.
// It does not start the daemon. It refuses a binary or absolute argument (the config file) the
// sandbox would hide from the daemon (CheckVisible), and an existing unit file (ErrInstalled).
func (s *Service) Install() error {
	if err := needRoot(os.Geteuid()); err != nil {
		return err
	}
	if err := CheckVisible(s.path); err != nil {
		return fmt.Errorf("binary %w", err)
	}
	for _, a := range s.args {
		if filepath.IsAbs(a) {
			if err := CheckVisible(a); err != nil {
				return err
			}
		}
	}
	p := filepath.Join(unitDir, Name+".service")
	if _, err := os.Lstat(p); err == nil {
		return fmt.Errorf("%s: %w; run `ferry service uninstall` first", p, ErrInstalled)
	}
	return s.svc.Install()
}

// Uninstall disables the unit, removes its file and reloads systemd. It refuses while the
// daemon runs (ErrRunning), which would leave systemd running a unit that has no file.
func (s *Service) Uninstall() error {
	if err := needRoot(os.Geteuid()); err != nil {
		return err
	}
	state, err := s.Status()
	if err != nil {
		return err
	}
	switch state {
	case StateNotInstalled:
		return fmt.Errorf("%s.service: %w", Name, ErrNotInstalled)
	case StateRunning:
		return fmt.Errorf("%s.service: %w; stop it first with `ferry service stop`", Name, ErrRunning)
	}
	return s.svc.Uninstall()
}

// Start starts the unit (systemctl start) and returns once systemd has it started, which for
// Type=notify is when the daemon sent READY=1 or failed.
func (s *Service) Start() error {
	if err := needRoot(os.Geteuid()); err != nil {
		return err
	}
	return s.svc.Start()
}

// Stop stops the unit (systemctl stop).
func (s *Service) Stop() error {
	if err := needRoot(os.Geteuid()); err != nil {
		return err
	}
	return s.svc.Stop()
}

// Status reports the unit's state. An error means the state could not be read.
func (s *Service) Status() (State, error) {
	st, err := s.svc.Status()
	switch {
	case errors.Is(err, service.ErrNotInstalled):
		return StateNotInstalled, nil
	// kardianos v1.2.4 reports `systemctl is-active` saying "failed" only as this error.
	case err != nil && err.Error() == "service in failed state":
		return StateFailed, nil
	case err != nil:
		return "", err
	case st == service.StatusRunning:
		return StateRunning, nil
	case st == service.StatusStopped:
		return StateStopped, nil
	}
	return "", fmt.Errorf("systemd reported an unknown state for %s.service", Name)
}

// noProgram satisfies service.Interface, which kardianos calls only from Service.Run. Ferry never
// calls Run: systemd starts `ferry daemon` directly, and the daemon speaks sd_notify itself.
type noProgram struct{}

func (noProgram) Start(service.Service) error { return nil }
func (noProgram) Stop(service.Service) error  { return nil }
