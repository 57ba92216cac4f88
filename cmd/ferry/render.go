package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/ferrygitops/ferry/apply"
	"github.com/ferrygitops/ferry/apply/decrypt"
	"github.com/ferrygitops/ferry/bundles"
)

func newRenderCommand() *cobra.Command {
	var (
		o         bundles.Options
		component string
		vars      []string
		ageKey    string
		format    string
	)
	cmd := &cobra.Command{
		Use:   "render REF",
		Short: "Print the objects a bundle applies, as a node renders them, secrets masked",
		Long: `Render reads a bundle (from a registry, a tar, an OCI layout or S3) and renders its
components with the code the node runs: kustomize or Helm, SOPS decryption (with --age-key),
postBuild substitution with the variables given by --var, which also replace ${VAR} in Helm
values as the node's variables do. Variables from the cluster
(substituteFrom) are not read: set them with --var; one left unset becomes empty. The values
of Secrets are replaced by a short hash.`,
		Example: `  ferry render dist/edge-apps
  ferry render oci://registry.local:5000/site/edge-apps:1.4.0 --component web --var SITE_ID=north-7
  ferry render stick/edge-apps.tar --age-key /etc/ferry/age.key -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "yaml" && format != "json" && format != "table" {
				return badInput(fmt.Errorf("--output %q: want yaml, table or json", format))
			}
			env := apply.Env{Vars: map[string]string{}, Lenient: true, NoDecrypt: ageKey == ""}
			for _, kv := range vars {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return badInput(fmt.Errorf("--var %q: want NAME=VALUE", kv))
				}
				env.Vars[k] = v
			}
			if ageKey != "" {
				keys, err := decrypt.LoadKeys(ageKey)
				if err != nil {
					return badInput(err)
				}
				env.Keys = keys
			}
			src, desc, err := openSource(cmd.Context(), o, args[0])
			if err != nil {
				return err
			}
			defer src.Close()
			b, err := bundles.Open(cmd.Context(), src, desc)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			objs, err := apply.Objects(cmd.Context(), src, b, component, env)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			out := cmd.OutOrStdout()
			switch format {
			case "yaml":
				for _, obj := range objs {
					fmt.Fprintf(out, "---\n# component: %s\n%s", obj.Component, obj.YAML)
				}
				return nil
			default:
				p := printer{format: format}
				return p.print(out, objs, func(w *tabwriter.Writer) {
					fmt.Fprintln(w, "COMPONENT\tOBJECT")
					for _, obj := range objs {
						fmt.Fprintf(w, "%s\t%s\n", obj.Component, obj.ID)
					}
				})
			}
		},
	}
	cmd.Flags().StringVar(&component, "component", "", "render only this component")
	cmd.Flags().StringArrayVar(&vars, "var", nil, "a postBuild variable, NAME=VALUE (repeatable)")
	cmd.Flags().StringVar(&ageKey, "age-key", "", "age key file to decrypt SOPS files (mode 0600); without it they are rendered encrypted")
	cmd.Flags().StringVarP(&format, "output", "o", "yaml", "output format: yaml|table|json")
	addSourceFlags(cmd.Flags(), &o)
	return cmd
}
