package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The socket's directory is created 0700 or refused as found, so no other user can swap the
// socket the root CLI talks to.
func TestSocketDirectory(t *testing.T) {
	base := t.TempDir()
	fresh := filepath.Join(base, "run", "ferry")
	ln, err := listenUnix(filepath.Join(fresh, "ferry.sock"))
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if fi, _ := os.Stat(fresh); fi.Mode().Perm() != 0o700 {
		t.Errorf("created %04o, want 0700", fi.Mode().Perm())
	}
	wide := filepath.Join(base, "wide")
	os.Mkdir(wide, 0o777)
	os.Chmod(wide, 0o777)
	other := filepath.Join(base, "other")
	os.Mkdir(other, 0o700)
	otherErr := os.Chown(other, 65534, 65534) // needs root, as the daemon runs
	link := filepath.Join(base, "link")
	os.Symlink(fresh, link)
	cases := map[string]string{wide: "has mode 0777", link: "not a directory"}
	if otherErr == nil {
		cases[other] = "owned by uid 65534"
	} else if os.Geteuid() == 0 {
		t.Fatalf("chown as root: %v", otherErr)
	}
	for dir, want := range cases {
		_, err := listenUnix(filepath.Join(dir, "ferry.sock"))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", dir, err, want)
		}
		if _, err := os.Stat(filepath.Join(dir, "ferry.sock")); err == nil {
			t.Errorf("%s: a socket was created in it", dir)
		}
	}
}
