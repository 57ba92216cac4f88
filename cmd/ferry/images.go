package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/ferrygitops/ferry/daemon"
	"github.com/ferrygitops/ferry/daemon/images"
)

func newImagesCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "images",
		Short: "The images this node serves to containerd, and containerd's mirror configuration",
		Long: `The daemon serves the container images of every kept revision as a read-only OCI
registry on loopback (imagesAddress, default 127.0.0.1:9796). containerd reaches it as a
mirror of each upstream registry, so Pods keep their image names and digests.`,
		Example: `  ferry images list
  sudo ferry images configure --dry-run
  sudo ferry images configure`,
	}
	cmd.AddCommand(newImagesListCommand(), newImagesConfigureCommand())
	return cmd
}

func newImagesListCommand() *cobra.Command {
	var n nodeClient
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the images the node holds, and whether their tags are served now",
		Long: `A tag is served when the bundle's current revision, or one of its healthy revisions,
carries it. Images of other kept revisions stay served by digest, so a rollback pulls
nothing from anywhere.`,
		Example: `  ferry images list
  ferry images list -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var held []images.Held
			if err := n.do(cmd, http.MethodGet, "/v1/images", nil, &held); err != nil {
				return err
			}
			return n.p.print(cmd.OutOrStdout(), held, func(w *tabwriter.Writer) {
				fmt.Fprintln(w, "IMAGE\tDIGEST\tTAG SERVED\tREVISIONS")
				for _, h := range held {
					fmt.Fprintf(w, "%s\t%s\t%v\t%s\n", h.Name, h.Digest, h.Served, strings.Join(h.Revisions, ","))
				}
			})
		},
	}
	n.flags(cmd)
	return cmd
}

// mirrorFlags are the flags of ferry images configure, also taken by ferry service install.
type mirrorFlags struct {
	config, endpoint, hostsDir, registries, socket string
	extra                                          []string
}

func (m *mirrorFlags) add(cmd *cobra.Command, withConfig bool) {
	if withConfig {
		addConfigFlag(cmd, &m.config)
	}
	cmd.Flags().StringVar(&m.endpoint, "endpoint", "", "the image endpoint's `HOST:PORT` (default: imagesAddress of the config, else "+daemon.DefaultImages+")")
	cmd.Flags().StringVar(&m.hostsDir, "hosts-dir", images.K3sHostsDir, "containerd's registry config_path `DIR`, one <registry>/hosts.toml each (\"\" writes none)")
	cmd.Flags().StringVar(&m.registries, "k3s-registries", images.K3sRegistries, "k3s's registries.yaml `FILE` (\"\" writes none)")
	cmd.Flags().StringSliceVar(&m.extra, "registry", nil, "also mirror this registry `HOST` (repeatable)")
	cmd.Flags().StringVar(&m.socket, "socket", daemon.DefaultSocket, "the daemon's API socket, asked which registries the held images come from")
}

// plan reads the endpoint from the config and the held images' registries from the daemon
// (when it runs), and returns the files to write. notes say what was assumed.
func (m *mirrorFlags) plan(cmd *cobra.Command) (changes []images.FileChange, notes []string, err error) {
	endpoint := m.endpoint
	if endpoint == "" {
		endpoint = daemon.DefaultImages
		switch cfg, err := daemon.LoadConfig(m.config); {
		case err == nil && cfg.ImagesAddress == "off":
			return nil, nil, fmt.Errorf("%s: imagesAddress is off: the node serves no images", m.config)
		case err == nil:
			endpoint = cfg.ImagesAddress
		case errors.Is(err, fs.ErrNotExist):
			notes = append(notes, fmt.Sprintf("%s does not exist: endpoint %s assumed", m.config, endpoint))
		default:
			return nil, nil, badInput(err)
		}
	}
	hosts := append([]string{}, images.DefaultRegistries...)
	hosts = append(hosts, m.extra...)
	var held []images.Held
	if err := daemon.NewClient(m.socket).Do(cmd.Context(), http.MethodGet, "/v1/images", nil, &held); err != nil {
		notes = append(notes, fmt.Sprintf("the daemon was not asked which registries its images come from (%v); the default registries and --registry are mirrored, and \"_default\" covers the rest", err))
	}
	hosts = append(hosts, images.Registries(held)...)
	hostsDir, registries := m.hostsDir, m.registries
	// A node without k3s has neither of its directories: say so instead of creating them.
	for _, p := range []*string{&hostsDir, &registries} {
		if *p == images.K3sHostsDir || *p == images.K3sRegistries {
			parent := "/etc/rancher/k3s"
			if *p == images.K3sHostsDir {
				parent = "/var/lib/rancher/k3s/agent/etc/containerd"
			}
			if _, err := os.Stat(parent); err != nil {
				notes = append(notes, fmt.Sprintf("%s not written: %s does not exist (is k3s installed? name another place with --hosts-dir or --k3s-registries)", *p, parent))
				*p = ""
			}
		}
	}
	changes, err = images.PlanMirror(images.MirrorConfig{Endpoint: endpoint, HostsDir: hostsDir, Registries: registries, Hosts: hosts})
	return changes, notes, err
}

// report prints what was (or would be) written and what a k3s node must do next.
func reportMirror(w io.Writer, changes []images.FileChange, notes []string, dryRun bool) {
	for _, n := range notes {
		fmt.Fprintln(w, "note:", n)
	}
	restart := false
	for _, c := range changes {
		verb := map[string]string{"create": "created", "update": "updated", "unchanged": "unchanged"}[c.Action]
		if dryRun {
			verb = "would be " + verb
			if c.Action == "unchanged" {
				verb = "unchanged"
			}
		}
		fmt.Fprintf(w, "%s: %s\n", c.Path, verb)
		if dryRun && c.Action != "unchanged" {
			fmt.Fprintf(w, "    %s\n", strings.ReplaceAll(strings.TrimRight(c.Content, "\n"), "\n", "\n    "))
		}
		if strings.HasSuffix(c.Path, ".yaml") && c.Action != "unchanged" {
			restart = true
		}
	}
	if restart {
		fmt.Fprintln(w, "k3s reads registries.yaml only when it starts: restart it (systemctl restart k3s) for that file to take effect; the hosts.toml files take effect at the next pull.")
	}
}

func newImagesConfigureCommand() *cobra.Command {
	var (
		m      mirrorFlags
		dryRun bool
		p      printer
	)
	cmd := &cobra.Command{
		Use:   "configure [--dry-run]",
		Short: "Point containerd (k3s's) at the node's image endpoint as a mirror of each registry",
		Long: `Configure writes, for each registry to mirror, a containerd hosts.toml in k3s's
certs.d directory (read at every pull: no restart), and a mirrors block in k3s's
registries.yaml (from which k3s writes certs.d when it starts: needs a k3s restart, and
survives one). Both name the endpoint as the only host and as the server, so containerd
never tries the upstream registry from an air gap. "_default" and k3s's "*" cover
registries not named.

The registries are the ones of the images the daemon holds, common public ones, and
--registry. A file Ferry did not write (it has no "Written by ferry" first line) is never
overwritten: configure names it and prints the lines to add yourself. Needs root.`,
		Example: `  # What would be written, without writing anything
  sudo ferry images configure --dry-run

  sudo ferry images configure
  sudo systemctl restart k3s     # once, for registries.yaml

  # containerd without k3s
  sudo ferry images configure --hosts-dir /etc/containerd/certs.d --k3s-registries ""`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := p.validate(); err != nil {
				return err
			}
			changes, notes, err := m.plan(cmd)
			if err != nil {
				return fmt.Errorf("ferry images configure: %w", err)
			}
			if !dryRun {
				if err := images.ApplyMirror(changes); err != nil {
					return fmt.Errorf("ferry images configure: %w", err)
				}
			}
			if p.format != "table" {
				return p.print(cmd.OutOrStdout(), map[string]any{"dryRun": dryRun, "files": changes, "notes": notes}, nil)
			}
			reportMirror(cmd.OutOrStdout(), changes, notes, dryRun)
			return nil
		},
	}
	m.add(cmd, true)
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print the files and their content; write nothing")
	cmd.Flags().StringVarP(&p.format, "output", "o", "table", "output format: table|json|yaml")
	return cmd
}
