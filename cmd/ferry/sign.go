package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/ferrygitops/ferry/bundler"
	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/internal/cosignkey"
	"github.com/ferrygitops/ferry/verify"
)

// password reads COSIGN_PASSWORD, as cosign does, or asks on the terminal.
func password(cmd *cobra.Command, confirm bool) ([]byte, error) {
	if pw, ok := os.LookupEnv("COSIGN_PASSWORD"); ok {
		return []byte(pw), nil
	}
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return nil, errors.New("no password: set COSIGN_PASSWORD (it may be empty)")
	}
	fmt.Fprint(cmd.ErrOrStderr(), "Enter password for private key: ")
	pw, err := term.ReadPassword(fd)
	fmt.Fprintln(cmd.ErrOrStderr())
	if err != nil || !confirm {
		return pw, err
	}
	fmt.Fprint(cmd.ErrOrStderr(), "Enter password for private key again: ")
	again, err := term.ReadPassword(fd)
	fmt.Fprintln(cmd.ErrOrStderr())
	if err != nil {
		return nil, err
	}
	if string(again) != string(pw) {
		return nil, errors.New("passwords do not match")
	}
	return pw, nil
}

func newBundleSignCommand(o *bundles.Options) *cobra.Command {
	var (
		key, identity string
		provenance    bool
		po            provenanceFlags
		p             printer
	)
	cmd := &cobra.Command{
		Use:   "sign REF --key cosign.key",
		Short: "Sign a bundle with a cosign key, storing the signature the way cosign does",
		Long: `Sign adds a cosign signature to the bundle at REF (an OCI layout directory or a
registry). The key is a cosign private key (cosign generate-key-pair or ferry keys
generate); its password comes from COSIGN_PASSWORD or the terminal. Nothing is sent to
a transparency log: Ferry is for sites with no network, and cosign verifies these
signatures with --insecure-ignore-tlog=true.

With --provenance, the same key also attests where the bundle came from: an SLSA v1
provenance statement (source repository, commit and its verified signer, the digests of
ferry.yaml, of each component and of each carried image; the builder and this run),
stored as cosign attest stores it, which cosign verify-attestation --type
slsaprovenance1 checks. A node's trust policy can require it (docs/TRUST.md).`,
		Example: `  COSIGN_PASSWORD=... ferry bundle sign dist/edge-apps --key cosign.key
  ferry bundle sign oci://registry.local:5000/site/edge-apps:1.4.0 --key cosign.key

  # Sign and attest provenance, naming the CI system as the builder
  ferry bundle sign dist/edge-apps --key ci.key --provenance \
    --builder-id https://ci.example.com/runners/site-release`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if key == "" {
				return badInput(errors.New("--key is required"))
			}
			if err := p.validate(); err != nil {
				return err
			}
			addr, err := bundles.ParseAddress(args[0])
			if err != nil {
				return badInput(err)
			}
			target, desc, err := bundles.OpenTarget(cmd.Context(), addr, *o)
			if err != nil {
				return err
			}
			b, err := bundles.Open(cmd.Context(), target, desc)
			if err != nil {
				return err
			}
			pw, err := password(cmd, false)
			if err != nil {
				return err
			}
			signer, err := bundler.LoadPrivateKey(key, pw)
			if err != nil {
				return err
			}
			if identity == "" {
				identity = b.Metadata.Name
				if addr.Kind == bundles.KindRegistry {
					identity = addr.Ref.Registry + "/" + addr.Ref.Repository
				}
			}
			var st *bundles.Statement
			if provenance {
				// Made before anything is written, so a missing builder id signs nothing.
				if st, err = po.statement(desc, b, identity); err != nil {
					return badInput(err)
				}
			}
			if _, err := bundler.Sign(cmd.Context(), target, desc, signer, identity); err != nil {
				return err
			}
			out := map[string]string{"bundle": b.Metadata.Name, "version": b.Metadata.Version, "digest": desc.Digest.String(), "signature": bundles.SignatureTag(desc)}
			if st != nil {
				if _, err := bundler.Attest(cmd.Context(), target, desc, st, signer); err != nil {
					return err
				}
				out["attestation"] = bundles.AttestationTag(desc)
			}
			return p.print(cmd.OutOrStdout(), out, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "signed %s %s (%s) as %s\n", out["bundle"], out["version"], out["digest"], out["signature"])
				if st != nil {
					fmt.Fprintf(w, "attested SLSA provenance as %s\n", out["attestation"])
				}
			})
		},
	}
	cmd.Flags().BoolVar(&provenance, "provenance", false, "also attest SLSA v1 provenance with the same key (needs --builder-id or FERRY_BUILDER_ID)")
	po.add(cmd)
	cmd.Flags().StringVarP(&p.format, "output", "o", "table", "output format: table|json|yaml")
	cmd.Flags().StringVar(&key, "key", "", "cosign private key file")
	cmd.Flags().StringVar(&identity, "identity", "", "docker-reference claimed in the signed payload (default: the registry repository, or the bundle name)")
	return cmd
}

// provenanceFlags describe the builder in an SLSA provenance statement.
type provenanceFlags struct{ builderID, invocationID string }

func (f *provenanceFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.builderID, "builder-id", os.Getenv("FERRY_BUILDER_ID"), "SLSA builder id: the CI system or runner that built the bundle, as a URI (default $FERRY_BUILDER_ID)")
	cmd.Flags().StringVar(&f.invocationID, "invocation-id", ciJobURL(), "this build's run, as a URI (default: the CI job's URL from GitLab's or GitHub's environment)")
}

func (f *provenanceFlags) statement(desc ocispec.Descriptor, b *bundles.Bundle, name string) (*bundles.Statement, error) {
	return bundler.Provenance(desc, b, bundler.ProvenanceOptions{BuilderID: f.builderID, InvocationID: f.invocationID, Repository: name})
}

// ciJobURL is the URL of the CI job running, from GitLab's or GitHub Actions' environment.
func ciJobURL() string {
	if u := os.Getenv("CI_JOB_URL"); u != "" {
		return u
	}
	if s, r, id := os.Getenv("GITHUB_SERVER_URL"), os.Getenv("GITHUB_REPOSITORY"), os.Getenv("GITHUB_RUN_ID"); s != "" && r != "" && id != "" {
		return s + "/" + r + "/actions/runs/" + id
	}
	return ""
}

// newBundleProvenanceCommand prints the SLSA provenance predicate of a bundle, for cosign.
func newBundleProvenanceCommand(o *bundles.Options) *cobra.Command {
	var (
		po provenanceFlags
		p  printer
	)
	cmd := &cobra.Command{
		Use:   "provenance REF --builder-id URI",
		Short: "Print the SLSA v1 provenance predicate of a bundle, for cosign attest",
		Long: `Provenance prints the SLSA v1 provenance predicate ferry bundle sign --provenance would
attest for the bundle at REF, as JSON, without signing anything: for a CI job that attests
with cosign (cosign attest --type slsaprovenance1 --predicate FILE). Nodes check a
cosign-made attestation of it as they check Ferry's. -o yaml prints it as YAML, -o json
(and the default) as indented JSON.`,
		Example: `  ferry bundle provenance oci://registry.local:5000/site/edge-apps:1.4.0 \
    --builder-id https://ci.example.com/runners/site-release > predicate.json
  cosign attest --key ci.key --type slsaprovenance1 --predicate predicate.json \
    --tlog-upload=false registry.local:5000/site/edge-apps@sha256:…`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			src, desc, b, err := openBundle(cmd.Context(), *o, args[0])
			if err != nil {
				return err
			}
			defer src.Close()
			if err := p.validate(); err != nil {
				return err
			}
			st, err := po.statement(desc, b, "")
			if err != nil {
				return badInput(err)
			}
			var pred any
			if err := json.Unmarshal(st.Predicate, &pred); err != nil {
				return err
			}
			if p.format == "table" {
				p.format = "json"
			}
			return p.print(cmd.OutOrStdout(), pred, nil)
		},
	}
	po.add(cmd)
	cmd.Flags().StringVarP(&p.format, "output", "o", "json", "output format: json|yaml")
	return cmd
}

// printProvenance prints the provenance attestations that verified.
func printProvenance(w io.Writer, provs []verify.Provenance) {
	for _, pv := range provs {
		fmt.Fprintf(w, "Provenance:\tattested by %s, built by %s from %s @ %s\n", strings.Join(pv.Attestors, ", "), pv.BuilderID, orNone(pv.Repository), orNone(pv.Commit))
		printVerified(w, pv.Verified)
	}
}

func newBundleVerifyCommand(o *bundles.Options) *cobra.Command {
	var (
		keys       []string
		threshold  int
		policyFile string
		p          = printer{}
	)
	cmd := &cobra.Command{
		Use:   "verify REF --key cosign.pub",
		Short: "Check a bundle's signatures offline, with the code the edge daemon uses",
		Long: `Verify checks that the bundle at REF carries signatures by the given public keys
over exactly its manifest digest, then reads and checks every blob of the bundle against
that digest. It fails when any of it does not hold. Nothing is fetched from a network
but the bundle itself.`,
		Example: `  ferry bundle verify /media/usb/edge-apps.tar --key cosign.pub
  ferry bundle verify oci://registry.local:5000/site/edge-apps:1.4.0 --key team-a.pub --key team-b.pub --threshold 2
  ferry bundle verify /media/usb/edge-apps.tar --policy /etc/ferry/trust-policy.yaml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := p.validate(); err != nil {
				return err
			}
			var policy verify.Policy
			switch {
			case policyFile != "" && len(keys) > 0:
				return badInput(errors.New("--policy and --key: use one (the policy lists its keys)"))
			case policyFile != "":
				var err error
				if policy, err = verify.LoadPolicy(policyFile); err != nil {
					return badInput(err)
				}
			case len(keys) == 0:
				return badInput(errors.New("--key or --policy is required: verification without a trusted key proves nothing"))
			default:
				policy.Threshold = threshold
			}
			for _, k := range keys {
				key, err := verify.LoadPublicKey(k)
				if err != nil {
					return badInput(err)
				}
				policy.Keys = append(policy.Keys, key)
			}
			src, desc, err := openSource(cmd.Context(), *o, args[0])
			if err != nil {
				return err
			}
			defer src.Close()
			res, err := verify.Bundle(cmd.Context(), src, desc, policy)
			if err != nil {
				return err
			}
			// Signatures cover the manifest; the manifest covers every blob. Read them all so a
			// damaged or tampered copy fails here, not on the node.
			b, err := bundles.Open(cmd.Context(), src, desc)
			if err != nil {
				return err
			}
			if err := res.Scoped(b.Metadata.Name); err != nil {
				return err
			}
			if err := res.Attested(cmd.Context(), src, desc, policy, b.Metadata); err != nil {
				return err
			}
			prog := bundles.NewProgress(o.Progress, "verify "+b.Metadata.Name, bundles.TransferSize(cmd.Context(), src, desc, b.Metadata.Images))
			err = b.Check(cmd.Context(), bundles.Counted(src, prog))
			prog.Finish()
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			return p.print(cmd.OutOrStdout(), res, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "Verified %s %s (revision %d)\n", b.Metadata.Name, b.Metadata.Version, b.Metadata.Revision)
				fmt.Fprintf(w, "Digest:\t%s\n", res.Digest)
				for _, s := range res.Signers {
					fmt.Fprintf(w, "Signed by:\t%s (%s)\n", s.KeyID, filepath.Base(s.KeySource))
					if s.Scope != nil {
						fmt.Fprintf(w, "  scope:\t%s\n", s.Scope)
					}
				}
				printProvenance(w, res.Provenance)
			})
		},
	}
	cmd.Flags().StringArrayVar(&keys, "key", nil, "trusted cosign public key file (repeat for several)")
	cmd.Flags().IntVar(&threshold, "threshold", 1, "distinct trusted keys that must have signed")
	cmd.Flags().StringVar(&policyFile, "policy", "", "the node's trust policy file (keys and threshold), to check exactly what a node would admit")
	cmd.Flags().StringVarP(&p.format, "output", "o", "table", "output format: table|json|yaml")
	return cmd
}

func newKeysCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "keys", Short: "Manage signing keys"}
	var (
		prefix string
		p      printer
	)
	gen := &cobra.Command{
		Use:   "generate",
		Short: "Generate a cosign-format key pair (PREFIX.key, PREFIX.pub)",
		Long: `Generate writes an ECDSA P-256 key pair in cosign's format: the private key encrypted
with the password from COSIGN_PASSWORD (or the terminal), mode 0600, and the public key.
cosign sign and ferry bundle sign both accept the private key. Existing files are never
overwritten.`,
		Example: `  COSIGN_PASSWORD=... ferry keys generate --prefix ci-signer`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := p.validate(); err != nil {
				return err
			}
			priv, pub := prefix+".key", prefix+".pub"
			for _, f := range []string{priv, pub} {
				if _, err := os.Stat(f); err == nil {
					return fmt.Errorf("%s exists; not overwriting a key", f)
				}
			}
			pw, err := password(cmd, true)
			if err != nil {
				return err
			}
			privPEM, pubPEM, err := bundler.GenerateKeyPair(pw)
			if err != nil {
				return err
			}
			if err := cosignkey.WriteNew(priv, privPEM, 0o600); err != nil {
				return err
			}
			if err := cosignkey.WriteNew(pub, pubPEM, 0o644); err != nil {
				return err
			}
			out := map[string]string{"privateKey": priv, "publicKey": pub}
			return p.print(cmd.OutOrStdout(), out, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "Private key written to %s\nPublic key written to %s\n", priv, pub)
			})
		},
	}
	gen.Flags().StringVarP(&p.format, "output", "o", "table", "output format: table|json|yaml")
	gen.Flags().StringVar(&prefix, "prefix", "cosign", "file name prefix for the key pair")
	cmd.AddCommand(gen)
	return cmd
}
