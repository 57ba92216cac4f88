package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/ferrygitops/ferry/apply"
	"github.com/ferrygitops/ferry/apply/render"
	"github.com/ferrygitops/ferry/bundles"
)

func newBundleDiffCommand(o *bundles.Options) *cobra.Command {
	p := printer{}
	cmd := &cobra.Command{
		Use:   "diff REF_A REF_B",
		Short: "Show which objects change between two bundles, secrets masked",
		Long: `Diff renders every component of both bundles with the renderer the node uses and
compares them object by object (group, kind, namespace, name): added, removed and changed
objects, with a unified diff of each. Values of Secrets are replaced by a short hash, so a
changed secret shows as changed without being shown. Variables are not substituted: they
come from the node.

It exits as diff, kubectl diff and flux diff do, so a CI job can gate on it: 0 when the
bundles render the same objects, 1 when they differ, more when the diff could not be made
(3 bad input, 2 any other error; see ferry --help).`,
		Example: `  ferry bundle diff oci://registry.local:5000/site/edge-apps:1.3.0 dist/edge-apps
  ferry bundle diff old.tar new.tar -o json

  # Fail a CI job when a rebuild changes what the node applies
  ferry bundle diff oci://registry.local:5000/site/edge-apps:1.3.0 dist/edge-apps || exit 1`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := p.validate(); err != nil {
				return err
			}
			var renders [2][]render.Object
			for i, ref := range args {
				src, desc, err := openSource(cmd.Context(), *o, ref)
				if err != nil {
					return err
				}
				b, err := bundles.Open(cmd.Context(), src, desc)
				if err == nil {
					renders[i], err = apply.Objects(cmd.Context(), src, b, "", apply.Env{KeepVariables: true, NoDecrypt: true})
				}
				src.Close()
				if err != nil {
					return fmt.Errorf("%s: %w", ref, err)
				}
			}
			changes := render.Diff(renders[0], renders[1])
			if changes == nil {
				changes = []render.Change{}
			}
			err := p.print(cmd.OutOrStdout(), changes, func(w *tabwriter.Writer) {
				if len(changes) == 0 {
					fmt.Fprintln(w, "no changes")
					return
				}
				for _, c := range changes {
					fmt.Fprintf(w, "%s %s (component %s)\n", c.Action, c.ID, c.Component)
				}
				w.Flush()
				for _, c := range changes {
					fmt.Fprint(cmd.OutOrStdout(), "\n"+c.Diff)
				}
			})
			if err == nil && len(changes) > 0 {
				err = errDiffers
			}
			return err
		},
	}
	cmd.Flags().StringVarP(&p.format, "output", "o", "table", "output format: table|json|yaml")
	return cmd
}
