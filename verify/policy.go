package verify

import (
	"errors"
	"fmt"
	"github.com/ferrygitops/ferry/internal/strictyaml"
	"path/filepath"
	"regexp"

	"github.com/ferrygitops/ferry/bundles"
)

// MaxPolicyBytes bounds a trust policy file.
const MaxPolicyBytes = 256 << 10

// PolicyFile is the trust policy a node (or `ferry bundle verify --policy`) reads:
//
//	apiVersion: ferry.dev/v1
//	kind: TrustPolicy
//	threshold: 1
//	keys:
//	  - name: platform
//	    path: keys/platform.pub        # relative to the policy file
//	  - name: apps
//	    publicKey: |
//	      -----BEGIN PUBLIC KEY-----
//	      …
//	    scope:
//	      bundles: [team-a-*]
//	      provenance:                  # only with SLSA provenance attested by key "ci"
//	        attestors: [ci]
//	        repositories: [https://git.example.com/team-a/*]
//	        commitSigners: [release@example.com]
type PolicyFile struct {
	APIVersion string         `yaml:"apiVersion"`
	Kind       string         `yaml:"kind"`
	Threshold  int            `yaml:"threshold"`
	Keys       []PolicyKey    `yaml:"keys"`
	Keyless    *PolicyKeyless `yaml:"keyless"`
}

// PolicyKeyless trusts certificate (keyless) signatures, checked offline against a trusted
// root file shipped to the node:
//
//	keyless:
//	  trustedRoot: trusted_root.json      # relative to the policy file
//	  identities:
//	    - issuer: https://token.actions.githubusercontent.com
//	      subjectRegExp: ^https://github\.com/example/site/\.github/workflows/.*@refs/heads/main$
type PolicyKeyless struct {
	TrustedRoot string           `yaml:"trustedRoot"`
	Identities  []PolicyIdentity `yaml:"identities"`
}

// PolicyIdentity is an allowed keyless signer.
type PolicyIdentity struct {
	Issuer        string         `yaml:"issuer"`
	Subject       string         `yaml:"subject"`
	SubjectRegExp string         `yaml:"subjectRegExp"`
	Scope         *bundles.Scope `yaml:"scope"`
}

// PolicyKey is one trusted key, from a file or inline.
type PolicyKey struct {
	Name      string `yaml:"name"`
	Path      string `yaml:"path"`
	PublicKey string `yaml:"publicKey"`
	// Scope limits what the key may ship (bundles, namespaces, service account).
	Scope *bundles.Scope `yaml:"scope"`
}

// LoadPolicy reads and validates a trust policy file. Unknown fields are errors; every
// problem is reported with its field.
func LoadPolicy(path string) (Policy, error) {
	b, err := bundles.ReadFileLimited(path, MaxPolicyBytes)
	if err != nil {
		return Policy{}, err
	}
	return ParsePolicy(path, b)
}

// ParsePolicy parses a policy document; path names it in errors and anchors relative key paths.
func ParsePolicy(path string, b []byte) (Policy, error) {
	var f PolicyFile
	root, err := strictyaml.Decode(path, b, &f)
	if root == nil {
		return Policy{}, err
	}
	errs := []error{err}
	bad := func(field, format string, a ...any) {
		errs = append(errs, &strictyaml.Error{File: path, Line: strictyaml.Line(root, field), Field: field, Msg: fmt.Sprintf(format, a...)})
	}
	if f.APIVersion != "ferry.dev/v1" {
		bad("apiVersion", "is %q, want ferry.dev/v1", f.APIVersion)
	}
	if f.Kind != "TrustPolicy" {
		bad("kind", "is %q, want TrustPolicy", f.Kind)
	}
	if len(f.Keys) == 0 && f.Keyless == nil {
		bad("keys", "trusts no key: a node with this policy could admit nothing")
	}
	p := Policy{Threshold: f.Threshold}
	signers := len(f.Keys)
	if kl := f.Keyless; kl != nil {
		signers += len(kl.Identities)
		k, err := loadKeyless(path, kl, bad)
		if err == nil {
			p.Keyless = k
		}
	}
	if f.Threshold < 0 || f.Threshold > signers {
		bad("threshold", "is %d with %d keys and identities", f.Threshold, signers)
	}
	names := map[string]bool{}
	ids := map[string]bool{}
	for i, k := range f.Keys {
		field := fmt.Sprintf("keys[%d]", i)
		if k.Name == "" || names[k.Name] {
			bad(field+".name", "%q is empty or repeated", k.Name)
		}
		names[k.Name] = true
		var key Key
		var err error
		switch {
		case (k.Path == "") == (k.PublicKey == ""):
			bad(field, "needs exactly one of path and publicKey")
			continue
		case k.Path != "":
			kp := k.Path
			if !filepath.IsAbs(kp) {
				kp = filepath.Join(filepath.Dir(path), kp)
			}
			key, err = LoadPublicKey(kp)
		default:
			key, err = ParsePublicKey(path+" "+field+".publicKey", []byte(k.PublicKey))
		}
		if err != nil {
			bad(field, "%v", err)
			continue
		}
		if ids[key.ID] {
			// Two entries for one key would let one signer count twice towards the threshold.
			bad(field, "the same key as an earlier entry (%s)", key.ID)
			continue
		}
		ids[key.ID] = true
		key.Source = k.Name
		if k.Scope != nil {
			k.Scope.Validate(field+".scope", bad)
			key.Scope = k.Scope
		}
		p.Keys = append(p.Keys, key)
	}
	// A provenance rule names its attestors among the policy's keys.
	type scoped struct {
		field string
		scope *bundles.Scope
	}
	var scopes []scoped
	for i, k := range f.Keys {
		scopes = append(scopes, scoped{fmt.Sprintf("keys[%d].scope", i), k.Scope})
	}
	if f.Keyless != nil {
		for i, id := range f.Keyless.Identities {
			scopes = append(scopes, scoped{fmt.Sprintf("keyless.identities[%d].scope", i), id.Scope})
		}
	}
	for _, sc := range scopes {
		if sc.scope == nil || sc.scope.Provenance == nil {
			continue
		}
		for j, a := range sc.scope.Provenance.Attestors {
			if !names[a] {
				bad(fmt.Sprintf("%s.provenance.attestors[%d]", sc.field, j), "%q is not the name of a key of this policy", a)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return Policy{}, err
	}
	return p, nil
}

func loadKeyless(path string, kl *PolicyKeyless, bad func(field, format string, a ...any)) (*Keyless, error) {
	if kl.TrustedRoot == "" {
		bad("keyless.trustedRoot", "is required")
		return nil, errors.New("no trusted root")
	}
	rootPath := kl.TrustedRoot
	if !filepath.IsAbs(rootPath) {
		rootPath = filepath.Join(filepath.Dir(path), rootPath)
	}
	b, err := bundles.ReadFileLimited(rootPath, MaxTrustedRootBytes)
	if err != nil {
		bad("keyless.trustedRoot", "%v", err)
		return nil, err
	}
	k, err := ParseTrustedRoot(rootPath, b)
	if err != nil {
		bad("keyless.trustedRoot", "%v", err)
		return nil, err
	}
	if len(kl.Identities) == 0 {
		bad("keyless.identities", "lists no identity: any certificate from the CA would be trusted")
	}
	for i, id := range kl.Identities {
		f := fmt.Sprintf("keyless.identities[%d]", i)
		if id.Issuer == "" {
			bad(f+".issuer", "is required")
		}
		if (id.Subject == "") == (id.SubjectRegExp == "") {
			bad(f, "needs exactly one of subject and subjectRegExp")
			continue
		}
		ident := Identity{Issuer: id.Issuer, Subject: id.Subject, Scope: id.Scope}
		if id.Scope != nil {
			id.Scope.Validate(f+".scope", bad)
		}
		if id.SubjectRegExp != "" {
			re, err := regexp.Compile(id.SubjectRegExp)
			if err != nil {
				bad(f+".subjectRegExp", "%v", err)
				continue
			}
			ident.SubjectRE = re
		}
		k.Identities = append(k.Identities, ident)
	}
	return k, nil
}
