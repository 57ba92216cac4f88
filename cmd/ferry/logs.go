package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferrygitops/ferry/daemon"
	"github.com/ferrygitops/ferry/store"
)

// followWait is how long one request of a follower (-f, --watch) waits for news.
const followWait = 30 * time.Second

func newLogsCommand() *cobra.Command {
	var (
		n      nodeClient
		level  string
		bundle string
		tail   int
		follow bool
	)
	cmd := &cobra.Command{
		Use:   "logs",
		Short: "Show the daemon's recent log (from its API, no journal access needed)",
		Long: `Logs prints the daemon's own log as the daemon keeps it in memory: its last 2000 records
at level info and above. The journal (journalctl -u ferry) keeps the full log; this is what
a technician needs on the spot, through the same socket as ferry status.

--level shows records at that level and above (debug, info, warn, error); --bundle only
those about one bundle. With -f it keeps printing records as they come, until interrupted;
with -o json each record is then one JSON object per line.`,
		Example: `  ferry logs
  ferry logs --level warn --bundle edge-site
  ferry logs -f
  ferry logs --tail 20 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := daemon.ParseLogLevel(level); err != nil {
				return badInput(fmt.Errorf("--level %q: want debug, info, warn or error", level))
			}
			if tail <= 0 {
				return badInput(fmt.Errorf("--tail %d: want a positive number", tail))
			}
			q := url.Values{"level": {level}, "limit": {strconv.Itoa(tail)}}
			if bundle != "" {
				q.Set("bundle", bundle)
			}
			var recs []daemon.LogRecord
			if err := n.do(cmd, http.MethodGet, "/v1/logs?"+q.Encode(), nil, &recs); err != nil {
				return err
			}
			if !follow {
				return n.p.print(cmd.OutOrStdout(), recs, func(w *tabwriter.Writer) { printLogs(w, recs, true) })
			}
			out := cmd.OutOrStdout()
			header := true
			for {
				if err := printStream(out, n.p, recs, func(w *tabwriter.Writer) { printLogs(w, recs, header && len(recs) > 0) }); err != nil {
					return err
				}
				header = header && len(recs) == 0
				if len(recs) > 0 {
					q.Set("after", strconv.FormatUint(recs[len(recs)-1].Seq, 10))
				}
				q.Set("wait", followWait.String())
				q.Del("limit")
				recs = nil
				if err := n.do(cmd, http.MethodGet, "/v1/logs?"+q.Encode(), nil, &recs); err != nil {
					if cmd.Context().Err() != nil {
						return nil // interrupted
					}
					return err
				}
			}
		},
	}
	n.flags(cmd)
	cmd.Flags().StringVar(&level, "level", "info", "show records at this level and above: debug|info|warn|error")
	cmd.Flags().StringVar(&bundle, "bundle", "", "show only the records about this bundle")
	cmd.Flags().IntVar(&tail, "tail", 200, "show at most this many of the newest records")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new records as they come")
	return cmd
}

// printLogs writes records as TIME LEVEL MESSAGE DETAILS, the details key=value sorted.
func printLogs(w io.Writer, recs []daemon.LogRecord, header bool) {
	if header {
		fmt.Fprintln(w, "TIME\tLEVEL\tMESSAGE\tDETAILS")
	}
	for _, r := range recs {
		keys := make([]string, 0, len(r.Attrs))
		for k := range r.Attrs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var details []string
		for _, k := range keys {
			details = append(details, fmt.Sprintf("%s=%v", k, r.Attrs[k]))
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", timestamp(r.Time), r.Level, oneLine(r.Message), orDash(oneLine(strings.Join(details, " "))))
	}
}

// printStream writes one batch of a follower: for a table, rows (table); for JSON or YAML,
// each item on its own (one JSON object per line, YAML documents), so a stream can be read
// as it comes.
func printStream[T any](out io.Writer, p printer, items []T, table func(*tabwriter.Writer)) error {
	switch p.format {
	case "json":
		for _, it := range items {
			b, err := json.Marshal(it)
			if err != nil {
				return err
			}
			if _, err := fmt.Fprintf(out, "%s\n", b); err != nil {
				return err
			}
		}
		return nil
	case "yaml":
		for _, it := range items {
			if _, err := io.WriteString(out, "---\n"); err != nil {
				return err
			}
			if err := p.print(out, it, nil); err != nil {
				return err
			}
		}
		return nil
	}
	// A table stream is not aligned across batches: each batch is flushed as it comes.
	return p.print(out, items, table)
}

// watchEvents prints the events after seq as they are written, asking every second, until
// interrupted.
func watchEvents(cmd *cobra.Command, n *nodeClient, after uint64, header bool) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		var evs []store.Event
		if err := n.do(cmd, http.MethodGet, fmt.Sprintf("/v1/events?after=%d&limit=1000", after), nil, &evs); err != nil {
			if cmd.Context().Err() != nil {
				return nil
			}
			return err
		}
		if err := printStream(cmd.OutOrStdout(), n.p, evs, func(w *tabwriter.Writer) { printEvents(w, evs, header) }); err != nil {
			return err
		}
		if len(evs) > 0 {
			after, header = evs[len(evs)-1].Seq, false
		}
		select {
		case <-cmd.Context().Done():
			return nil
		case <-tick.C:
		}
	}
}
