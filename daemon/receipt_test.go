package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrygitops/ferry/internal/cosignkey"
)

// The node key: made once where the default says, owner-only, and then reused; a key named
// in the config is never made, and a public key that is not the private key's is refused.
func TestNodeKey(t *testing.T) {
	state := t.TempDir()
	cfg := &Config{StateDir: state, NodeName: "site-7"}
	n, err := loadNodeKey(cfg)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(state, "node.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("node.key: %v, mode %v", err, fi.Mode())
	}
	again, err := loadNodeKey(cfg)
	if err != nil || again.key.ID != n.key.ID || n.name != "site-7" {
		t.Fatalf("second load: %v, key %s then %s", err, n.key.ID, again.key.ID)
	}
	if _, err := loadNodeKey(&Config{StateDir: state, NodeKey: filepath.Join(state, "other.key")}); err == nil || !strings.Contains(err.Error(), "nodeKey") {
		t.Fatalf("a configured key that does not exist: %v", err)
	}
	_, pub, err := cosignkey.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(state, "node.pub"), pub, 0o644)
	if _, err := loadNodeKey(cfg); err == nil || !strings.Contains(err.Error(), "is not the public key") {
		t.Fatalf("a swapped node.pub: %v", err)
	}
}
