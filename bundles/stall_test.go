package bundles

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// stuckAt is a file whose reads of any byte in [from, to) never answer until released: a
// USB stick that stopped. A read that is released scribbles over its whole buffer, as a late DMA would,
// so a test sees it if that buffer is one the caller still holds.
type stuckAt struct {
	io.ReaderAt
	from, to int64
	release  chan struct{}
	stuck    atomic.Int32 // reads blocked now
}

func newStuckAt(ra io.ReaderAt, from, to int64) *stuckAt {
	return &stuckAt{ReaderAt: ra, from: from, to: to, release: make(chan struct{})}
}

func (s *stuckAt) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > s.from && off < s.to {
		s.stuck.Add(1)
		<-s.release
		s.stuck.Add(-1)
		for i := range p {
			p[i] = 0xEE
		}
		return len(p), nil
	}
	return s.ReaderAt.ReadAt(p, off)
}

// within fails the test unless fn returns within d.
func within(t *testing.T, d time.Duration, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); fn() }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s: still blocked after %s", what, d)
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// What goes through the reader is the section, byte for byte, whatever the caller's buffer
// and however it seeks.
func TestStallReaderPassesDataThrough(t *testing.T) {
	data := randomBytes(3<<20 + 17)
	for _, tc := range []struct {
		name     string
		off, n   int64
		bufSizes []int
	}{
		{"empty", 0, 0, []int{1, 4096}},
		{"one byte", 5, 1, []int{1, 4096}},
		{"under a chunk", 100, minStallChunk - 1, []int{1, 100, 32 << 10}},
		{"the whole file", 0, int64(len(data)), []int{7, 32 << 10, 1 << 20, 3 << 20}},
		{"a section", 12345, 2<<20 + 3, []int{4096, 2 << 20}},
	} {
		for _, bs := range tc.bufSizes {
			r := newStallReader(t.Context(), "f", bytes.NewReader(data), tc.off, tc.n, time.Minute)
			var got bytes.Buffer
			if _, err := io.CopyBuffer(onlyWriter{&got}, onlyReader{r}, make([]byte, bs)); err != nil {
				t.Fatalf("%s, %d-byte reads: %v", tc.name, bs, err)
			}
			if !bytes.Equal(got.Bytes(), data[tc.off:tc.off+tc.n]) {
				t.Fatalf("%s, %d-byte reads: %d bytes differ from the file's %d", tc.name, bs, got.Len(), tc.n)
			}
			r.Close()
		}
	}

	// Random seeks and reads agree with io.SectionReader over the same bytes.
	const off, n = 1000, 3 << 20
	rng := mrand.New(mrand.NewPCG(1, 2))
	r := newStallReader(t.Context(), "f", bytes.NewReader(data), off, n, time.Minute)
	defer r.Close()
	want := io.NewSectionReader(bytes.NewReader(data), off, n)
	for i := range 2000 {
		if i%3 == 0 {
			whence := rng.IntN(3)
			delta := rng.Int64N(n/2) - n/8
			if whence == io.SeekEnd {
				delta = -rng.Int64N(n / 4)
			}
			p1, err1 := r.Seek(delta, whence)
			p2, err2 := want.Seek(delta, whence)
			if (err1 == nil) != (err2 == nil) || (err1 == nil && p1 != p2) {
				t.Fatalf("seek %d %d: %d %v, want %d %v", delta, whence, p1, err1, p2, err2)
			}
			if err1 != nil {
				if _, err := r.Seek(0, io.SeekStart); err != nil {
					t.Fatal(err)
				}
				want.Seek(0, io.SeekStart)
			}
			continue
		}
		size := rng.IntN(200 << 10)
		b1, b2 := make([]byte, size), make([]byte, size)
		n1, err1 := io.ReadFull(r, b1)
		n2, err2 := io.ReadFull(want, b2)
		if n1 != n2 || !bytes.Equal(b1[:n1], b2[:n2]) || (err1 == nil) != (err2 == nil) {
			t.Fatalf("read %d: %d bytes %v, want %d bytes %v", size, n1, err1, n2, err2)
		}
	}
}

// onlyReader and onlyWriter hide io.ReaderFrom and io.WriterTo, so the copy uses its buffer.
type onlyReader struct{ io.Reader }
type onlyWriter struct{ io.Writer }

// A read that does not answer fails with ErrStalled after the deadline, naming the file; the
// data before it came through, every later read fails at once, and the abandoned read
// writes nothing into the caller's buffer when it answers at last.
func TestStallReaderStalls(t *testing.T) {
	data := randomBytes(1 << 20)
	stuck := newStuckAt(bytes.NewReader(data), 300<<10, 1<<62)
	r := newStallReader(t.Context(), "/media/usb0/site.tar", stuck, 0, int64(len(data)), 100*time.Millisecond)
	defer r.Close()
	var got []byte
	buf := make([]byte, 1<<20)
	var err error
	within(t, 10*time.Second, "a read of a stick that stopped", func() {
		for err == nil {
			var n int
			n, err = r.Read(buf)
			got = append(got, buf[:n]...)
		}
	})
	var se *StallError
	if !errors.Is(err, ErrStalled) || !errors.As(err, &se) {
		t.Fatalf("err = %v, want ErrStalled", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "/media/usb0/site.tar") || !strings.Contains(msg, "stopped answering") {
		t.Errorf("message %q does not name the file and say it stopped answering", msg)
	}
	if len(got) == 0 || !bytes.Equal(got, data[:len(got)]) {
		t.Errorf("the %d bytes before the stall are not the file's", len(got))
	}
	for i := range buf {
		buf[i] = 0
	}
	within(t, time.Second, "a read after a stall", func() {
		if _, err := r.Read(buf); !errors.Is(err, ErrStalled) {
			t.Errorf("a read after the stall: %v", err)
		}
	})
	select {
	case <-se.Done():
		t.Fatal("Done is closed while the read is still stuck")
	default:
	}
	close(stuck.release)
	within(t, 10*time.Second, "Done after the stuck read answered", func() { <-se.Done() })
	if !bytes.Equal(buf, make([]byte, len(buf))) {
		t.Error("the abandoned read wrote into the caller's buffer")
	}
}

// A read blocked with a long deadline returns when its context is cancelled.
func TestStallReaderHonoursContext(t *testing.T) {
	stuck := newStuckAt(bytes.NewReader(randomBytes(1000)), 0, 1<<62)
	defer close(stuck.release)
	ctx, cancel := context.WithCancel(t.Context())
	r := newStallReader(ctx, "f", stuck, 0, 1000, time.Hour)
	defer r.Close()
	errc := make(chan error, 1)
	go func() {
		_, err := r.Read(make([]byte, 10))
		errc <- err
	}()
	waitFor(t, "the read to block", func() bool { return stuck.stuck.Load() == 1 })
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the read did not return after its context was cancelled")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A call the guard gave up on keeps its path: calls on it or below it fail at once, without
// another goroutine; calls elsewhere run; once it returns, its path is called again.
func TestGuardRemembersAStuckPath(t *testing.T) {
	g := NewGuard(100 * time.Millisecond)
	release := make(chan struct{})
	var calls atomic.Int32
	stuck := func() error { calls.Add(1); <-release; return nil }
	var err error
	within(t, 10*time.Second, "a stuck call", func() { err = g.Do(t.Context(), "readdir", "/media/usb0", stuck) })
	var se *StallError
	if !errors.As(err, &se) || !errors.Is(err, ErrStalled) || se.Stuck != "" || se.Path != "/media/usb0" {
		t.Fatalf("err = %v, want a StallError on /media/usb0", err)
	}
	for _, p := range []string{"/media/usb0", "/media/usb0/", "/media/usb0/site.tar", "/media/usb0/a/b"} {
		err := g.Do(t.Context(), "lstat", p, stuck)
		var again *StallError
		if !errors.As(err, &again) || again.Stuck != "/media/usb0" || again.Done() != se.Done() {
			t.Errorf("%s: %v, want it refused at once as under the stuck /media/usb0", p, err)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("%d calls were made, want 1", n)
	}
	for _, p := range []string{"/media/usb1", "/media/usb00", "/media"} {
		if err := g.Do(t.Context(), "lstat", p, func() error { return nil }); err != nil {
			t.Errorf("%s: %v, want it run", p, err)
		}
	}
	close(release)
	within(t, 10*time.Second, "Done", func() { <-se.Done() })
	if err := g.Do(t.Context(), "readdir", "/media/usb0", func() error { return nil }); err != nil {
		t.Errorf("after the stuck call returned: %v", err)
	}

	// A cancelled context returns at once, with its error, even from a call stuck for good.
	ctx, cancel := context.WithCancel(t.Context())
	hold, started := make(chan struct{}), make(chan struct{})
	defer close(hold)
	g = NewGuard(time.Hour)
	go func() { <-started; cancel() }()
	within(t, 10*time.Second, "a stuck call whose context is cancelled", func() {
		err = g.Do(ctx, "open", "/media/usb0/x", func() error { close(started); <-hold; return nil })
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

// A file that a stuck open opens after all is closed, not leaked.
func TestGuardClosesALateOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	os.WriteFile(path, []byte("x"), 0o644)
	g := NewGuard(50 * time.Millisecond)
	release := make(chan struct{})
	var opened *os.File
	var mu sync.Mutex
	_, _, err := g.openFile(t.Context(), path, func() (*os.File, error) {
		<-release
		f, err := os.Open(path)
		mu.Lock()
		opened = f
		mu.Unlock()
		return f, err
	})
	if !errors.Is(err, ErrStalled) {
		t.Fatalf("err = %v, want ErrStalled", err)
	}
	close(release)
	waitFor(t, "the late open", func() bool {
		mu.Lock()
		defer mu.Unlock()
		if opened == nil {
			return false
		}
		_, err := opened.Stat()
		return errors.Is(err, os.ErrClosed)
	})
}

func TestGuardListsAndStats(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"b", "a", "c"} {
		os.WriteFile(filepath.Join(dir, n), []byte(n), 0o644)
	}
	g := NewGuard(0)
	es, err := g.ReadDir(t.Context(), dir, 0)
	if err != nil || len(es) != 3 || es[0].Name() != "a" || es[2].Name() != "c" {
		t.Fatalf("ReadDir: %v %v", es, err)
	}
	if es, err := g.ReadDir(t.Context(), dir, 2); err != nil || len(es) != 2 {
		t.Fatalf("ReadDir of 2: %v %v", es, err)
	}
	if fi, err := g.Lstat(t.Context(), filepath.Join(dir, "b")); err != nil || fi.Size() != 1 {
		t.Fatalf("Lstat: %v %v", fi, err)
	}
	if _, err := g.Lstat(t.Context(), filepath.Join(dir, "none")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Lstat of nothing: %v", err)
	}
}

// A bundle archive whose blob stops answering halfway: opening it and reading the bundle fail
// with ErrStalled, naming the archive and the entry, within the deadline.
func TestArchiveBlobThatStalls(t *testing.T) {
	store, desc, _ := packed(t)
	path := filepath.Join(t.TempDir(), "b.tar")
	dst, _ := ParseAddress(path)
	if _, err := Copy(t.Context(), memSource{store}, desc, dst, Options{}); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	entries, err := checkArchive(f, fi.Size(), path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Open(t.Context(), store, desc)
	if err != nil {
		t.Fatal(err)
	}
	layer := entries["blobs/sha256/"+b.Manifest.Layers[0].Digest.Encoded()]
	stuck := newStuckAt(f, layer.off+layer.size/2, layer.off+layer.size)
	defer close(stuck.release)
	src, err := newStickSource(t.Context(), archiveFiles{stuck, path, entries, 100 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	within(t, 10*time.Second, "reading a bundle whose layer stalls", func() {
		bb, err := Open(t.Context(), src, desc)
		if err == nil {
			_, err = bb.Layer(t.Context(), src, 0)
		}
		if !errors.Is(err, ErrStalled) || !strings.Contains(err.Error(), path+" (blobs/sha256/"+b.Manifest.Layers[0].Digest.Encoded()+")") {
			t.Errorf("err = %v, want ErrStalled naming the archive and the layer", err)
		}
	})
}

// The archive check refuses PAX sparse files: their bytes in the archive are not their content,
// and a blob is read from the archive as it lies there.
func TestCheckArchiveRefusesSparseFiles(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "oci-layout", Typeflag: tar.TypeReg, Size: 2, Mode: 0o644, Format: tar.FormatPAX})
	tw.Write([]byte("{}"))
	// The writer refuses GNU.sparse records; written as GNU.xparse, then patched.
	tw.WriteHeader(&tar.Header{Name: "blobs/sha256/ab", Typeflag: tar.TypeReg, Size: 5, Mode: 0o644, Format: tar.FormatPAX,
		PAXRecords: map[string]string{"GNU.xparse.major": "0", "GNU.xparse.minor": "1", "GNU.xparse.map": "0,5", "GNU.xparse.size": "5"}})
	tw.Write([]byte("hello"))
	tw.Close()
	b := bytes.ReplaceAll(buf.Bytes(), []byte("GNU.xparse."), []byte("GNU.sparse."))
	path := filepath.Join(t.TempDir(), "sparse.tar")
	os.WriteFile(path, b, 0o644)
	if err := CheckArchive(path); err == nil || !strings.Contains(err.Error(), "sparse") {
		t.Fatalf("err = %v, want a refusal of the sparse entry", err)
	}
}
