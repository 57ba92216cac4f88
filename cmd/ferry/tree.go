package main

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/ferrygitops/ferry/apply"
	"github.com/ferrygitops/ferry/rollout"
)

// newTreeCommand is `ferry tree`: a revision's objects and their health now.
func newTreeCommand() *cobra.Command {
	var n nodeClient
	cmd := &cobra.Command{
		Use:   "tree BUNDLE [REVISION]",
		Short: "Show the objects a revision applied, by component, and their health now",
		Long: `Tree lists the objects a revision of a bundle applied, as its inventories recorded them,
component by component in the order they are applied, with the health of each one now
(kstatus, as the daemon waits for it): Current, InProgress, Failed, Terminating, NotFound
(gone, or no longer labelled as the bundle's) or Unknown (could not be read). A Helm
component is shown as its release, with the objects of the release under it.

Without REVISION it shows the running revision. The objects are read from the cluster
now; nothing is written, and a rollout in progress is not waited for.`,
		Example: `  ferry tree edge-site
  ferry tree edge-site 41
  ferry tree edge-site -o json`,
		Args:              cobra.RangeArgs(1, 2),
		ValidArgsFunction: n.completeArgs(true),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := "/v1/bundles/" + url.PathEscape(args[0]) + "/tree"
			if len(args) == 2 {
				rev, err := strconv.ParseUint(args[1], 10, 64)
				if err != nil || rev == 0 {
					return badInput(fmt.Errorf("revision %q: want a positive number (see ferry history %s)", args[1], args[0]))
				}
				path += "?revision=" + strconv.FormatUint(rev, 10)
			}
			var t rollout.Tree
			if err := n.do(cmd, http.MethodGet, path, nil, &t); err != nil {
				return err
			}
			return n.p.print(cmd.OutOrStdout(), t, func(w *tabwriter.Writer) { printTree(w, t) })
		},
	}
	n.flags(cmd)
	return cmd
}

// printTree writes a tree as a table; a release's objects are drawn under it as
// `flux tree` draws a tree.
func printTree(w *tabwriter.Writer, t rollout.Tree) {
	running := ""
	if t.Running {
		running = ", running"
	}
	fmt.Fprintf(w, "%s revision %d (%s), %s%s\n", t.Bundle, t.Revision, orDash(t.Version), t.State, running)
	if len(t.Components) == 0 {
		fmt.Fprintln(w, "no inventory: the revision never got as far as applying anything")
		return
	}
	fmt.Fprintln(w, "COMPONENT\tOBJECT\tSTATUS\tMESSAGE")
	for _, c := range t.Components {
		indent := ""
		if r := c.Release; r != nil {
			fmt.Fprintf(w, "%s\tHelmRelease %s/%s\t%s\t%s\n", c.Name, r.Namespace, r.Name, r.Status, orDash(oneLine(r.Message)))
			indent = "├── "
		}
		for i, o := range c.Objects {
			if indent != "" && i == len(c.Objects)-1 {
				indent = "└── "
			}
			fmt.Fprintf(w, "%s\t%s%s\t%s\t%s\n", c.Name, indent, o.ID, o.Status, orDash(oneLine(o.Message)))
		}
	}
}

// newRemoveCommand is `ferry remove`: a bundle's objects out of the cluster, its history kept.
func newRemoveCommand() *cobra.Command {
	var n nodeClient
	cmd := &cobra.Command{
		Use:   "remove BUNDLE",
		Short: "Delete a bundle's objects from the cluster and stop applying it; keep its history",
		Long: `Remove deletes from the cluster every object the running revision of a bundle applied
(only those still labelled as the bundle's and not annotated prune: disabled, whatever the
components' prune settings) and uninstalls its Helm releases. The node keeps every revision:
ferry history still lists them, the removed one as "removed", and ferry status shows the
bundle with no running revision. The daemon applies nothing of it by itself any more, and
revisions admitted but not rolled out yet are removed too. A revision admitted later rolls
out as usual, and ferry rollback BUNDLE REVISION brings a kept one back.

The removal is recorded before anything is deleted: if the node stops in the middle, the
daemon finishes it when it starts again. It is refused while a rollout of the bundle is in
progress; a suspended bundle can be removed. Nothing asks for confirmation.`,
		Example: `  ferry remove edge-site
  ferry remove edge-site -o json`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: n.completeArgs(false),
		RunE: func(cmd *cobra.Command, args []string) error {
			var rm apply.Removal
			if err := n.do(cmd, http.MethodPost, "/v1/bundles/"+url.PathEscape(args[0])+"/remove", nil, &rm); err != nil {
				return err
			}
			return n.p.print(cmd.OutOrStdout(), rm, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "%s: removed revision %d: pruned %d objects, uninstalled %d Helm releases\n", rm.Bundle, rm.Revision, len(rm.Pruned), len(rm.Releases))
				for _, r := range rm.Releases {
					fmt.Fprintf(w, "  uninstalled\tHelmRelease %s\n", r)
				}
				for _, o := range rm.Pruned {
					fmt.Fprintf(w, "  pruned\t%s\n", o)
				}
			})
		},
	}
	n.flags(cmd)
	return cmd
}
