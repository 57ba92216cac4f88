package main

import (
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/ferrygitops/ferry/bundles"
)

func newMirrorCommand() *cobra.Command {
	var (
		o  bundles.Options
		mo bundles.MirrorOptions
		p  printer
		rf receiptFlags
	)
	cmd := &cobra.Command{
		Use:   "mirror SRC DST",
		Short: "Copy bundles with their images, signatures and attestations between any two places",
		Long: `Mirror copies a bundle, or with --all every bundle, from one place to another: a
registry, an OCI layout directory, a tar file (a USB stick) or S3, in any direction. The
images the bundle carries, its cosign signatures and attestations (sha256-….sig/.att tags)
and its OCI 1.1 referrers go with it, byte for byte: the copy verifies as the original does.

Only blobs the destination lacks are sent. A tar or S3 destination is assembled in a staging
directory under ~/.cache/ferry/staging and written when the copy is complete; a mirror that
is interrupted (a pulled stick, a dropped link) and run again sends only what is missing.

Addresses are those of ferry bundle: oci://host/repo[:tag], PATH.tar[:tag], DIR[:tag],
s3://bucket/key.tar or s3://bucket/prefix.

With --receipt, the copy is thin: the blobs the node's signed receipt says it holds are left
out (manifests always travel). Only that node can import it; any other refuses it, naming what
is missing, and changes nothing.`,
		Example: `  # Headquarters' registry onto a stick
  ferry mirror oci://registry.hq:5000/site/edge-apps:1.4.0 /media/usb/edge-apps.tar

  # A site's registry kept in sync from a stick: every bundle and tag on it
  ferry mirror --all /media/usb/site.tar oci://registry.site.local/site

  # An S3 prefix of archives into one layout directory
  ferry mirror --all s3://bundles/site dist/site

  # A thin stick for site-7: only what its last receipt says it lacks
  ferry mirror --all oci://registry.hq:5000/site /media/usb/site-7.tar \
    --receipt /media/usb/receipts/site-7.receipt.json --node-keys hq/node-keys/`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := p.validate(); err != nil {
				return err
			}
			src, err := bundles.ParseAddress(args[0])
			if err != nil {
				return badInput(err)
			}
			dst, err := bundles.ParseAddress(args[1])
			if err != nil {
				return badInput(err)
			}
			if os.Getenv("CI") == "" && term.IsTerminal(int(os.Stderr.Fd())) {
				mo.Progress = cmd.ErrOrStderr()
			}
			if mo.Omit, err = rf.omit(cmd.Context(), o, dst); err != nil {
				return err
			}
			res, err := bundles.Mirror(cmd.Context(), src, dst, o, mo)
			if err != nil {
				return err
			}
			return p.print(cmd.OutOrStdout(), res, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "BUNDLE\tTAG\tDIGEST\tSENT\tTO")
				for _, b := range res.Placed {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", b.Name, b.Tag, b.Digest, humanBytes(b.Bytes), b.Where)
				}
				for _, s := range res.Skipped {
					fmt.Fprintf(w, "skipped %s: not a Ferry bundle\n", s)
				}
			})
		},
	}
	addSourceFlags(cmd.Flags(), &o)
	rf.add(cmd)
	cmd.Flags().BoolVar(&mo.All, "all", false, "copy every bundle and tag of SRC (a repository, layout, archive or S3 prefix), each under its own tag")
	cmd.Flags().StringVarP(&p.format, "output", "o", "table", "output format: table|json|yaml")
	return cmd
}
