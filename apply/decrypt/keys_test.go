package decrypt

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
)

func writeKeyFile(t *testing.T, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "age.key")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // not subject to the umask
		t.Fatal(err)
	}
	return p
}

func TestLoadKeys(t *testing.T) {
	a, b := newIdentity(t), newIdentity(t)
	pq, err := age.GenerateHybridIdentity()
	if err != nil {
		t.Fatal(err)
	}
	// What age-keygen writes, twice, plus a post-quantum identity and a blank line.
	good := fmt.Sprintf("# created: 2026-01-02T03:04:05Z\n# public key: %s\n%s\n\n# created: x\n# public key: %s\n%s\n%s\n",
		a.Recipient(), a, b.Recipient(), b, pq)

	for _, mode := range []os.FileMode{0o600, 0o400, 0o700} {
		k, err := LoadKeys(writeKeyFile(t, good, mode))
		if err != nil {
			t.Fatalf("mode %04o: %v", mode, err)
		}
		want := []string{a.Recipient().String(), b.Recipient().String(), pq.Recipient().String()}
		if got := k.Recipients(); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Fatalf("recipients %v, want %v", got, want)
		}
	}

	// The keys loaded are the ones that decrypt.
	k, err := LoadKeys(writeKeyFile(t, good, 0o600))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.File("s.yaml", sealTo(t, "s.yaml", []byte(plainYAML), b)); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		what    string
		content string
		mode    os.FileMode
		want    []string
	}{
		{"group readable", good, 0o640, []string{"0640", "chmod 600"}},
		{"world readable", good, 0o644, []string{"0644", "chmod 600"}},
		{"others execute", good, 0o601, []string{"0601", "chmod 600"}},
		{"group write", good, 0o620, []string{"0620", "chmod 600"}},
		{"empty", "", 0o600, []string{"holds no age identity"}},
		{"blank lines", "\n\n\n", 0o600, []string{"holds no age identity"}},
		{"spaces", "  \n", 0o600, []string{"line 1 is not an age identity"}},
		{"comments only", "# created: x\n# public key: " + a.Recipient().String() + "\n", 0o600, []string{"holds no age identity"}},
		{"junk line", a.String() + "\n" + "not-a-key\n", 0o600, []string{"line 2 is not an age identity"}},
		{"broken key", strings.Replace(a.String(), "AGE-SECRET-KEY-1", "AGE-SECRET-KEY-1Q", 1) + "\n", 0o600, []string{"line 1 is not an age identity"}},
		{"public key only", a.Recipient().String() + "\n", 0o600, []string{"line 1 is not an age identity"}},
		{"too large", good + strings.Repeat("#", MaxKeyFileBytes), 0o600, []string{"larger than"}},
	} {
		t.Run(tc.what, func(t *testing.T) {
			p := writeKeyFile(t, tc.content, tc.mode)
			_, err := LoadKeys(p)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range append(tc.want, p) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q: %v", w, err)
				}
			}
			for _, s := range []string{a.String(), b.String(), pq.String(), "not-a-key", "AGE-SECRET-KEY-1Q"} {
				if strings.Contains(err.Error(), s) {
					t.Fatalf("error shows key material: %v", err)
				}
			}
		})
	}

	t.Run("directory", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.Chmod(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadKeys(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("missing", func(t *testing.T) {
		if _, err := LoadKeys(filepath.Join(t.TempDir(), "nope")); err == nil {
			t.Fatal("no error")
		}
	})
	t.Run("symlink to a 0600 file", func(t *testing.T) {
		// Kubernetes mounts a Secret as symlinks to the files; the target's mode is what counts.
		target := writeKeyFile(t, good, 0o600)
		link := filepath.Join(t.TempDir(), "link.key")
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadKeys(link); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(target, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadKeys(link); err == nil || !strings.Contains(err.Error(), "0644") {
			t.Fatalf("got %v", err)
		}
	})
}

// Keys never print identities, whether formatted or logged.
func TestKeysDoNotPrintIdentities(t *testing.T) {
	id := newIdentity(t)
	k := keysOf(t, id)
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("keys", "keys", k)
	out := fmt.Sprintf("%v %+v %#v %s", k, k, k, buf.String())
	if strings.Contains(out, "AGE-SECRET-KEY") || strings.Contains(strings.ToUpper(out), strings.TrimPrefix(id.String(), "AGE-SECRET-KEY-1")) {
		t.Fatalf("identity printed: %s", out)
	}
	if !strings.Contains(buf.String(), id.Recipient().String()) {
		t.Fatalf("log does not show the recipient: %s", buf.String())
	}
}
