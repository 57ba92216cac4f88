package bundles

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// syntheticTree writes n Kubernetes-like YAML files of about 2 KiB each: the shape of a
// large kustomize component (many small manifests).
func syntheticTree(b *testing.B, n int) string {
	b.Helper()
	dir := b.TempDir()
	for i := range n {
		sub := filepath.Join(dir, fmt.Sprintf("app-%02d", i%20))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			b.Fatal(err)
		}
		var buf bytes.Buffer
		fmt.Fprintf(&buf, "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app-%d\n  labels: {team: edge, tier: backend}\nspec:\n  replicas: 2\n  template:\n    spec:\n      containers:\n", i)
		for c := range 12 {
			fmt.Fprintf(&buf, "      - name: c%d\n        image: registry.local/app-%d:%d.0.%d\n        env: [{name: SITE, value: north-%d}]\n", c, i, c, i, c)
		}
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("deploy-%d.yaml", i)), buf.Bytes(), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	return dir
}

// BenchmarkPackDir packs a component the way `ferry bundle build` does and, in the same
// iteration, the same tree with GNU tar and gzip -9 set up for reproducible output (the
// peer). It reports both times, both sizes and the ratio, so a noisy machine moves both.
func BenchmarkPackDir(b *testing.B) {
	if _, err := exec.LookPath("tar"); err != nil {
		b.Fatal("GNU tar is the peer of this benchmark: ", err)
	}
	trees := map[string]func(*testing.B) string{
		"example-web": func(*testing.B) string { return "examples/edge-site/apps/web" },
		"500-files":   func(b *testing.B) string { return syntheticTree(b, 500) },
	}
	for _, name := range []string{"example-web", "500-files"} {
		b.Run(name, func(b *testing.B) {
			dir := trees[name](b)
			var ferryT, peerT time.Duration
			var ferrySize, peerSize int
			for b.Loop() {
				start := time.Now()
				var buf bytes.Buffer
				if err := PackDir(dir, &buf); err != nil {
					b.Fatal(err)
				}
				ferryT += time.Since(start)
				ferrySize = buf.Len()

				start = time.Now()
				cmd := exec.Command("sh", "-c", "tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - . | gzip -9n")
				cmd.Dir = dir
				out, err := cmd.Output()
				if err != nil {
					b.Fatal(err)
				}
				peerT += time.Since(start)
				peerSize = len(out)
			}
			n := float64(b.N)
			b.ReportMetric(float64(ferryT.Microseconds())/n, "ferry-µs/op")
			b.ReportMetric(float64(peerT.Microseconds())/n, "tar-gzip-µs/op")
			b.ReportMetric(float64(ferryT)/float64(peerT), "ferry/tar-gzip")
			b.ReportMetric(float64(ferrySize), "ferry-bytes")
			b.ReportMetric(float64(peerSize), "tar-gzip-bytes")
		})
	}
}

// BenchmarkStallReader reads one file of FERRY_BENCH_MIB MiB (default 256) in $TMPDIR, in the
// page cache, once through the stall reader a stick's blobs are read with, and in the same
// iteration once with plain read(2) calls on the *os.File (the peer), each into a 1 MiB buffer
// as the store copies a blob: the cost of the deadline is the difference, not hidden by a slow
// disk (a USB stick reads at 30–400 MB/s).
func BenchmarkStallReader(b *testing.B) {
	mib := 256
	if v, err := strconv.Atoi(os.Getenv("FERRY_BENCH_MIB")); err == nil && v > 0 {
		mib = v
	}
	path := filepath.Join(b.TempDir(), "blob")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	rand.Read(chunk)
	for range mib {
		if _, err := f.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	f.Close()
	size := int64(mib) << 20
	read := func(r io.Reader) time.Duration {
		start := time.Now()
		n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{r}, make([]byte, 1<<20))
		if err != nil || n != size {
			b.Fatalf("read %d bytes: %v", n, err)
		}
		return time.Since(start)
	}
	var stallT, plainT time.Duration
	for i := 0; b.Loop(); i++ {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		r := newStallReader(b.Context(), path, f, 0, size, time.Minute)
		if i%2 == 0 { // each goes first every other time
			plainT += read(f)
			stallT += read(r)
		} else {
			stallT += read(r)
			f.Seek(0, io.SeekStart)
			plainT += read(f)
		}
		r.Close()
		f.Close()
	}
	mbps := func(d time.Duration) float64 { return float64(size) * float64(b.N) / 1e6 / d.Seconds() }
	b.ReportMetric(mbps(stallT), "stall-MB/s")
	b.ReportMetric(mbps(plainT), "plain-MB/s")
	b.ReportMetric(float64(stallT)/float64(plainT), "stall/plain-time")
}
