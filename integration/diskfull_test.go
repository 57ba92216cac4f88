package integration

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/memory"

	"github.com/ferrygitops/ferry/store"
)

// TestDiskFullMidCopyLeavesTheStoreAsItWas fills a real (tmpfs) disk during an admission: the
// space check passes on the declared sizes, the copy then runs out of pages (each blob rounds
// up to whole pages), and the store must end exactly as it began, with ErrNoSpace.
func TestDiskFullMidCopyLeavesTheStoreAsItWas(t *testing.T) {
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("this test needs to mount a small tmpfs (root, as the testbed machine is): %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })

	st, err := store.Open(dir, store.Options{SpaceMargin: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	src := memory.New()
	push := func(b []byte) ocispec.Descriptor {
		d := content.NewDescriptorFromBytes("application/octet-stream", b)
		src.Push(t.Context(), d, bytes.NewReader(b))
		return d
	}
	manifest := func(rev uint64, blobs []ocispec.Descriptor) store.Admission {
		b := []byte(fmt.Sprintf(`{"rev":%d}`, rev))
		m := content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, b)
		src.Push(t.Context(), m, bytes.NewReader(b))
		return store.Admission{Name: "site", Revision: rev, Version: "1.0.0", Manifest: m, Blobs: blobs, Source: "disk-full test"}
	}
	// A first revision that fits.
	small := make([]byte, 10_000)
	rand.Read(small)
	if _, err := st.Admit(t.Context(), src, manifest(1, []ocispec.Descriptor{push(small)})); err != nil {
		t.Fatal(err)
	}
	before := storeFiles(t, dir)

	// Fill the disk until what is left just covers the next admission's declared size.
	var st2 syscall.Statfs_t
	syscall.Statfs(dir, &st2)
	var blobs []ocispec.Descriptor
	var need int64
	for i := 0; i < 16; i++ {
		b := make([]byte, 4096*4+1) // five pages each, for four pages and a byte declared
		rand.Read(b)
		d := push(b)
		blobs = append(blobs, d)
		need += d.Size
	}
	free := int64(st2.Bavail) * int64(st2.Bsize)
	filler := filepath.Join(dir, "filler")
	if err := os.WriteFile(filler, make([]byte, free-need-64<<10), 0o600); err != nil && !errors.Is(err, syscall.ENOSPC) {
		t.Fatal(err)
	}
	before["filler"] = true

	_, err = st.Admit(t.Context(), src, manifest(2, blobs))
	if !errors.Is(err, store.ErrNoSpace) {
		t.Fatalf("err = %v, want ErrNoSpace", err)
	}
	// The point is the copy running out, not the check before it.
	if !strings.Contains(err.Error(), "no space left on device") {
		t.Fatalf("err = %v: the space check refused it before copying; the test setup is off", err)
	}
	if after := storeFiles(t, dir); fmt.Sprint(keys(after)) != fmt.Sprint(keys(before)) {
		t.Fatalf("the store changed:\nbefore %v\nafter  %v", keys(before), keys(after))
	}
	if b, _ := st.GetBundle("site"); b.Newest != 1 {
		t.Fatalf("bundle record %+v", b)
	}
	if err := st.Check(); err != nil {
		t.Fatal(err)
	}
	// Once there is room again, the same admission succeeds.
	os.Remove(filler)
	if _, err := st.Admit(t.Context(), src, manifest(2, blobs)); err != nil {
		t.Fatalf("after freeing space: %v", err)
	}
}

func storeFiles(t *testing.T, dir string) map[string]bool {
	t.Helper()
	files := map[string]bool{}
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && !strings.HasSuffix(p, "ferry.db") && !strings.HasSuffix(p, "index.json") {
			rel, _ := filepath.Rel(dir, p)
			files[rel] = true
		}
		return nil
	})
	return files
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
