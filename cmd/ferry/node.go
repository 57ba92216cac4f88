package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"log/slog"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/daemon"
	"github.com/ferrygitops/ferry/rollout"
	"github.com/ferrygitops/ferry/store"
	"github.com/ferrygitops/ferry/systemd"
	"github.com/ferrygitops/ferry/verify"
)

func newDaemonCommand() *cobra.Command {
	var (
		config string
		check  bool
	)
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Run on an edge node: take bundles from the sources, verify, apply, roll back",
		Long: `The daemon polls its sources (a registry mirror, USB mount points, an S3 bucket),
verifies each bundle's signatures against the node's trust policy before keeping anything,
keeps every revision in its store, applies the newest to the local cluster, waits for it to
be healthy and rolls back to the last good revision by itself when it is not. It serves the
local API on a unix socket (ferry status, history, rollback…) and metrics on loopback.
Logs are JSON on stdout, for journald. It runs as the systemd service "ferry".`,
		Example: `  ferry daemon --config /etc/ferry/config.yaml
  ferry daemon --check-config --config /etc/ferry/config.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := daemon.LoadConfig(config)
			if err != nil {
				return badInput(err)
			}
			if check {
				if err := daemon.CheckConfig(cfg); err != nil {
					return badInput(fmt.Errorf("%s: %w", config, err))
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: ok (%d sources)\n", config, len(cfg.Sources))
				return nil
			}
			log := slog.New(slog.NewJSONHandler(cmd.OutOrStdout(), nil))
			var sd systemd.Notifier // a no-op outside systemd
			ready := func() {
				if err := sd.Ready(); err != nil {
					log.Warn("sd_notify READY=1", "err", err)
				}
			}
			d, err := daemon.New(cfg, daemon.Options{Log: log, Ready: ready})
			if err != nil {
				return err
			}
			defer d.Close()
			ctx, stop := stopOnSignal(cmd.Context(), log)
			defer stop()
			go sd.RunWatchdog(ctx)
			err = d.Run(ctx)
			_ = sd.Stopping()
			return err
		},
	}
	cmd.Flags().StringVar(&config, "config", daemon.DefaultConfigPath, "config file")
	cmd.Flags().BoolVar(&check, "check-config", false, "validate the config and load the files it names, then exit (safe beside a running daemon)")
	return cmd
}

// stopOnSignal returns a context cancelled at SIGINT or SIGTERM, after logging "stopping"
// with the signal, so that the journal says why the daemon stopped. stop releases the
// signals and cancels the context.
func stopOnSignal(parent context.Context, log *slog.Logger) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancel(parent)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case s := <-sigs:
			log.Info("stopping", "signal", s.String())
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		cancel()
		<-done
	}
}

// nodeClient is what the node commands share: the socket and the output format.
type nodeClient struct {
	socket string
	p      printer
}

func (n *nodeClient) flags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&n.socket, "socket", daemon.DefaultSocket, "the daemon's API socket")
	cmd.Flags().StringVarP(&n.p.format, "output", "o", "table", "output format: table|json|yaml")
}

// completeArgs completes a node command's arguments from the daemon: the first the bundles
// it holds, the second (with revisions) the revisions of the bundle named first. Nothing is
// offered when the daemon does not answer; files are never offered.
func (n *nodeClient) completeArgs(revisions bool) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
		c := daemon.NewClient(n.socket)
		var out []cobra.Completion
		switch {
		case len(args) == 0:
			var st []daemon.BundleStatus
			if c.Do(cmd.Context(), http.MethodGet, "/v1/status", nil, &st) == nil {
				for _, b := range st {
					out = append(out, cobra.CompletionWithDesc(b.Bundle, "revision "+revOrNone(b.Revision)+", "+orDash(string(b.State))))
				}
			}
		case len(args) == 1 && revisions:
			var revs []store.Revision
			if c.Do(cmd.Context(), http.MethodGet, "/v1/bundles/"+url.PathEscape(args[0])+"/history", nil, &revs) == nil {
				for i := len(revs) - 1; i >= 0; i-- {
					r := revs[i]
					out = append(out, cobra.CompletionWithDesc(strconv.FormatUint(r.Revision, 10), orDash(r.Version)+", "+string(r.State)))
				}
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveKeepOrder
	}
}

func (n *nodeClient) do(cmd *cobra.Command, method, path string, body, out any) error {
	if err := n.p.validate(); err != nil {
		return err
	}
	return daemon.NewClient(n.socket).Do(cmd.Context(), method, path, body, out)
}

func newStatusCommand() *cobra.Command {
	var n nodeClient
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show each bundle on this node: revision, health, last change, last error",
		Example: `  ferry status
  ferry status -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st []daemon.BundleStatus
			if err := n.do(cmd, http.MethodGet, "/v1/status", nil, &st); err != nil {
				return err
			}
			return n.p.print(cmd.OutOrStdout(), st, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "BUNDLE\tREVISION\tVERSION\tSTATE\tLAST GOOD\tNEWEST\tLAST CHANGE\tLAST ERROR")
				for _, s := range st {
					state := string(s.State)
					switch {
					case s.Revision == 0 && !s.Removed.IsZero():
						state = "removed"
					case s.Revision == 0:
						state = "not applied"
					case state == "":
						state = "-"
					}
					if s.Suspended {
						state += " (suspended)"
					}
					if s.Applying != 0 && s.Applying != s.Revision {
						state += fmt.Sprintf(" (applying %d)", s.Applying)
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Bundle, revOrNone(s.Revision), orDash(s.Version), state,
						revOrNone(s.LastGood), revOrNone(s.Newest), ago(s.LastChange), orDash(oneLine(s.LastError)))
				}
			})
		},
	}
	n.flags(cmd)
	return cmd
}

func newHistoryCommand() *cobra.Command {
	var n nodeClient
	cmd := &cobra.Command{
		Use:   "history BUNDLE [REVISION]",
		Short: "Show every stored revision of a bundle and what happened to it, or one revision in full",
		Long: `History lists the revisions of BUNDLE the node keeps, newest first. With REVISION it shows
that one in full: its digest and source, the keys whose signatures admitted it and their
scopes, the SLSA provenance that verified (builder, repository, commit and its signer),
and every state it went through.`,
		Example: `  ferry history edge-site
  ferry history edge-site -o yaml
  ferry history edge-site 41`,
		Args:              cobra.RangeArgs(1, 2),
		ValidArgsFunction: n.completeArgs(false),
		RunE: func(cmd *cobra.Command, args []string) error {
			var want uint64
			if len(args) == 2 {
				var err error
				if want, err = strconv.ParseUint(args[1], 10, 64); err != nil || want == 0 {
					return badInput(fmt.Errorf("revision %q: want a positive number (see ferry history %s)", args[1], args[0]))
				}
			}
			var revs []store.Revision
			if err := n.do(cmd, http.MethodGet, "/v1/bundles/"+url.PathEscape(args[0])+"/history", nil, &revs); err != nil {
				return err
			}
			if want != 0 {
				for _, r := range revs {
					if r.Revision == want {
						return printRevision(cmd, n.p, r)
					}
				}
				return fmt.Errorf("%s has no revision %d on this node (see ferry history %s)", args[0], want, args[0])
			}
			return n.p.print(cmd.OutOrStdout(), revs, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "REVISION\tVERSION\tSTATE\tADMITTED\tAGE\tSOURCE\tLAST NOTE")
				for i := len(revs) - 1; i >= 0; i-- {
					r := revs[i]
					note := ""
					if k := len(r.History); k > 0 {
						note = r.History[k-1].Note
					}
					fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Revision, r.Version, r.State, timestamp(r.Admitted), age(r.Admitted), r.Source, orDash(oneLine(note)))
				}
			})
		},
	}
	n.flags(cmd)
	return cmd
}

// printRevision shows one stored revision, its verification record read through the type
// that wrote it.
func printRevision(cmd *cobra.Command, p printer, r store.Revision) error {
	rec, err := verify.ParseRecord(r.Verification)
	if err != nil {
		return fmt.Errorf("revision %d: its verification record: %w", r.Revision, err)
	}
	out := struct {
		store.Revision
		Verification *verify.Result `json:"verification"`
	}{r, rec}
	return p.print(cmd.OutOrStdout(), out, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "%s revision %d (%s)\n", r.Name, r.Revision, r.Version)
		fmt.Fprintf(w, "State:\t%s\n", r.State)
		fmt.Fprintf(w, "Digest:\t%s\n", r.Manifest.Digest)
		fmt.Fprintf(w, "Admitted:\t%s from %s\n", timestamp(r.Admitted), orDash(r.Source))
		for _, s := range rec.Signers {
			fmt.Fprintf(w, "Signed by:\t%s (%s)\n", s.KeyID, filepath.Base(s.KeySource))
			if s.Scope != nil {
				fmt.Fprintf(w, "  scope:\t%s\n", s.Scope)
			}
		}
		printProvenance(w, rec.Provenance)
		for _, h := range r.History {
			fmt.Fprintf(w, "%s\t%s %s\n", timestamp(h.Time), h.State, oneLine(h.Note))
		}
	})
}

func newRollbackCommand() *cobra.Command {
	var n nodeClient
	cmd := &cobra.Command{
		Use:   "rollback BUNDLE REVISION",
		Short: "Apply a stored revision again and stay on it until a newer one arrives",
		Long: `Rollback applies a revision kept in the node's store, waits for it to be healthy, and
marks the newer revisions rolled back, so the daemon does not roll forward again until a new
revision is admitted. If the revision fails, the current one is restored.`,
		Example:           `  ferry rollback edge-site 41`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: n.completeArgs(true),
		RunE: func(cmd *cobra.Command, args []string) error {
			rev, err := strconv.ParseUint(args[1], 10, 64)
			if err != nil || rev == 0 {
				return badInput(fmt.Errorf("revision %q: want a positive number (see ferry history %s)", args[1], args[0]))
			}
			var rep rollout.Report
			if err := n.do(cmd, http.MethodPost, "/v1/bundles/"+url.PathEscape(args[0])+"/rollback", map[string]uint64{"revision": rev}, &rep); err != nil {
				return err
			}
			return n.p.print(cmd.OutOrStdout(), rep, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "%s is at revision %d: %s (applied %d, unchanged %d, pruned %d)\n", rep.Bundle, rep.Revision, rep.State, rep.Applied, rep.Unchanged, rep.Pruned)
			})
		},
	}
	n.flags(cmd)
	return cmd
}

// newBundleActionCommand is suspend, resume and reconcile: a POST naming a bundle.
func newBundleActionCommand(action, short, example string) *cobra.Command {
	var n nodeClient
	cmd := &cobra.Command{
		Use:               action + " BUNDLE",
		Short:             short,
		Example:           example,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: n.completeArgs(false),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out map[string]string
			if err := n.do(cmd, http.MethodPost, "/v1/bundles/"+url.PathEscape(args[0])+"/"+action, nil, &out); err != nil {
				return err
			}
			return n.p.print(cmd.OutOrStdout(), out, func(w *tabwriter.Writer) { fmt.Fprintf(w, "%s: %s\n", out["bundle"], out["result"]) })
		},
	}
	n.flags(cmd)
	return cmd
}

func newImportCommand() *cobra.Command {
	var (
		n   nodeClient
		dry bool
	)
	cmd := &cobra.Command{
		Use:   "import PATH|REF",
		Short: "Hand the daemon a bundle: it verifies it, keeps it and rolls it out",
		Long: `Import hands the daemon a bundle from a path (a stick's tar or layout), a registry or S3.
The daemon verifies its signatures against the node's trust policy before it keeps anything,
admits it as a new revision and rolls it out, as it does for what its sources find.

With --dry-run nothing is kept or applied: the daemon verifies the bundle and says whether
it would admit it and what its rollout would create, change and prune (see ferry diff, which
also shows each change). It exits 0 when the bundle would be admitted and the API server
accepts every change in its dry run, 2 when not, 4 when the bundle is not trusted.`,
		Example: `  # What will this stick do? Verify it and show the changes, keeping nothing
  ferry import --dry-run /media/usb0/edge-site-1.4.0.tar

  ferry import /media/usb0/edge-site-1.4.0.tar
  ferry import oci://registry.local:5000/site/edge-site:1.4.0`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dry {
				p, err := n.preview(cmd, args[0])
				if err != nil {
					return err
				}
				if err := n.p.print(cmd.OutOrStdout(), p, func(*tabwriter.Writer) { printPreview(cmd.OutOrStdout(), p, false) }); err != nil {
					return err
				}
				return previewResult(p)
			}
			ref, err := daemonRef(args[0])
			if err != nil {
				return err
			}
			var rev store.Revision
			stop := n.importProgress(cmd, ref)
			err = n.do(cmd, http.MethodPost, "/v1/import", map[string]string{"ref": ref}, &rev)
			stop()
			if errors.Is(err, store.ErrAlreadyAdmitted) {
				// The node holds this very revision: nothing to do, as `kubectl apply` of
				// what is there.
				fmt.Fprintln(cmd.OutOrStdout(), err.Error()+"; nothing to do")
				return nil
			}
			if err != nil {
				return err
			}
			return n.p.print(cmd.OutOrStdout(), rev, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "admitted %s revision %d (%s), %s\n", rev.Name, rev.Revision, rev.Version, rev.Manifest.Digest)
			})
		},
	}
	n.flags(cmd)
	cmd.Flags().BoolVar(&dry, "dry-run", false, "verify the bundle and show what its rollout would change; keep and apply nothing")
	return cmd
}

// importProgress draws the daemon's progress on the import on a terminal (bytes copied into
// the store of the total, rate, time left) until the returned stop is called; nothing when
// CI is set or stderr is not a terminal.
func (n *nodeClient) importProgress(cmd *cobra.Command, ref string) (stop func()) {
	if os.Getenv("CI") != "" || !term.IsTerminal(int(os.Stderr.Fd())) || n.p.format != "table" {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		var p *bundles.Progress
		var last int64
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			var ip daemon.ImportProgress
			if err := daemon.NewClient(n.socket).Do(cmd.Context(), http.MethodGet, "/v1/import/progress", nil, &ip); err == nil && ip.Active && ip.Total > 0 {
				if p == nil {
					p = bundles.NewProgress(cmd.ErrOrStderr(), "import "+filepath.Base(ref), ip.Total)
				}
				p.Add(ip.Done - last)
				last = ip.Done
			}
			select {
			case <-done:
				p.Finish()
				return
			case <-tick.C:
			}
		}
	}()
	return func() { close(done); <-finished }
}

func newEventsCommand() *cobra.Command {
	var (
		n     nodeClient
		after uint64
		limit int
		watch bool
	)
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Show the node's event log: admissions, refusals, rollouts, rollbacks",
		Long: `Events prints the node's event log, oldest first: what was admitted or refused, each
rollout, health verdict and rollback. With --watch it then keeps printing new events as they
are written, until interrupted (with -o json, one JSON object per line).`,
		Example: `  ferry events
  ferry events --after 120 -o json
  ferry events --watch`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var evs []store.Event
			if err := n.do(cmd, http.MethodGet, fmt.Sprintf("/v1/events?after=%d&limit=%d", after, limit), nil, &evs); err != nil {
				return err
			}
			table := func(w *tabwriter.Writer) { printEvents(w, evs, true) }
			if !watch {
				return n.p.print(cmd.OutOrStdout(), evs, table)
			}
			if err := printStream(cmd.OutOrStdout(), n.p, evs, table); err != nil {
				return err
			}
			if len(evs) > 0 {
				after = evs[len(evs)-1].Seq
			}
			return watchEvents(cmd, &n, after, false)
		},
	}
	n.flags(cmd)
	cmd.Flags().Uint64Var(&after, "after", 0, "show events after this sequence number")
	cmd.Flags().IntVar(&limit, "limit", 100, "at most this many events (up to 1000)")
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "after the events, keep printing new ones as they are written")
	return cmd
}

func nodeCommands() []*cobra.Command {
	return []*cobra.Command{
		newDaemonCommand(), newStatusCommand(), newHistoryCommand(), newRollbackCommand(),
		newBundleActionCommand("suspend", "Stop reconciling a bundle (no new revision, no drift correction)", "  ferry suspend edge-site"),
		newBundleActionCommand("resume", "Reconcile a suspended bundle again", "  ferry resume edge-site"),
		newBundleActionCommand("reconcile", "Reconcile a bundle now (roll out the newest revision, correct drift)", "  ferry reconcile edge-site"),
		newImportCommand(), newNodeDiffCommand(), newEventsCommand(), newLogsCommand(), newCheckCommand(), newTreeCommand(), newRemoveCommand(), newReceiptCommand(),
	}
}

// ago is how long ago t was, as kubectl's AGE column writes it (5m, 3h12m, 4d), "-" for
// no time.
func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return duration.HumanDuration(time.Since(t)) + " ago"
}

// age is ago without "ago", for an AGE column.
func age(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return duration.HumanDuration(time.Since(t))
}

// printEvents writes events as a table, with its header if header is set.
func printEvents(w io.Writer, evs []store.Event, header bool) {
	if header {
		fmt.Fprintln(w, "SEQ\tTIME\tAGE\tBUNDLE\tREVISION\tREASON\tMESSAGE")
	}
	for _, e := range evs {
		rev := "-" // an event of no revision (a refusal, the node's own)
		if e.Revision != 0 {
			rev = strconv.FormatUint(e.Revision, 10)
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Seq, timestamp(e.Time), age(e.Time), orDash(e.Bundle), rev, e.Reason, oneLine(e.Message))
	}
}

// timestamp is t in RFC 3339, UTC, so that a time copied from a node says its zone; "-" for
// none.
func timestamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// revOrNone is a revision number, "none" for 0 (no revision: nothing applied, none good).
func revOrNone(n uint64) string {
	if n == 0 {
		return "none"
	}
	return strconv.FormatUint(n, 10)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// oneLine is s on one line, whole: tables are not truncated (as Kubernetes' printers), so
// an error is read to its end; -o json has it as written.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
