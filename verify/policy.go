package verify

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"go.yaml.in/yaml/v3"
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
type PolicyFile struct {
	APIVersion string      `yaml:"apiVersion"`
	Kind       string      `yaml:"kind"`
	Threshold  int         `yaml:"threshold"`
	Keys       []PolicyKey `yaml:"keys"`
}

// PolicyKey is one trusted key, from a file or inline.
type PolicyKey struct {
	Name      string `yaml:"name"`
	Path      string `yaml:"path"`
	PublicKey string `yaml:"publicKey"`
}

// LoadPolicy reads and validates a trust policy file. Unknown fields are errors; every
// problem is reported with its field.
func LoadPolicy(path string) (Policy, error) {
	b, err := readLimited(path, MaxPolicyBytes)
	if err != nil {
		return Policy{}, err
	}
	return ParsePolicy(path, b)
}

// ParsePolicy parses a policy document; path names it in errors and anchors relative key paths.
func ParsePolicy(path string, b []byte) (Policy, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var f PolicyFile
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return Policy{}, fmt.Errorf("%s: empty policy", path)
		}
		return Policy{}, fmt.Errorf("%s: %w", path, err)
	}
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s: %s", path, field, fmt.Sprintf(format, a...)))
	}
	if f.APIVersion != "ferry.dev/v1" {
		bad("apiVersion", "is %q, want ferry.dev/v1", f.APIVersion)
	}
	if f.Kind != "TrustPolicy" {
		bad("kind", "is %q, want TrustPolicy", f.Kind)
	}
	if len(f.Keys) == 0 {
		bad("keys", "trusts no key: a node with this policy could admit nothing")
	}
	p := Policy{Threshold: f.Threshold}
	if f.Threshold < 0 || f.Threshold > len(f.Keys) {
		bad("threshold", "is %d with %d keys", f.Threshold, len(f.Keys))
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
		p.Keys = append(p.Keys, key)
	}
	if err := errors.Join(errs...); err != nil {
		return Policy{}, err
	}
	return p, nil
}
