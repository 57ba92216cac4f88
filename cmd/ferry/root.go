package main

import (
	"github.com/spf13/cobra"
)

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "ferry",
		Short: "GitOps for Kubernetes sites that cannot reach the internet",
		Long: `Ferry builds signed OCI bundles from a Git tree in CI and ships them to a registry,
a tar file for a USB stick, or an S3 bucket. On each edge node, the ferry daemon verifies
them offline, keeps every revision, applies them to the local cluster and rolls back by
itself when health checks fail.`,
		Example: `  # Print the version of this binary
  ferry version

  # The same, as JSON for scripts
  ferry version -o json`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newVersionCommand(), newBundleCommand(), newKeysCommand(), newRenderCommand(), newServiceCommand(), newImagesCommand())
	root.AddCommand(nodeCommands()...)
	return root
}
