package integration

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ferrygitops/ferry/apply/decrypt"
	"github.com/ferrygitops/ferry/bundles"
)

// TestDecryptMatchesSopsCLI: files encrypted by the real sops CLI with an age recipient decrypt
// in memory with decrypt.Keys to exactly the bytes `sops --decrypt` prints, for each format a
// node meets: a multi-document YAML Secret, JSON, dotenv and a binary file.
func TestDecryptMatchesSopsCLI(t *testing.T) {
	work := t.TempDir()
	keyFile, recipient := ageKeygen(t, work, "node.key")

	binary := []byte("\x00\x01\xfe\xff not text\r\nhunter2-binary\x80")
	for i := range 256 {
		binary = append(binary, byte(i))
	}
	cases := []struct {
		name  string // the file's name in the bundle, whose suffix picks the format
		plain string
		args  []string
	}{
		{"apps/web/db.sops.yaml", "# the app's database\napiVersion: v1\nkind: Secret\nmetadata: {name: db, namespace: web}\n" +
			"stringData:\n  password: hunter2-yaml # inline\n  port: \"5432\"\n---\napiVersion: v1\nkind: Secret\n" +
			"metadata:\n  name: api\ndata:\n  token: aHVudGVyMi10b2tlbg==\n",
			[]string{"--encrypted-regex", "^(data|stringData)$"}},
		{"apps/web/config.json", `{"user": "admin", "password": "hunter2-json", "n": 42, "ratio": 0.25, "on": true,` +
			` "nested": {"list": [1, "two", {"three": null}]}, "unicode": "h\u00e9"}`, nil},
		{"apps/web/app.env", "# env for the app\nDB_USER=admin\nDB_PASSWORD=hunter2-env\nMULTI=a\\nb\nEMPTY=\n",
			[]string{"--input-type", "dotenv", "--output-type", "dotenv"}},
		{"apps/web/tls.bin", string(binary), nil},
	}

	keys, err := decrypt.LoadKeys(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	var files bundles.Files
	want := map[string][]byte{}
	for _, tc := range cases {
		base := filepath.Base(tc.name)
		plainPath := filepath.Join(work, "plain-"+base)
		if err := os.WriteFile(plainPath, []byte(tc.plain), 0o600); err != nil {
			t.Fatal(err)
		}
		args := append([]string{"--encrypt", "--age", recipient}, tc.args...)
		encrypted := runSops(t, work, nil, append(args, plainPath)...)
		if bytes.Contains(encrypted, []byte("hunter2")) {
			t.Fatalf("%s: sops output holds the plaintext", tc.name)
		}
		encPath := filepath.Join(work, "enc-"+base)
		if err := os.WriteFile(encPath, encrypted, 0o600); err != nil {
			t.Fatal(err)
		}
		// The CLI gets the key through the environment; decrypt.Keys never looks there.
		cliPlain := runSops(t, work, []string{"SOPS_AGE_KEY_FILE=" + keyFile}, "--decrypt", encPath)

		if !decrypt.IsEncrypted(tc.name, encrypted) {
			t.Fatalf("%s: IsEncrypted is false on what sops wrote:\n%s", tc.name, encrypted)
		}
		got, err := keys.File(tc.name, encrypted)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !bytes.Equal(got, cliPlain) {
			t.Fatalf("%s: differs from sops --decrypt\n got %q\nwant %q", tc.name, got, cliPlain)
		}
		files = append(files, bundles.File{Name: tc.name, Mode: 0o644, Data: encrypted})
		want[tc.name] = cliPlain
	}

	// The same files through Files, next to a manifest that is not encrypted.
	files = append(files, bundles.File{Name: "apps/web/deploy.yaml", Mode: 0o644, Data: []byte("kind: Deployment\n")})
	want["apps/web/deploy.yaml"] = []byte("kind: Deployment\n")
	slices.SortFunc(files, func(a, b bundles.File) int { return strings.Compare(a.Name, b.Name) })
	out, n, err := keys.Files(files)
	if err != nil {
		t.Fatal(err)
	}
	if n != len(cases) {
		t.Fatalf("Files decrypted %d files, want %d", n, len(cases))
	}
	for _, f := range out {
		if !bytes.Equal(f.Data, want[f.Name]) {
			t.Errorf("Files: %s differs from sops --decrypt", f.Name)
		}
	}

	// Another node's key opens none of them, and says which recipient the file wants.
	otherFile, _ := ageKeygen(t, work, "other.key")
	other, err := decrypt.LoadKeys(otherFile)
	if err != nil {
		t.Fatal(err)
	}
	_, err = other.File(files[0].Name, files[0].Data)
	if !errors.Is(err, decrypt.ErrNoMatchingKey) || !strings.Contains(err.Error(), recipient) || !strings.Contains(err.Error(), files[0].Name) {
		t.Fatalf("another node's key: got %v", err)
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error shows plaintext: %v", err)
	}
}

// ageKeygen writes a new age identity file under dir with the real age-keygen (mode 0600) and
// returns its path and public key.
func ageKeygen(t *testing.T, dir, name string) (path, recipient string) {
	t.Helper()
	path = filepath.Join(dir, name)
	if out, err := exec.CommandContext(t.Context(), tb.Bin("age-keygen"), "-o", path).CombinedOutput(); err != nil {
		t.Fatalf("age-keygen: %v\n%s", err, out)
	}
	out, err := exec.CommandContext(t.Context(), tb.Bin("age-keygen"), "-y", path).Output()
	if err != nil {
		t.Fatalf("age-keygen -y: %v", err)
	}
	return path, strings.TrimSpace(string(out))
}

// runSops runs the sops CLI in dir (so no .sops.yaml above the test's directory applies) with
// every SOPS_* variable of the test's environment removed and env added, and returns stdout.
func runSops(t *testing.T, dir string, env []string, args ...string) []byte {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), tb.Bin("sops"), args...)
	cmd.Dir = dir
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SOPS_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sops %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}
