package integration

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ferrygitops/ferry/internal/cosignkey"
	"github.com/ferrygitops/ferry/receipt"
)

// TestCosignVerifiesAReceipt: a node's receipt and its signature are what `cosign sign-blob`
// would write, so the real `cosign verify-blob` checks them with the node's public key, and
// refuses a receipt changed after signing.
func TestCosignVerifiesAReceipt(t *testing.T) {
	work := t.TempDir()
	privPEM, pubPEM, err := cosignkey.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	priv, pub := filepath.Join(work, "node.key"), filepath.Join(work, "node.pub")
	writeFile(t, priv, privPEM)
	writeFile(t, pub, pubPEM)
	signer, err := cosignkey.Load(priv, nil)
	if err != nil {
		t.Fatal(err)
	}
	file, sig, err := receipt.Sign(&receipt.Receipt{Node: "site-7", Key: "sha256:x", Written: time.Now().UTC(),
		Bundles: []receipt.Bundle{{Name: "shop", Running: 1, State: "healthy"}}, Blobs: []digest.Digest{digest.FromString("a")}}, signer)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(work, "site-7"+receipt.Suffix)
	writeFile(t, path, file)
	writeFile(t, path+".sig", sig)
	if out, err := cosign(t, work, "verify-blob", "--key", pub, "--signature", path+".sig", "--insecure-ignore-tlog=true", path); err != nil {
		t.Fatalf("cosign verify-blob of a receipt: %v\n%s", err, out)
	}
	os.WriteFile(path, append(file, ' '), 0o644)
	if out, err := cosign(t, work, "verify-blob", "--key", pub, "--signature", path+".sig", "--insecure-ignore-tlog=true", path); err == nil {
		t.Fatalf("cosign verified a changed receipt:\n%s", out)
	}
}
