package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/ferrygitops/ferry/apply"
	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/verify"
)

func newPolicyCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Check bundles against a node's trust policy",
	}
	cmd.AddCommand(newPolicyCheckCommand())
	return cmd
}

// policyReport is what ferry policy check found.
type policyReport struct {
	Bundle   string `json:"bundle"`
	Version  string `json:"version"`
	Revision uint64 `json:"revision"`
	Digest   string `json:"digest"`
	Admitted bool   `json:"admitted"`
	// Refusal says why the bundle would not be admitted.
	Refusal string `json:"refusal,omitempty"`
	// Signers are the keys whose signatures count, with their scopes.
	Signers []verify.Signer `json:"signers"`
	// Provenance are the SLSA attestations that verified.
	Provenance []verify.Provenance `json:"provenance"`
	// Refused are the components and objects the signers' scopes would refuse at apply.
	Refused []policyRefusal `json:"refused"`
}

type policyRefusal struct {
	Component string `json:"component"`
	Object    string `json:"object,omitempty"` // empty: the component itself
	Why       string `json:"why"`
}

// errRefusedByScope is returned when an admitted bundle holds what its keys' scopes refuse.
var errRefusedByScope = fmt.Errorf("%w: %w", verify.ErrUntrusted, verify.ErrOutOfScope)

func newPolicyCheckCommand() *cobra.Command {
	var (
		o      bundles.Options
		policy string
		p      printer
	)
	cmd := &cobra.Command{
		Use:   "check REF --policy FILE",
		Short: "Say which keys and attestations admit a bundle, and what their scopes would refuse",
		Long: `Check verifies the bundle at REF against a trust policy as a node would at admission,
without applying or keeping anything: which signatures count and under which scope, which
SLSA provenance attestations verified and whether the provenance the scopes require is met.
It then renders every component offline (SOPS files left encrypted, variables from the
cluster unset) and lists the components and objects the signing keys' scopes would refuse
at apply: a namespace outside the scope, a cluster-scoped object under a scope that limits
namespaces, another service account.

The default policy is the node's (/etc/ferry/trust-policy.yaml). It exits 0 when the bundle
would be admitted and nothing would be refused, 4 otherwise.`,
		Example: `  ferry policy check dist/team-a-web --policy trust-policy.yaml
  ferry policy check oci://registry.local:5000/site/team-a-web:1.4.0 -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := p.validate(); err != nil {
				return err
			}
			pol, err := verify.LoadPolicy(policy)
			if err != nil {
				return badInput(err)
			}
			src, desc, b, err := openBundle(cmd.Context(), o, args[0])
			if err != nil {
				return err
			}
			defer src.Close()
			m := b.Metadata
			rep := policyReport{Bundle: m.Name, Version: m.Version, Revision: m.Revision, Digest: desc.Digest.String(),
				Signers: []verify.Signer{}, Provenance: []verify.Provenance{}, Refused: []policyRefusal{}}
			res, err := verify.Bundle(cmd.Context(), src, desc, pol)
			if err == nil {
				err = res.Scoped(m.Name)
			}
			if err == nil {
				err = res.Attested(cmd.Context(), src, desc, pol, m)
				rep.Provenance = append(rep.Provenance, res.Provenance...)
			}
			verdict := err
			if err != nil {
				if !errors.Is(err, verify.ErrUntrusted) {
					return err
				}
				rep.Refusal = err.Error()
			} else {
				rep.Admitted = true
				rep.Signers = res.Signers
				if rep.Refused, err = scopeRefusals(cmd, src, b, res.Scopes()); err != nil {
					return err
				}
				if len(rep.Refused) > 0 {
					verdict = fmt.Errorf("%w: bundle %s: %d components or objects are outside its signing keys' scope", errRefusedByScope, m.Name, len(rep.Refused))
				}
			}
			if err := p.print(cmd.OutOrStdout(), rep, func(w *tabwriter.Writer) { printPolicyReport(w, rep) }); err != nil {
				return err
			}
			return verdict
		},
	}
	cmd.Flags().StringVar(&policy, "policy", "/etc/ferry/trust-policy.yaml", "the trust policy `FILE` to check against")
	cmd.Flags().StringVarP(&p.format, "output", "o", "table", "output format: table|json|yaml")
	addSourceFlags(cmd.Flags(), &o)
	return cmd
}

// scopeRefusals renders b's components offline and lists what scopes would refuse, as the
// node's applier does (a component's namespace and service account, each object's
// namespace).
func scopeRefusals(cmd *cobra.Command, src bundles.Source, b *bundles.Bundle, scopes []*bundles.Scope) ([]policyRefusal, error) {
	out := []policyRefusal{}
	if len(scopes) == 0 {
		return out, nil
	}
	env := apply.Env{Vars: map[string]string{}, Lenient: true, NoDecrypt: true}
	for i, c := range b.Metadata.Components {
		ns, home, sa := c.TargetNamespace(), c.HomeNamespace(), c.ServiceAccountName()
		forced := ""
		for _, sc := range scopes {
			if ns != "" && !sc.AllowsNamespace(ns) {
				out = append(out, policyRefusal{Component: c.Name, Why: fmt.Sprintf("works in namespace %s; the key may ship to %s", ns, strings.Join(sc.Namespaces, ","))})
			}
			if home != "" && home != ns && !sc.AllowsNamespace(home) {
				out = append(out, policyRefusal{Component: c.Name, Why: fmt.Sprintf("lives in namespace %s; the key may ship to %s", home, strings.Join(sc.Namespaces, ","))})
			}
			if sc.ServiceAccount == "" {
				continue
			}
			switch {
			case forced != "" && forced != sc.ServiceAccount:
				out = append(out, policyRefusal{Component: c.Name, Why: fmt.Sprintf("its signing keys name different service accounts (%s, %s)", forced, sc.ServiceAccount)})
			case sa != "" && sa != sc.ServiceAccount:
				out = append(out, policyRefusal{Component: c.Name, Why: fmt.Sprintf("runs as %s; the key may ship as %s only", sa, sc.ServiceAccount)})
			}
			forced = sc.ServiceAccount
		}
		objs, err := apply.RenderComponent(cmd.Context(), src, b, i, env)
		if err != nil {
			return nil, fmt.Errorf("component %s: %w", c.Name, err)
		}
		for _, u := range objs {
			ons := u.GetNamespace() // a component's targetNamespace is set on its namespaced objects already
			for _, sc := range scopes {
				if sc.AllowsNamespace(ons) {
					continue
				}
				where := "is cluster-scoped (or has no namespace)"
				if ons != "" {
					where = "is in namespace " + ons
				}
				out = append(out, policyRefusal{Component: c.Name, Object: u.GetKind() + " " + u.GetName(),
					Why: fmt.Sprintf("%s; the key may ship to %s", where, strings.Join(sc.Namespaces, ","))})
				break
			}
		}
	}
	return out, nil
}

func printPolicyReport(w *tabwriter.Writer, rep policyReport) {
	verdict := "admitted"
	if !rep.Admitted {
		verdict = "refused"
	}
	fmt.Fprintf(w, "%s %s (revision %d): %s\n", rep.Bundle, rep.Version, rep.Revision, verdict)
	fmt.Fprintf(w, "Digest:\t%s\n", rep.Digest)
	if rep.Refusal != "" {
		fmt.Fprintf(w, "Why:\t%s\n", rep.Refusal)
	}
	for _, s := range rep.Signers {
		fmt.Fprintf(w, "Signed by:\t%s (%s)\n", filepath.Base(s.KeySource), s.KeyID)
		fmt.Fprintf(w, "  scope:\t%s\n", s.Scope)
	}
	printProvenance(w, rep.Provenance)
	if rep.Admitted && len(rep.Refused) == 0 {
		fmt.Fprintln(w, "Refused at apply:\tnothing")
	}
	for _, r := range rep.Refused {
		what := "component " + r.Component
		if r.Object != "" {
			what += ": " + r.Object
		}
		fmt.Fprintf(w, "Refused at apply:\t%s %s\n", what, r.Why)
	}
}
