package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"
	"oras.land/oras-go/v2/content/oci"

	"github.com/ferrygitops/ferry/bundler"
	"github.com/ferrygitops/ferry/bundles"
)

func newBundleCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bundle",
		Short: "Build, sign, ship and check bundles (the CI side)",
		Long: `A bundle is a signed OCI artifact holding the components of one part of a cluster.
Addresses, the same for every command:
  oci://host/repo:tag         a registry (loopback registries use plain HTTP)
  PATH.tar                    an OCI layout in a tar file, for a USB stick
  PATH[:tag]                  an OCI layout directory
  s3://bucket/prefix          an S3 bucket (object PREFIX/NAME-VERSION.tar), or s3://bucket/key.tar`,
	}
	var o bundles.Options
	addSourceFlags(cmd.PersistentFlags(), &o)
	cmd.PersistentPreRun = func(cmd *cobra.Command, _ []string) {
		// A progress line on a terminal; nothing in CI logs or pipes.
		if os.Getenv("CI") == "" && term.IsTerminal(int(os.Stderr.Fd())) {
			o.Progress = cmd.ErrOrStderr()
		}
	}
	cmd.AddCommand(newBundleBuildCommand(&o), newBundleCopyCommand(&o, "push"), newBundleCopyCommand(&o, "export"),
		newBundleCopyCommand(&o, "upload"), newBundleInspectCommand(&o),
		newBundleSignCommand(&o), newBundleProvenanceCommand(&o), newBundleVerifyCommand(&o), newBundleDiffCommand(&o))
	return cmd
}

func newBundleBuildCommand(o *bundles.Options) *cobra.Command {
	var (
		out                  string
		revision             uint64
		allowDirty, rendered bool
		fromFlux             string
		name, ver            string
		mirrors              map[string]string
		overrides            map[string]string
		verifyMode           string
		keyrings, committers []string
		p                    = printer{}
	)
	cmd := &cobra.Command{
		Use:   "build [DIR]",
		Short: "Build a bundle from the ferry.yaml in DIR (default .)",
		Long: `Build reads DIR/ferry.yaml, records the Git provenance of the tree (commit, origin
URL, clean or dirty), packs each component reproducibly, renders each one to prove it
builds, and writes the bundle to the address given by --to (default: an OCI layout
directory dist/NAME). The build output of each kustomize component without decryption
travels with it as a rendered layer, exactly as kustomize build prints it: the node
applies that instead of running kustomize again (--rendered=false to leave it out).

With --from-flux, the Kustomizations and HelmReleases of a Flux cluster directory become
the components, with the same fields. Sources that are this repository become local
paths; other Git repositories are cloned and Helm repository charts downloaded now, at
build time, and vendored into the bundle.

With --verify-commit, the commit built from must be signed (HEAD), an annotated tag
pointing at it must be (Tag), or both (TagAndHEAD), by a key of --keyring: an armored
OpenPGP keyring (gpg --export --armor) or an SSH allowed-signers file (as git's
gpg.ssh.allowedSignersFile). --allowed-committers narrows it to some of those keys, by
fingerprint or email. The verified signer goes into the signed config (ferry bundle
inspect shows it); an unsigned commit, an unknown key or uncommitted changes stop the
build, naming the commit.

The revision defaults to the number of commits reachable from HEAD and the creation
time to the commit time, so building one commit twice gives the same digest.
SOURCE_DATE_EPOCH overrides the creation time. The bundle, carried images included, is
staged in $TMPDIR (default /tmp) before it is written to --to: give it room for them.`,
		Example: `  # Build the tree in the current directory into dist/<name>
  ferry bundle build

  # Build straight into a tar for a USB stick, with an explicit revision
  ferry bundle build ./site --revision 120 --to /media/usb/site.tar

  # Only from a commit signed by a release manager's SSH key, named in an allowed-signers
  # file kept outside the checkout (a keyring inside the tree is refused)
  ferry bundle build --verify-commit HEAD --keyring /run/secrets/allowed_signers \
    --allowed-committers release@example.com

  # Only from a commit and tag signed with OpenPGP keys of the team's keyring
  ferry bundle build --verify-commit TagAndHEAD --keyring team.asc

  # Turn a Flux cluster directory into a bundle (sources fetched and vendored now)
  ferry bundle build . --from-flux clusters/production --name production --version 1.4.0

  # A published Flux repository (no gotk-sync.yaml), its chart repository through a mirror
  ferry bundle build . --from-flux clusters/staging --name staging --version 1.0.0 \
    --source-override flux-system=. --source-override flux-system/podinfo=https://charts.mirror.local/podinfo`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := p.validate(); err != nil {
				return err
			}
			dir := "."
			if len(args) == 1 {
				dir = args[0]
			}
			created, err := sourceDateEpoch()
			if err != nil {
				return err
			}
			// The bundle is staged on disk, not in memory: carried images can be many GiB.
			// In $TMPDIR, never inside the tree (an untracked file would make it dirty).
			stage, err := os.MkdirTemp("", "ferry-build-*")
			if err != nil {
				return err
			}
			defer os.RemoveAll(stage)
			store, err := oci.NewWithContext(cmd.Context(), stage)
			if err != nil {
				return err
			}
			var vc *bundler.VerifyCommit
			switch {
			case verifyMode != bundler.VerifyHEAD && verifyMode != bundler.VerifyTag && verifyMode != bundler.VerifyTagAndHEAD && verifyMode != "":
				return badInput(fmt.Errorf("--verify-commit %q: want HEAD, Tag or TagAndHEAD", verifyMode))
			case verifyMode != "" && len(keyrings) == 0:
				return badInput(errors.New("--verify-commit needs --keyring: an armored OpenPGP keyring or an SSH allowed-signers file"))
			case verifyMode != "":
				vc = &bundler.VerifyCommit{Mode: verifyMode, Keyrings: keyrings, AllowedCommitters: committers}
			case len(keyrings) > 0 || len(committers) > 0:
				return badInput(errors.New("--keyring and --allowed-committers take effect with --verify-commit HEAD|Tag|TagAndHEAD"))
			}
			res, err := bundler.Build(cmd.Context(), store, bundler.Options{Dir: dir, Revision: revision, AllowDirty: allowDirty, Created: created, NoRendered: !rendered,
				FromFlux: fromFlux, Name: name, Version: ver, Remote: *o, ImageMirrors: mirrors, SourceOverrides: overrides, VerifyCommit: vc})
			if err != nil {
				return err
			}
			if out == "" {
				out = "dist/" + res.Metadata.Name
			}
			dst, err := bundles.ParseAddress(out)
			if err != nil {
				return badInput(err)
			}
			var where string
			if dst.Kind == bundles.KindLayout && dst.Reference == "" && moveLayout(stage, dst.Path) {
				where = dst.Path + ":" + res.Metadata.Version // a new layout: the staged one, moved
			} else {
				if dst.Kind == bundles.KindLayout {
					if err := os.MkdirAll(dst.Path, 0o755); err != nil {
						return err
					}
				}
				if where, err = bundles.Copy(cmd.Context(), layoutSource{store}, res.Descriptor, dst, *o); err != nil {
					return err
				}
			}
			summary := map[string]any{
				"name": res.Metadata.Name, "version": res.Metadata.Version, "revision": res.Metadata.Revision,
				"digest": res.Descriptor.Digest.String(), "commit": res.Metadata.Source.Commit,
				"dirty": res.Metadata.Source.Dirty, "location": where,
			}
			if v := res.Metadata.Source.Verified; v != nil {
				summary["verified"] = v
			}
			return p.print(cmd.OutOrStdout(), summary, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "built\t%s %s (revision %d)\n", res.Metadata.Name, res.Metadata.Version, res.Metadata.Revision)
				fmt.Fprintf(w, "digest\t%s\n", res.Descriptor.Digest)
				fmt.Fprintf(w, "commit\t%s%s\n", orNone(res.Metadata.Source.Commit), dirtyMark(res.Metadata.Source.Dirty))
				printVerified(w, res.Metadata.Source.Verified)
				fmt.Fprintf(w, "written to\t%s\n", where)
			})
		},
	}
	cmd.Flags().StringVar(&out, "to", "", "where to write the bundle, any address (default: layout directory dist/NAME)")
	cmd.Flags().Uint64Var(&revision, "revision", 0, "bundle revision (default: commits reachable from HEAD)")
	cmd.Flags().BoolVar(&allowDirty, "allow-dirty", false, "build a tree with uncommitted changes or outside Git (marked dirty)")
	cmd.Flags().StringVar(&verifyMode, "verify-commit", "", "require a signature by a --keyring key on the commit (`HEAD`), on an annotated tag pointing at it (Tag), or both (TagAndHEAD)")
	cmd.Flags().StringArrayVar(&keyrings, "keyring", nil, "with --verify-commit, a `FILE` of keys that may sign, kept outside the checkout: an armored OpenPGP keyring or an SSH allowed-signers file (repeatable)")
	cmd.Flags().StringSliceVar(&committers, "allowed-committers", nil, "with --verify-commit, accept only these signers, by key fingerprint or email (comma-separated, repeatable)")
	cmd.Flags().BoolVar(&rendered, "rendered", true, "carry each kustomize component's build output (without decryption) so nodes apply it instead of building it again; --rendered=false leaves the building to the node")
	cmd.Flags().StringVar(&fromFlux, "from-flux", "", "read this Flux cluster directory (Kustomization, HelmRelease, GitRepository, HelmRepository) instead of ferry.yaml")
	cmd.Flags().StringVar(&name, "name", "", "bundle name, with --from-flux")
	cmd.Flags().StringVar(&ver, "version", "", "bundle version (semver), with --from-flux")
	cmd.Flags().StringToStringVar(&overrides, "source-override", nil, "with --from-flux, take the Flux source `[NAMESPACE/]NAME=PATH|URL` from a local directory (\".\" for this repository) or a mirror URL instead of its spec.url (repeatable)")
	cmd.Flags().StringToStringVar(&mirrors, "image-mirror", nil, "resolve and copy the carried images of `REGISTRY=MIRROR` from the mirror (a CI's pull-through cache); the bundle keeps the original names (repeatable)")
	cmd.Flags().StringVarP(&p.format, "output", "o", "table", "output format: table|json|yaml")
	return cmd
}

// printVerified prints the commit signature the builder verified, if any.
func printVerified(w io.Writer, v *bundles.CommitSignature) {
	if v == nil {
		return
	}
	signer := func(s *bundles.Signer) string {
		if len(s.Identities) == 0 {
			return fmt.Sprintf("%s key %s", s.Format, s.Key)
		}
		return fmt.Sprintf("%s (%s key %s)", strings.Join(s.Identities, ", "), s.Format, s.Key)
	}
	if v.Commit != nil {
		fmt.Fprintf(w, "Commit signed by:\t%s\n", signer(v.Commit))
	}
	if v.Tag != nil {
		fmt.Fprintf(w, "Tag %s signed by:\t%s\n", v.TagName, signer(v.Tag))
	}
}

func sourceDateEpoch() (time.Time, error) {
	v := os.Getenv("SOURCE_DATE_EPOCH")
	if v == "" {
		return time.Time{}, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q: want seconds since 1970", v)
	}
	return time.Unix(n, 0).UTC(), nil
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func dirtyMark(d bool) string {
	if d {
		return " (dirty)"
	}
	return ""
}

// moveLayout makes the staged layout the destination when that does not exist yet and is on
// the same filesystem: a build carrying GiB of images then writes them once, not twice.
func moveLayout(stage, dst string) bool {
	if _, err := os.Lstat(dst); err == nil {
		return false
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return false
	}
	os.RemoveAll(filepath.Join(stage, "ingest")) // oras's uploads in progress: none are left
	if err := os.Rename(stage, dst); err != nil {
		return false // another filesystem (EXDEV): copied instead
	}
	return os.Chmod(dst, 0o755) == nil
}

// layoutSource lets a freshly built bundle be copied like any other source.
type layoutSource struct{ *oci.Store }

func (layoutSource) Close() error { return nil }

func newBundleCopyCommand(o *bundles.Options, verb string) *cobra.Command {
	docs := map[string][2]string{
		"push":   {"Copy a bundle and its signatures to a registry", "  ferry bundle push dist/edge-apps oci://registry.local:5000/site/edge-apps:1.4.0"},
		"export": {"Write a bundle and its signatures to a tar file (an OCI layout), for a USB stick", "  ferry bundle export oci://registry.local/site/edge-apps:1.4.0 /media/usb/edge-apps.tar"},
		"upload": {"Upload a bundle and its signatures to S3 as one tar object", "  AWS_ENDPOINT_URL=http://minio:9000 ferry bundle upload dist/edge-apps s3://bundles/site"},
	}
	want := map[string]bundles.Kind{"push": bundles.KindRegistry, "export": bundles.KindTar, "upload": bundles.KindS3}
	var (
		p  printer
		rf receiptFlags
	)
	cmd := &cobra.Command{
		Use:     verb + " SRC DST",
		Short:   docs[verb][0],
		Example: docs[verb][1],
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			dst, err := bundles.ParseAddress(args[1])
			if err != nil {
				return badInput(err)
			}
			if dst.Kind != want[verb] {
				return badInput(fmt.Errorf("%s: ferry bundle %s writes to a %s address, this is a %s", args[1], verb, want[verb], dst.Kind))
			}
			if err := p.validate(); err != nil {
				return err
			}
			omit, err := rf.omit(cmd.Context(), *o, dst)
			if err != nil {
				return err
			}
			return copyBundle(cmd.Context(), cmd, p, *o, args[0], dst, omit)
		},
	}
	cmd.Flags().StringVarP(&p.format, "output", "o", "table", "output format: table|json|yaml")
	if verb != "push" {
		rf.add(cmd)
	}
	return cmd
}

// copied is what a copy of a bundle prints: its manifest digest and where it went.
type copied struct {
	Digest string `json:"digest"`
	To     string `json:"to"`
	// Thin is set for a copy made against a node's receipt.
	Thin bool `json:"thin,omitempty"`
}

// copyBundle copies one bundle from the address from to dst (bundles.Mirror), thin when
// omit is set.
func copyBundle(ctx context.Context, cmd *cobra.Command, p printer, o bundles.Options, from string, dst bundles.Address, omit func(digest.Digest) bool) error {
	src, err := bundles.ParseAddress(from)
	if err != nil {
		return badInput(err)
	}
	res, err := bundles.Mirror(ctx, src, dst, o, bundles.MirrorOptions{Omit: omit, Progress: o.Progress})
	if err != nil {
		return err
	}
	out := copied{Digest: res.Placed[0].Digest, To: res.Placed[0].Where, Thin: omit != nil}
	return p.print(cmd.OutOrStdout(), out, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "%s -> %s", out.Digest, out.To)
		if out.Thin {
			fmt.Fprint(w, " (thin: what the node's receipt holds is left out)")
		}
		fmt.Fprintln(w)
	})
}

// openSource parses a bundle address and opens it for reading.
// addSourceFlags adds the flags that say how to reach registries and S3.
func addSourceFlags(f *pflag.FlagSet, o *bundles.Options) {
	f.BoolVar(&o.PlainHTTP, "plain-http", false, "use plain HTTP for every registry, not only loopback ones")
	f.StringVar(&o.DockerConfig, "registry-config", "", "Docker config.json with registry credentials (default ~/.docker/config.json)")
	f.StringVar(&o.S3Endpoint, "s3-endpoint", "", "S3 endpoint URL (default $AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL or AWS)")
	f.StringVar(&o.S3Region, "s3-region", "", "S3 region (default $AWS_REGION or us-east-1)")
	f.StringVar(&o.S3CredentialsFile, "s3-credentials-file", "", "AWS shared credentials file, used when AWS_ACCESS_KEY_ID is not set (default ~/.aws/credentials; profile from $AWS_PROFILE)")
}

func openSource(ctx context.Context, o bundles.Options, ref string) (bundles.Source, ocispec.Descriptor, error) {
	addr, err := bundles.ParseAddress(ref)
	if err != nil {
		return nil, ocispec.Descriptor{}, badInput(err)
	}
	return bundles.OpenSource(ctx, addr, o)
}

// openBundle opens the bundle at ref and reads its manifest and config; the caller closes
// the source.
func openBundle(ctx context.Context, o bundles.Options, ref string) (bundles.Source, ocispec.Descriptor, *bundles.Bundle, error) {
	src, desc, err := openSource(ctx, o, ref)
	if err != nil {
		return nil, desc, nil, err
	}
	b, err := bundles.Open(ctx, src, desc)
	if err != nil {
		src.Close()
		return nil, desc, nil, err
	}
	return src, desc, b, nil
}

type inspectOutput struct {
	Digest     string                `json:"digest"`
	Name       string                `json:"name"`
	Version    string                `json:"version"`
	Revision   uint64                `json:"revision"`
	Created    time.Time             `json:"created"`
	Source     bundles.Provenance    `json:"source"`
	Components []inspectComponent    `json:"components"`
	Images     []bundles.Image       `json:"images"`
	Signatures []bundlesSignatureRef `json:"signatures"`
	// Attestations are the manifests of attestations stored under cosign's tag.
	Attestations []bundlesSignatureRef `json:"attestations"`
}

type inspectComponent struct {
	Name   string `json:"name"`
	Type   string `json:"type"`
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
	Chart  string `json:"chartVersion,omitempty"`
	// Rendered is the rendered layer the component carries (its build output), if any.
	Rendered *inspectLayer `json:"rendered,omitempty"`
}

type inspectLayer struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

type bundlesSignatureRef struct {
	Tag    string `json:"tag"`
	Digest string `json:"digest"`
}

func newBundleInspectCommand(o *bundles.Options) *cobra.Command {
	p := printer{}
	cmd := &cobra.Command{
		Use:   "inspect REF",
		Short: "Show a bundle's metadata, components, images and signatures",
		Example: `  ferry bundle inspect dist/edge-apps
  ferry bundle inspect oci://registry.local:5000/site/edge-apps:1.4.0 -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := p.validate(); err != nil {
				return err
			}
			src, desc, b, err := openBundle(cmd.Context(), *o, args[0])
			if err != nil {
				return err
			}
			defer src.Close()
			m := b.Metadata
			out := inspectOutput{Digest: desc.Digest.String(), Name: m.Name, Version: m.Version, Revision: m.Revision,
				Created: m.Created, Source: m.Source, Images: m.Images, Signatures: []bundlesSignatureRef{}}
			for i, c := range m.Components {
				l := b.Manifest.Layers[i]
				ic := inspectComponent{Name: c.Name, Type: c.Type, Digest: l.Digest.String(), Size: l.Size}
				if c.Helm != nil {
					ic.Chart = c.Helm.Version
				}
				if r, ok := b.Rendered(i); ok {
					ic.Rendered = &inspectLayer{Digest: r.Digest.String(), Size: r.Size}
				}
				out.Components = append(out.Components, ic)
			}
			if sig, err := src.Resolve(cmd.Context(), bundles.SignatureTag(desc)); err == nil {
				out.Signatures = append(out.Signatures, bundlesSignatureRef{Tag: bundles.SignatureTag(desc), Digest: sig.Digest.String()})
			}
			out.Attestations = []bundlesSignatureRef{}
			if att, err := src.Resolve(cmd.Context(), bundles.AttestationTag(desc)); err == nil {
				out.Attestations = append(out.Attestations, bundlesSignatureRef{Tag: bundles.AttestationTag(desc), Digest: att.Digest.String()})
			}
			return p.print(cmd.OutOrStdout(), out, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "Name:\t%s\nVersion:\t%s\nRevision:\t%d\nDigest:\t%s\nCreated:\t%s\n", m.Name, m.Version, m.Revision, desc.Digest, m.Created.Format(time.RFC3339))
				fmt.Fprintf(w, "Source:\t%s @ %s%s\n", orNone(m.Source.URL), orNone(m.Source.Commit), dirtyMark(m.Source.Dirty))
				printVerified(w, m.Source.Verified)
				sigs := "none"
				if len(out.Signatures) > 0 {
					sigs = out.Signatures[0].Tag
				}
				atts := "none"
				if len(out.Attestations) > 0 {
					atts = out.Attestations[0].Tag
				}
				fmt.Fprintf(w, "Signatures:\t%s\nAttestations:\t%s\n\nCOMPONENT\tTYPE\tSIZE\tDIGEST\tRENDERED\n", sigs, atts)
				for _, c := range out.Components {
					rendered := "no"
					if c.Rendered != nil {
						rendered = humanBytes(c.Rendered.Size)
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", c.Name, c.Type, humanBytes(c.Size), c.Digest, rendered)
				}
				if len(m.Images) > 0 {
					fmt.Fprintf(w, "\nIMAGE\tDIGEST\n")
					for _, im := range m.Images {
						fmt.Fprintf(w, "%s\t%s\n", im.Name, im.Descriptor.Digest)
					}
				}
			})
		},
	}
	cmd.Flags().StringVarP(&p.format, "output", "o", "table", "output format: table|json|yaml")
	return cmd
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
