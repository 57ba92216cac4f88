package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/ferrygitops/ferry/daemon"
)

// errWouldFail is what a preview returns when the bundle would not be admitted or its
// rollout would fail: exit code 2, the reason printed.
var errWouldFail = errors.New("the node would not roll it out")

// preview asks the daemon what it would do with the bundle at ref (a path, oci:// or s3://),
// writing nothing.
func (n *nodeClient) preview(cmd *cobra.Command, ref string) (*daemon.Preview, error) {
	ref, err := daemonRef(ref)
	if err != nil {
		return nil, err
	}
	var p daemon.Preview
	if err := n.do(cmd, http.MethodPost, "/v1/preview", map[string]string{"ref": ref}, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// printPreview writes what the node would do: the bundle and who signed it, whether it would
// be admitted, then one line per change (and with diffs, each change's masked diff).
func printPreview(w io.Writer, p *daemon.Preview, diffs bool) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "%s revision %d (%s), %s\n", p.Bundle, p.Revision, orDash(p.Version), p.Digest)
	var who []string
	for _, s := range p.Signers {
		name := s.KeySource
		if name == "" {
			name = s.KeyID
		}
		who = append(who, name)
	}
	fmt.Fprintf(tw, "  signatures: verified (%s)\n", strings.Join(who, ", "))
	running := "nothing of it"
	if p.Running != 0 {
		running = fmt.Sprintf("revision %d", p.Running)
	}
	switch p.Admission {
	case "new":
		fmt.Fprintf(tw, "  admission: would be admitted; this node runs %s\n", running)
	case "held":
		fmt.Fprintf(tw, "  admission: this node holds it already (%s); it runs %s\n", p.NotAdmitted, running)
	default:
		fmt.Fprintf(tw, "  admission: would be refused: %s\n", p.NotAdmitted)
	}
	counts := map[string]int{}
	for _, c := range p.Plan.Changes {
		counts[c.Action]++
	}
	fmt.Fprintf(tw, "  changes: %d to create, %d to change, %d to prune, %d unchanged", counts["create"], counts["change"], counts["prune"], p.Plan.Unchanged)
	if counts["uninstall"] > 0 {
		fmt.Fprintf(tw, ", %d Helm releases to uninstall", counts["uninstall"])
	}
	if p.Plan.Refused > 0 {
		fmt.Fprintf(tw, "; %d refused by the API server", p.Plan.Refused)
	}
	fmt.Fprintln(tw)
	if len(p.Plan.Changes) > 0 {
		fmt.Fprintln(tw, "\nACTION\tOBJECT\tCOMPONENT\tNOTE")
		for _, c := range p.Plan.Changes {
			note := c.Note
			action := c.Action
			if c.Error != "" {
				action, note = c.Action+" (refused)", c.Error
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", action, c.ID, c.Component, orDash(note))
		}
	}
	tw.Flush()
	if diffs {
		for _, c := range p.Plan.Changes {
			if c.Diff != "" {
				fmt.Fprint(w, "\n"+c.Diff)
			}
		}
	}
}

// daemonRef is ref as the daemon must read it: a path made absolute (the daemon's working
// directory is not ours), an address (oci://, s3://) as it is.
func daemonRef(ref string) (string, error) {
	if strings.Contains(ref, "://") {
		return ref, nil
	}
	return filepath.Abs(ref)
}

// previewResult is the error a preview command ends with: a refusal, or one of the API
// server's refusals of the dry run, as errWouldFail.
func previewResult(p *daemon.Preview) error {
	switch {
	case p.Admission == "refused":
		return fmt.Errorf("%w: %s", errWouldFail, p.NotAdmitted)
	case p.Plan.Refused > 0:
		return fmt.Errorf("%w: the API server refused %d of its changes in a dry run; the rollout would fail and be rolled back", errWouldFail, p.Plan.Refused)
	}
	return nil
}

func newNodeDiffCommand() *cobra.Command {
	var n nodeClient
	cmd := &cobra.Command{
		Use:   "diff PATH|REF",
		Short: "Show what a bundle would change on this node, before importing it",
		Long: `Diff hands the bundle to the daemon, which verifies it against the node's trust policy as
an import would and renders it as a rollout would (the node's variables, its age key in
memory, the signing keys' scopes). Each object is then sent to the API server as a
server-side apply with dryRun=All, as the identity its component runs as, and compared with
the live object; objects of the running revision that the bundle no longer has are shown as
pruned. Values of Secrets are replaced by a short hash. Nothing is written to the node's
store or to the cluster.

It exits as kubectl diff and flux diff do: 0 when nothing would change, 1 when something
would, 2 when the rollout would fail (an object refused by the API server, a revision older
than the node's), 4 when the bundle is not trusted, 5 when the daemon is not running.`,
		Example: `  ferry diff /media/usb0/edge-site-1.4.0.tar
  ferry diff oci://registry.local:5000/site/edge-site:1.4.0 -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := n.preview(cmd, args[0])
			if err != nil {
				return err
			}
			if err := n.p.print(cmd.OutOrStdout(), p, func(tw *tabwriter.Writer) { printPreview(cmd.OutOrStdout(), p, true) }); err != nil {
				return err
			}
			if err := previewResult(p); err != nil {
				return err
			}
			if len(p.Plan.Changes) > 0 {
				return errDiffers
			}
			return nil
		},
	}
	n.flags(cmd)
	return cmd
}
