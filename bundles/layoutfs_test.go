package bundles

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// layoutDir copies the packed test bundle into an OCI layout directory and returns it with
// the path of its layer blob.
func layoutDir(t *testing.T) (dir, layerBlob string) {
	t.Helper()
	store, desc, _ := packed(t)
	dir = filepath.Join(t.TempDir(), "layout")
	os.MkdirAll(dir, 0o755)
	dst, _ := ParseAddress(dir)
	if _, err := Copy(t.Context(), memSource{store}, desc, dst, Options{}); err != nil {
		t.Fatal(err)
	}
	b, err := Open(t.Context(), store, desc)
	if err != nil {
		t.Fatal(err)
	}
	return dir, filepath.Join(dir, "blobs", "sha256", b.Manifest.Layers[0].Digest.Encoded())
}

// readLayout opens the layout as a node does and reads every blob of the bundle, within 10s.
func readLayout(t *testing.T, dir string) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		addr, _ := ParseAddress(dir)
		src, desc, err := OpenSource(t.Context(), addr, Options{})
		if err != nil {
			done <- err
			return
		}
		defer src.Close()
		b, err := Open(t.Context(), src, desc)
		if err == nil {
			err = b.Check(t.Context(), src)
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("reading the layout blocked")
		return nil
	}
}

// A layout on a stick is data: FIFOs, devices, symlinks (even inside the layout) and hard
// links are refused, by name, and nothing blocks.
func TestLayoutRefusesSpecialFiles(t *testing.T) {
	if dir, _ := layoutDir(t); readLayout(t, dir) != nil {
		t.Fatal("the genuine layout does not read")
	}
	for name, tc := range map[string]struct {
		damage func(t *testing.T, dir, blob string)
		want   string
	}{
		"fifo blob": {func(t *testing.T, dir, blob string) {
			os.Remove(blob)
			if err := unix.Mkfifo(blob, 0o644); err != nil {
				t.Fatal(err)
			}
		}, "a FIFO"},
		"symlinked blob to /etc/passwd": {func(t *testing.T, dir, blob string) {
			os.Remove(blob)
			os.Symlink("/etc/passwd", blob)
		}, "a symlink"},
		"symlinked index.json inside the layout": {func(t *testing.T, dir, blob string) {
			os.Rename(filepath.Join(dir, "index.json"), filepath.Join(dir, "real-index.json"))
			os.Symlink("real-index.json", filepath.Join(dir, "index.json"))
		}, "a symlink"},
		"symlinked blobs directory": {func(t *testing.T, dir, blob string) {
			os.Rename(filepath.Join(dir, "blobs"), filepath.Join(dir, "elsewhere"))
			os.Symlink("elsewhere", filepath.Join(dir, "blobs"))
		}, "a symlink"},
		"hard-linked blob": {func(t *testing.T, dir, blob string) {
			os.Link(blob, filepath.Join(t.TempDir(), "other-name"))
		}, "a hard link"},
		"directory for a blob": {func(t *testing.T, dir, blob string) {
			os.Remove(blob)
			os.Mkdir(blob, 0o755)
		}, "directory"},
	} {
		t.Run(name, func(t *testing.T) {
			dir, blob := layoutDir(t)
			tc.damage(t, dir, blob)
			err := readLayout(t, dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to say %q", err, tc.want)
			}
		})
	}
}

// A bundle archive that is a FIFO (or a symlink) is refused at once, never waited on.
func TestArchiveThatIsNotAFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "stick.tar")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- CheckArchive(fifo) }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrNotRegular) || !strings.Contains(err.Error(), "a FIFO") {
			t.Fatalf("FIFO archive: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("CheckArchive blocked on a FIFO")
	}
	link := filepath.Join(dir, "link.tar")
	os.Symlink("/etc/passwd", link)
	if err := CheckArchive(link); !errors.Is(err, ErrUnsafePath) {
		t.Fatalf("symlink archive: %v", err)
	}
}

// An archive is read from the file that was checked: swapping the path on the stick for a
// FIFO after it was opened changes nothing and blocks nothing.
func TestArchiveReadFromTheCheckedFile(t *testing.T) {
	store, desc, _ := packed(t)
	path := filepath.Join(t.TempDir(), "b.tar")
	dst, _ := ParseAddress(path)
	if _, err := Copy(t.Context(), memSource{store}, desc, dst, Options{}); err != nil {
		t.Fatal(err)
	}
	src, got, err := OpenSource(t.Context(), dst, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	os.Remove(path)
	if err := unix.Mkfifo(path, 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		b, err := Open(t.Context(), src, got)
		if err == nil {
			err = b.Check(t.Context(), src)
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("reading the opened archive after its path was swapped: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the source reopened the path and blocked on the FIFO")
	}
}
