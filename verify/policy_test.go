package verify

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func pubPEM(t testing.TB) string {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(k.Public())
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func indent(s string) string {
	return "      " + strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n      ") + "\n"
}

func TestLoadPolicy(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "keys"), 0o755)
	os.WriteFile(filepath.Join(dir, "keys", "platform.pub"), []byte(pubPEM(t)), 0o644)
	doc := "apiVersion: ferry.dev/v1\nkind: TrustPolicy\nthreshold: 2\nkeys:\n  - name: platform\n    path: keys/platform.pub\n  - name: apps\n    publicKey: |\n" + indent(pubPEM(t))
	path := filepath.Join(dir, "policy.yaml")
	os.WriteFile(path, []byte(doc), 0o644)
	p, err := LoadPolicy(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Keys) != 2 || p.Threshold != 2 || p.Keys[0].Source != "platform" {
		t.Fatalf("policy %+v", p)
	}
}

func TestPolicyRefusals(t *testing.T) {
	key := pubPEM(t)
	inline := "    publicKey: |\n" + indent(key)
	tests := []struct{ name, doc, want string }{
		{"unknown field", "apiVersion: ferry.dev/v1\nkind: TrustPolicy\nkeys: []\nallowUnsigned: true\n", "policy.yaml:4: allowUnsigned: unknown field"},
		{"no keys", "apiVersion: ferry.dev/v1\nkind: TrustPolicy\nkeys: []\n", "keys: trusts no key"},
		{"wrong kind", "apiVersion: ferry.dev/v1\nkind: Policy\nkeys:\n  - name: a\n" + inline, "kind"},
		{"both path and key", "apiVersion: ferry.dev/v1\nkind: TrustPolicy\nkeys:\n  - name: a\n    path: x.pub\n" + inline, "keys[0]: needs exactly one"},
		{"missing key file", "apiVersion: ferry.dev/v1\nkind: TrustPolicy\nkeys:\n  - name: a\n    path: nope.pub\n", "keys[0]"},
		{"threshold too high", "apiVersion: ferry.dev/v1\nkind: TrustPolicy\nthreshold: 2\nkeys:\n  - name: a\n" + inline, "threshold"},
		{"one key twice", "apiVersion: ferry.dev/v1\nkind: TrustPolicy\nthreshold: 2\nkeys:\n  - name: a\n" + inline + "  - name: b\n" + inline, "same key"},
		{"bad pem", "apiVersion: ferry.dev/v1\nkind: TrustPolicy\nkeys:\n  - name: a\n    publicKey: nope\n", "no PEM block"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParsePolicy(filepath.Join(t.TempDir(), "policy.yaml"), []byte(tt.doc))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte("apiVersion: ferry.dev/v1\nkind: TrustPolicy\nkeys:\n  - name: a\n    publicKey: |\n" + indent(pubPEM(f))))
	f.Add([]byte("keys: [{name: a, path: /dev/zero}]"))
	f.Fuzz(func(t *testing.T, b []byte) {
		// Key paths in fuzzed input must not read the machine's files: only inline keys.
		if strings.Contains(string(b), "path") {
			return
		}
		p, err := ParsePolicy("fuzz.yaml", b)
		if err == nil && (len(p.Keys) == 0 || p.Threshold > len(p.Keys)) {
			t.Fatalf("accepted an unusable policy: %+v", p)
		}
	})
}
