package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrygitops/ferry/bundles"
)

// TestSopsFilesStayEncryptedByteForByte: a Secret encrypted by the real sops CLI with an age
// recipient travels inside the bundle unchanged, so the node can verify its MAC and decrypt.
func TestSopsFilesStayEncryptedByteForByte(t *testing.T) {
	ctx := t.Context()
	work := t.TempDir()
	keyFile := filepath.Join(work, "age.key")
	if out, err := exec.CommandContext(ctx, tb.Bin("age-keygen"), "-o", keyFile).CombinedOutput(); err != nil {
		t.Fatalf("age-keygen: %v\n%s", err, out)
	}
	out, err := exec.CommandContext(ctx, tb.Bin("age-keygen"), "-y", keyFile).Output()
	if err != nil {
		t.Fatal(err)
	}
	recipient := strings.TrimSpace(string(out))
	plain := filepath.Join(work, "db.yaml")
	secret := "apiVersion: v1\nkind: Secret\nmetadata: {name: db, namespace: web}\nstringData:\n  password: hunter2-not-in-the-bundle\n"
	if err := os.WriteFile(plain, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, tb.Bin("sops"), "--encrypt", "--age", recipient, "--encrypted-regex", "^(data|stringData)$", plain)
	encrypted, err := cmd.Output()
	if err != nil {
		t.Fatalf("sops --encrypt: %v", err)
	}
	if bytes.Contains(encrypted, []byte("hunter2")) {
		t.Fatal("sops output holds the plaintext")
	}

	dir := sourceTree(t, map[string]string{"apps/web/db.sops.yaml": string(encrypted)})
	layout, _ := buildLayout(t, dir)
	files := layerFiles(t, layout, bundles.Options{}, 1)
	f, ok := files.Get("db.sops.yaml")
	if !ok {
		t.Fatal("encrypted file missing from the layer")
	}
	if !bytes.Equal(f.Data, encrypted) {
		t.Fatal("encrypted file changed inside the bundle")
	}
	// And the real sops still decrypts what came out of the bundle.
	got := filepath.Join(work, "from-bundle.sops.yaml")
	if err := os.WriteFile(got, f.Data, 0o600); err != nil {
		t.Fatal(err)
	}
	dec := exec.CommandContext(ctx, tb.Bin("sops"), "--decrypt", got)
	dec.Env = append(os.Environ(), "SOPS_AGE_KEY_FILE="+keyFile)
	plainOut, err := dec.Output()
	if err != nil {
		t.Fatalf("sops --decrypt: %v", err)
	}
	if !strings.Contains(string(plainOut), "hunter2-not-in-the-bundle") {
		t.Fatalf("decrypted %q", plainOut)
	}
}
