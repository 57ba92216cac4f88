package main

import (
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferrygitops/ferry/daemon"
)

// errChecksFailed is what `ferry check` returns when a check failed: exit code 1, the
// checks being the output.
var errChecksFailed = errors.New("a check failed")

func newCheckCommand() *cobra.Command {
	var (
		config     string
		registries string
		hostsDir   string
		timeout    time.Duration
		p          printer
	)
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check that this node can run the daemon: config, cluster, keys, disk, images, clock",
		Long: `Check is the node's preflight, as flux check --pre is Flux's. Each check runs on its own and
prints one line, ✔ or ✖ (or ! for a warning), so one run shows everything that keeps the
node from working:

  config         the daemon's config loads (every problem, by file, line and field)
  sources        the files the sources name (caFile, dockerConfig, credentialsFile) are readable
  kubeconfig     the kubeconfig loads; its server and context
  api-server     the API server answers, and its Kubernetes version
  impersonation  Ferry's identity may impersonate the service accounts components run as
                 (defaultServiceAccount, each key scope's serviceAccount)
  trust-policy   the trust policy and its keys load
  age-key        the age key parses, and no one but its owner can read it
  state-dir      the state directory can be written and has more free space than spaceMargin
  image-mirror   containerd pulls through the node's image endpoint (k3s's registries.yaml
                 and containerd's hosts.toml), unless imagesAddress is off
  clock          the clock is set, and within 5 minutes of the API server's
  daemon         the daemon answers on its socket (a warning when it is not running)

It writes nothing and is safe beside a running daemon. It exits 0 when every check passes
(warnings included), 1 when one fails, 3 when the config does not load.`,
		Example: `  ferry check
  ferry check --config /etc/ferry/config.yaml -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := p.validate(); err != nil {
				return err
			}
			checks := daemon.Preflight(cmd.Context(), config, daemon.PreflightOptions{
				Timeout: timeout, Registries: registries, HostsDir: hostsDir, BuildTime: buildTime(),
			})
			if err := p.print(cmd.OutOrStdout(), checks, func(w *tabwriter.Writer) { printChecks(w, checks) }); err != nil {
				return err
			}
			return checkResult(checks)
		},
	}
	cmd.Flags().StringVar(&config, "config", daemon.DefaultConfigPath, "the daemon's config `FILE`")
	cmd.Flags().StringVar(&registries, "registries", "", "k3s's registries.yaml (default /etc/rancher/k3s/registries.yaml)")
	cmd.Flags().StringVar(&hostsDir, "hosts-dir", "", "containerd's registry config directory, one hosts.toml per registry (default k3s's)")
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "how long each request to the API server or the daemon may take")
	cmd.Flags().StringVarP(&p.format, "output", "o", "table", "output format: table|json|yaml")
	return cmd
}

// printChecks writes one line per check: ✔, ! (a warning) or ✖, its name, what it found.
func printChecks(w io.Writer, checks []daemon.Check) {
	width := 0
	for _, c := range checks {
		width = max(width, len(c.Name))
	}
	for _, c := range checks {
		mark := "✔"
		switch {
		case !c.OK:
			mark = "✖"
		case c.Warning:
			mark = "!"
		}
		fmt.Fprintf(w, "%s %-*s  %s\n", mark, width, c.Name, c.Detail)
	}
}

// checkResult is the error `ferry check` ends with: a config that does not load is bad
// input, any other failed check errChecksFailed.
func checkResult(checks []daemon.Check) error {
	failed := 0
	for _, c := range checks {
		if !c.OK {
			failed++
		}
	}
	switch {
	case failed == 0:
		return nil
	case len(checks) == 1 && checks[0].Name == "config":
		return badInput(fmt.Errorf("%w: the config does not load", errChecksFailed))
	}
	return fmt.Errorf("%w: %d of %d", errChecksFailed, failed, len(checks))
}

// buildTime is the time of the commit this binary was built from, when the build recorded
// it (vcs.time): a clock before it is wrong.
func buildTime() time.Time {
	t, _ := time.Parse(time.RFC3339, buildSetting("vcs.time"))
	return t
}
