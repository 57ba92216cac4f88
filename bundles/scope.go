package bundles

import (
	"fmt"
	"path"
	"strings"
)

// Scope limits what the holder of one signing key may ship to a node (the node's trust
// policy sets it per key or keyless identity): which bundles it may sign, which namespaces
// their components may work in, and the service account they run as. Empty fields do not
// limit. Patterns are path.Match globs ("team-a-*").
type Scope struct {
	Bundles        []string `yaml:"bundles" json:"bundles,omitempty"`
	Namespaces     []string `yaml:"namespaces" json:"namespaces,omitempty"`
	ServiceAccount string   `yaml:"serviceAccount" json:"serviceAccount,omitempty"`
	// Provenance, when set, admits the key's bundles only with SLSA provenance that meets it.
	Provenance *ProvenanceRule `yaml:"provenance" json:"provenance,omitempty"`
}

// ProvenanceRule is what a key's bundles must prove about where they came from: an SLSA v1
// provenance attestation about the bundle, signed by one of Attestors, naming a source
// repository that matches Repositories and a builder that matches Builders, and, when
// CommitSigners is set, a commit (or tag) signature the builder verified by one of them.
type ProvenanceRule struct {
	// Attestors are names of keys of the same policy whose attestations count.
	Attestors []string `yaml:"attestors" json:"attestors"`
	// Repositories are source repository URLs (globs); empty admits any.
	Repositories []string `yaml:"repositories" json:"repositories,omitempty"`
	// Builders are builder ids (globs); empty admits any.
	Builders []string `yaml:"builders" json:"builders,omitempty"`
	// CommitSigners are key fingerprints (OpenPGP hex, SSH SHA256:…) or emails, one of which
	// must have signed the commit or tag built from; empty does not require a verified commit.
	CommitSigners []string `yaml:"commitSigners" json:"commitSigners,omitempty"`
}

// String describes the rule for messages.
func (r *ProvenanceRule) String() string {
	parts := []string{"attested by " + strings.Join(r.Attestors, ",")}
	if len(r.Repositories) > 0 {
		parts = append(parts, "from "+strings.Join(r.Repositories, ","))
	}
	if len(r.Builders) > 0 {
		parts = append(parts, "built by "+strings.Join(r.Builders, ","))
	}
	if len(r.CommitSigners) > 0 {
		parts = append(parts, "commit signed by "+strings.Join(r.CommitSigners, ","))
	}
	return strings.Join(parts, ", ")
}

// Validate reports malformed patterns and names, each under field f.
func (s *Scope) Validate(f string, bad func(field, format string, a ...any)) {
	for name, pats := range map[string][]string{"bundles": s.Bundles, "namespaces": s.Namespaces} {
		for i, p := range pats {
			if _, err := path.Match(p, ""); err != nil || p == "" || strings.Contains(p, "/") {
				bad(fmt.Sprintf("%s.%s[%d]", f, name, i), "%q is not a name pattern (a glob like team-a-*)", p)
			}
		}
	}
	if sa := s.ServiceAccount; sa != "" && (len(sa) > 253 || !dnsSubdomain.MatchString(sa)) {
		bad(f+".serviceAccount", "%q is not a valid service account name", sa)
	}
	if r := s.Provenance; r != nil {
		if len(r.Attestors) == 0 {
			bad(f+".provenance.attestors", "names no key: no attestation could meet the rule")
		}
		for name, pats := range map[string][]string{"repositories": r.Repositories, "builders": r.Builders} {
			for i, p := range pats {
				if _, err := path.Match(p, ""); err != nil || p == "" {
					bad(fmt.Sprintf("%s.provenance.%s[%d]", f, name, i), "%q is not a pattern", p)
				}
			}
		}
	}
}

// AllowsBundle reports whether the scope lets its key sign bundle name.
func (s *Scope) AllowsBundle(name string) bool { return s == nil || matchAny(s.Bundles, name) }

// AllowsNamespace reports whether components of the key's bundles may work in ns; a
// cluster-scoped object (ns "") is allowed only by a scope that does not limit namespaces.
func (s *Scope) AllowsNamespace(ns string) bool {
	return s == nil || len(s.Namespaces) == 0 || (ns != "" && matchAny(s.Namespaces, ns))
}

func matchAny(pats []string, name string) bool {
	if len(pats) == 0 {
		return true
	}
	for _, p := range pats {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}

// String describes the scope for messages.
func (s *Scope) String() string {
	if s == nil {
		return "unscoped"
	}
	var parts []string
	if len(s.Bundles) > 0 {
		parts = append(parts, "bundles "+strings.Join(s.Bundles, ","))
	}
	if len(s.Namespaces) > 0 {
		parts = append(parts, "namespaces "+strings.Join(s.Namespaces, ","))
	}
	if s.ServiceAccount != "" {
		parts = append(parts, "service account "+s.ServiceAccount)
	}
	if s.Provenance != nil {
		parts = append(parts, "provenance "+s.Provenance.String())
	}
	return strings.Join(parts, "; ")
}
