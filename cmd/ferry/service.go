package main

import (
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/ferrygitops/ferry/daemon/images"
	"github.com/ferrygitops/ferry/systemd"
)

func newServiceCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "service",
		Short: "Install and control the systemd unit that runs the ferry daemon",
		Long: `The ferry daemon runs on each edge node as the systemd unit ferry.service, started after
k3s. The unit is sandboxed: it sees the system read-only, writes only /var/lib/ferry and
/run/ferry, and cannot see /home, /root, /tmp or /var/tmp. It runs the binary these
commands are run from, so put that binary where the daemon can see it first
(/usr/local/bin/ferry, say). Only systemd is supported.`,
		Example: `  sudo ferry service install
  sudo ferry service start
  ferry service status
  ferry service unit > ferry.service`,
	}
	cmd.AddCommand(newServiceInstallCommand(), newServiceUnitCommand(),
		newServiceActionCommand("uninstall", "Disable the unit and remove its file",
			`Uninstall disables ferry.service, removes /etc/systemd/system/ferry.service and reloads
systemd. It refuses while the daemon runs: run "ferry service stop" first. The daemon's
state in /var/lib/ferry is kept. Needs root.`,
			"  sudo ferry service stop\n  sudo ferry service uninstall",
			(*systemd.Service).Uninstall, "uninstalled %s.service\n"),
		newServiceActionCommand("start", "Start the daemon",
			`Start runs "systemctl start ferry" and returns once the daemon has told systemd it is
ready, or has failed; "journalctl -u ferry" shows why. Needs root.`,
			"  sudo ferry service start",
			(*systemd.Service).Start, "started %s.service\n"),
		newServiceActionCommand("stop", "Stop the daemon",
			`Stop runs "systemctl stop ferry". The unit stays enabled and starts again at boot. Needs
root.`,
			"  sudo ferry service stop",
			(*systemd.Service).Stop, "stopped %s.service\n"),
		newServiceStatusCommand())
	return cmd
}

// newFerryService is the unit for the running binary; config is ignored by the commands that
// do not write the unit.
func newFerryService(config string) (*systemd.Service, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding this binary's path: %w", err)
	}
	return systemd.NewService(exe, systemd.Arguments(config))
}

// addConfigFlag registers --config, made absolute: the daemon starts in /, where a relative
// path means something else.
func addConfigFlag(cmd *cobra.Command, config *string) {
	cmd.Flags().StringVar(config, "config", systemd.DefaultConfig, "the daemon's config file `PATH`, passed to ferry daemon --config")
}

func absConfig(config string) (string, error) {
	abs, err := filepath.Abs(config)
	if err != nil {
		return "", fmt.Errorf("--config %q: %w", config, err)
	}
	return abs, nil
}

func newServiceInstallCommand() *cobra.Command {
	var (
		config   string
		m        mirrorFlags
		noImages bool
	)
	cmd := &cobra.Command{
		Use:   "install [--config PATH]",
		Short: "Write, enable and register the systemd unit for this binary",
		Long: `Install writes /etc/systemd/system/ferry.service running this binary as
"ferry daemon --config PATH", enables it so it starts at boot after k3s, and reloads
systemd. It does not start the daemon: run "ferry service start".

Install refuses a binary or config file under /home, /root, /run/user, /tmp or /var/tmp,
which the unit's sandbox hides from the daemon, and an existing unit file. The unit is what
"ferry service unit" prints.

Install also points containerd at the node's image endpoint, as "ferry images configure"
does (the same flags; --no-images skips it). Needs root.`,
		Example: `  sudo install -m 0755 ferry /usr/local/bin/ferry
  sudo /usr/local/bin/ferry service install
  sudo /usr/local/bin/ferry service install --config /etc/ferry/site-north.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			config, err := absConfig(config)
			if err != nil {
				return fmt.Errorf("ferry service install: %w", err)
			}
			svc, err := newFerryService(config)
			if err != nil {
				return fmt.Errorf("ferry service install: %w", err)
			}
			if err := svc.Install(); err != nil {
				return fmt.Errorf("ferry service install: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "installed and enabled %s.service; start it with: ferry service start\n", systemd.Name)
			if noImages {
				return nil
			}
			m.config = config
			changes, notes, err := m.plan(cmd)
			if err == nil {
				err = images.ApplyMirror(changes)
			}
			if err != nil {
				return fmt.Errorf("ferry service install: the unit is installed, but containerd's mirror is not configured (fix, then run ferry images configure): %w", err)
			}
			reportMirror(cmd.OutOrStdout(), changes, notes, false)
			return nil
		},
	}
	addConfigFlag(cmd, &config)
	m.add(cmd, false)
	cmd.Flags().BoolVar(&noImages, "no-images", false, "do not write containerd's mirror configuration")
	return cmd
}

func newServiceActionCommand(verb, short, long, example string, action func(*systemd.Service) error, done string) *cobra.Command {
	return &cobra.Command{
		Use:     verb,
		Short:   short,
		Long:    long,
		Example: example,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			svc, err := newFerryService(systemd.DefaultConfig)
			if err != nil {
				return fmt.Errorf("ferry service %s: %w", verb, err)
			}
			if err := action(svc); err != nil {
				return fmt.Errorf("ferry service %s: %w", verb, err)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), done, systemd.Name)
			return err
		},
	}
}

func newServiceStatusCommand() *cobra.Command {
	var p printer
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Print whether the daemon is running, stopped, failed or not installed",
		Long: `Status prints the state systemd reports for ferry.service: running, stopped, failed or
not installed. It exits 0 whenever the state could be read, whatever it is; scripts that
need an exit status can use "systemctl is-active ferry". "systemctl status ferry" and
"journalctl -u ferry" show more.`,
		Example: `  ferry service status
  ferry service status -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := p.validate(); err != nil {
				return err
			}
			svc, err := newFerryService(systemd.DefaultConfig)
			if err != nil {
				return fmt.Errorf("ferry service status: %w", err)
			}
			state, err := svc.Status()
			if err != nil {
				return fmt.Errorf("ferry service status: %w", err)
			}
			out := map[string]string{"unit": systemd.Name + ".service", "state": fmt.Sprint(state)}
			return p.print(cmd.OutOrStdout(), out, func(w *tabwriter.Writer) { fmt.Fprintf(w, "%s: %s\n", out["unit"], out["state"]) })
		},
	}
	cmd.Flags().StringVarP(&p.format, "output", "o", "table", "output format: table|json|yaml")
	return cmd
}

func newServiceUnitCommand() *cobra.Command {
	var config string
	cmd := &cobra.Command{
		Use:   "unit [--config PATH]",
		Short: "Print the systemd unit that install would write for this binary",
		Long: `Unit prints ferry.service as "ferry service install" would write it: the unit Ferry
ships, with ExecStart= running this binary with --config PATH. For packagers: the file in
the source tree, systemd/ferry.service, is this output for /usr/local/bin/ferry and
/etc/ferry/config.yaml. Needs neither root nor systemd.`,
		Example: `  ferry service unit
  ferry service unit --config /etc/ferry/site-north.yaml > /etc/systemd/system/ferry.service
  ferry service unit > ferry.service && systemd-analyze security --offline=true ferry.service`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			config, err := absConfig(config)
			if err != nil {
				return fmt.Errorf("ferry service unit: %w", err)
			}
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("ferry service unit: finding this binary's path: %w", err)
			}
			_, err = fmt.Fprint(cmd.OutOrStdout(), systemd.Unit(exe, systemd.Arguments(config)))
			return err
		},
	}
	addConfigFlag(cmd, &config)
	return cmd
}
