package decrypt

import (
	"bytes"
	"crypto/rand"
	"strings"
	"testing"
)

func TestIsEncrypted(t *testing.T) {
	id := newIdentity(t)
	for _, tc := range []struct {
		what, name, data string
		want             bool
	}{
		{"sops yaml", "s.yaml", string(sealTo(t, "s.yaml", []byte(plainYAML), id)), true},
		{"sops yaml, CRLF", "s.yaml", strings.ReplaceAll(string(sealTo(t, "s.yaml", []byte(plainYAML), id)), "\n", "\r\n"), true},
		{"yaml, sops block, comment first", "s.yml", "a: 1\nsops:\n  # note\n\n  age: []\n  mac: ENC[x]\n", true},
		{"yaml, second document", "s.yaml", "a: 1\n---\nb: 2\nsops:\n    mac: x\n", true},
		{"yaml without sops", "s.yaml", plainYAML, false},
		{"yaml, sops without mac", "s.yaml", "sops:\n    version: 3.13.3\nmac: x\n", false},
		{"yaml, mac deeper", "s.yaml", "sops:\n    age:\n        mac: x\n", false},
		{"yaml, nested sops", "s.yaml", "a:\n    sops:\n        mac: x\n", false},
		{"yaml, sops scalar", "s.yaml", "sops: x\nmac: y\n", false},
		{"yaml, sops list", "s.yaml", "sops:\n- mac: x\n", false},
		{"yaml, empty", "s.yaml", "", false},
		{"sops json", "c.json", string(sealTo(t, "c.json", []byte(plainJSON), id)), true},
		{"json, sops no mac", "c.json", `{"sops": {"version": "3"}}`, false},
		{"json, sops string", "c.json", `{"sops": "mac"}`, false},
		{"json, sops null", "c.json", `{"sops": null}`, false},
		{"json, nested", "c.json", `{"a": {"sops": {"mac": "x"}}}`, false},
		{"json, array", "c.json", `[{"sops": {"mac": "x"}}]`, false},
		{"json, truncated", "c.json", `{"sops": {"mac": "x"}`, false},
		{"json, data not needed", "c.json", `{"sops": {"mac": "x"}}`, true},
		{"sops dotenv", "a.env", string(sealTo(t, "a.env", []byte(plainEnv), id)), true},
		{"dotenv plain", "a.env", plainEnv, false},
		{"dotenv, other key", "a.env", "x_sops_mac=1\nsops_version=3\n", false},
		{"dotenv, first line", "a.env", "sops_mac=ENC[x]", true},
		{"ini", "a.ini", "[app]\nx = 1\n[sops]\nversion = 3\nmac = ENC[x]\n", true},
		{"ini, mac elsewhere", "a.ini", "[app]\nmac = 1\n[sops]\nversion = 3\n", false},
		{"sops binary", "tls.key", string(sealTo(t, "tls.key", plainBinary(), id)), true},
		{"binary, no data", "tls.key", `{"sops": {"mac": "x"}}`, false},
		{"binary, data not a string", "tls.key", `{"data": 1, "sops": {"mac": "x"}}`, false},
		{"binary, sops json named .bin", "c.bin", string(sealTo(t, "c.json", []byte(plainJSON), id)), false},
		{"binary junk", "logo.png", "\x89PNG\r\n\x1a\n\x00", false},
		{"suffix is case-sensitive", "s.YAML", "sops:\n    mac: x\n", false},
	} {
		t.Run(tc.what, func(t *testing.T) {
			if got := IsEncrypted(tc.name, []byte(tc.data)); got != tc.want {
				t.Fatalf("IsEncrypted(%s) = %v, want %v", tc.name, got, tc.want)
			}
		})
	}
}

// IsEncrypted never panics, whatever it is given, and stays quick on large input.
func TestIsEncryptedOnHostileInput(t *testing.T) {
	random := make([]byte, 8<<20)
	if _, err := rand.Read(random); err != nil {
		t.Fatal(err)
	}
	inputs := map[string][]byte{
		"nil":           nil,
		"random":        random,
		"deep json":     bytes.Repeat([]byte("{\"a\":"), 1<<20),
		"deep arrays":   append([]byte("{\"sops\":"), bytes.Repeat([]byte("["), 1<<20)...),
		"long line":     bytes.Repeat([]byte("sops:"), 2<<20),
		"many sops":     bytes.Repeat([]byte("sops:\n    \n"), 1<<20),
		"NULs":          make([]byte, 1<<20),
		"only newlines": bytes.Repeat([]byte("\n"), 1<<20),
		"huge but sops": append(bytes.Repeat([]byte("k: v\n"), 1<<20), "sops:\n    mac: x\n"...),
	}
	for what, data := range inputs {
		for _, name := range []string{"x.yaml", "x.json", "x.env", "x.ini", "x.bin", ""} {
			got := IsEncrypted(name, data)
			if got && what != "huge but sops" {
				t.Errorf("%s as %q: reported encrypted", what, name)
			}
		}
	}
	if !IsEncrypted("x.yaml", inputs["huge but sops"]) {
		t.Error("a large YAML file with a sops block at the end was missed")
	}
	// And File refuses what is too large before parsing it.
	if _, err := keysOf(t, newIdentity(t)).File("x.yaml", inputs["huge but sops"]); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("got %v", err)
	}
}
