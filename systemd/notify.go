package systemd

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier sends the daemon's state to systemd over the socket named by NOTIFY_SOCKET
// (sd_notify(3)), as the unit's Type=notify and WatchdogSec= expect. The zero value is ready to
// use. When the process was not started by systemd (NOTIFY_SOCKET unset) every method does
// nothing and returns nil, so the daemon runs the same in a terminal or a test.
//
// The environment is left set: the watchdog keeps reading it, and NotifyAccess=main makes
// systemd ignore messages from any child the daemon might start.
type Notifier struct{}

// Ready tells systemd that startup is done (READY=1): a Type=notify unit counts as started, and
// units ordered after it start, only from here.
func (Notifier) Ready() error { return notify(daemon.SdNotifyReady) }

// Stopping tells systemd that the daemon is shutting down (STOPPING=1).
func (Notifier) Stopping() error { return notify(daemon.SdNotifyStopping) }

// Status sets the one-line status `systemctl status ferry` shows (STATUS=). Newlines in msg
// become spaces: a message is newline-separated assignments, and a line of msg must not be
// read as one (a bundle name ending in "\nREADY=1", say).
func (Notifier) Status(msg string) error {
	msg = strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(msg)
	return notify("STATUS=" + msg)
}

// RunWatchdog sends WATCHDOG=1 at half the interval systemd asked for (WATCHDOG_USEC, from the
// unit's WatchdogSec=) until ctx is done, then returns nil. It returns nil at once when systemd
// asked for no watchdog, or asked it of another process (WATCHDOG_PID). It returns an error
// if WATCHDOG_USEC or WATCHDOG_PID does not parse, or a keep-alive cannot be sent: missing
// keep-alives make systemd kill and restart the daemon anyway, so failing loudly is better.
//
// A keep-alive shows that the process is scheduled, not that reconciles make progress.
func (Notifier) RunWatchdog(ctx context.Context) error {
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return nil
	}
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		return fmt.Errorf("systemd watchdog: %w", err)
	}
	if interval <= 0 {
		return nil
	}
	// Half the interval, as sd_watchdog_enabled(3) recommends: one late keep-alive is not fatal.
	tick := time.NewTicker(interval / 2)
	defer tick.Stop()
	for {
		if err := notify(daemon.SdNotifyWatchdog); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// notify sends one state string. daemon.SdNotify reports (false, nil) when NOTIFY_SOCKET is
// unset, which is the no-op case.
func notify(state string) error {
	if _, err := daemon.SdNotify(false, state); err != nil {
		name, _, _ := strings.Cut(state, "=")
		return fmt.Errorf("sd_notify %s: %w", name, err)
	}
	return nil
}
