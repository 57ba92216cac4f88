package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "ferry",
		Short: "GitOps for Kubernetes sites that cannot reach the internet",
		Long: `Ferry builds signed OCI bundles from a Git tree in CI and ships them to a registry,
a tar file for a USB stick, or an S3 bucket. On each edge node, the ferry daemon verifies
them offline, keeps every revision, applies them to the local cluster and rolls back by
itself when health checks fail.

` + exitCodesHelp,
		Example: `  # Print the version of this binary
  ferry version

  # The same, as JSON for scripts
  ferry version -o json`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newVersionCommand(), newBundleCommand(), newMirrorCommand(), newReceiptsCommand(), newKeysCommand(), newRenderCommand(), newServiceCommand(), newImagesCommand(), newPolicyCommand())
	root.AddCommand(nodeCommands()...)
	refuseUnknownSubcommands(root)
	markUsageErrors(root)
	return root
}

// refuseUnknownSubcommands makes every command group (ferry bundle, images, keys, service)
// fail on a subcommand it does not have, with cobra's "did you mean", instead of printing its
// help and exiting 0: a typo in a CI script must fail the job.
func refuseUnknownSubcommands(c *cobra.Command) {
	for _, sub := range c.Commands() {
		refuseUnknownSubcommands(sub)
	}
	if !c.HasSubCommands() || c.Run != nil || c.RunE != nil {
		return
	}
	c.Args = cobra.ArbitraryArgs
	c.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return cmd.Help()
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
		if cmd.SuggestionsMinimumDistance <= 0 {
			cmd.SuggestionsMinimumDistance = 2
		}
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			msg += "; did you mean " + strings.Join(s, " or ") + "?"
		}
		return badInput(fmt.Errorf("%s (see %s --help)", msg, cmd.CommandPath()))
	}
}
