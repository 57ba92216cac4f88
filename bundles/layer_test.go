package bundles

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrygitops/ferry/bundler/bundlertest"
)

func writeTree(t *testing.T, files map[string]string) string {
	return bundlertest.WriteTree(t, files)
}

func pack(t *testing.T, dir string) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := PackDir(dir, &buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestPackDirIsReproducibleAndRoundTrips(t *testing.T) {
	files := map[string]string{
		"kustomization.yaml":  "resources: [deploy.yaml]\n",
		"deploy.yaml":         "kind: Deployment\n",
		"secrets/db.enc.yaml": "sops: {}\n",
	}
	a := writeTree(t, files)
	b := writeTree(t, files)
	// Different mtimes and permissions on the second tree must not change the bytes.
	if err := os.Chtimes(filepath.Join(b, "deploy.yaml"), epoch.AddDate(30, 0, 0), epoch.AddDate(30, 0, 0)); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(b, "deploy.yaml"), 0o600); err != nil {
		t.Fatal(err)
	}
	la, lb := pack(t, a), pack(t, b)
	if !bytes.Equal(la, lb) {
		t.Fatal("same tree packed twice gave different bytes")
	}
	got, err := ReadLayer(bytes.NewReader(la))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(files) {
		t.Fatalf("read %d files, packed %d", len(got), len(files))
	}
	for name, data := range files {
		f, ok := got.Get(name)
		if !ok || string(f.Data) != data || f.Mode != 0o644 {
			t.Errorf("%s: got %+v", name, f)
		}
	}
	// And the content changes the bytes.
	if err := os.WriteFile(filepath.Join(b, "deploy.yaml"), []byte("kind: StatefulSet\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(la, pack(t, b)) {
		t.Fatal("changed content packed to the same bytes")
	}
}

func TestPackDirRefusesSymlinks(t *testing.T) {
	dir := writeTree(t, map[string]string{"a.yaml": "x"})
	if err := os.Symlink("/etc/passwd", filepath.Join(dir, "passwd")); err != nil {
		t.Fatal(err)
	}
	err := PackDir(dir, &bytes.Buffer{})
	if !errors.Is(err, ErrUnsafePath) || !strings.Contains(err.Error(), "passwd") {
		t.Fatalf("err = %v, want ErrUnsafePath naming the link", err)
	}
}

type entry struct {
	name     string
	typeflag byte
	data     string
	size     int64 // -1: len(data)
}

func rawLayer(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		size := e.size
		if size < 0 {
			size = int64(len(e.data))
		}
		hdr := &tar.Header{Name: e.name, Typeflag: e.typeflag, Size: size, Mode: 0o644, Linkname: "target"}
		if e.typeflag != tar.TypeReg {
			hdr.Size = 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if e.typeflag == tar.TypeReg {
			if _, err := tw.Write([]byte(e.data)); err != nil {
				t.Fatal(err)
			}
		}
	}
	tw.Close()
	gz.Close()
	return buf.Bytes()
}

func TestReadLayerRefusals(t *testing.T) {
	reg := func(name string) entry { return entry{name: name, typeflag: tar.TypeReg, data: "x", size: -1} }
	tests := []struct {
		name    string
		layer   []byte
		wantErr string
	}{
		{"dotdot", rawLayer(t, reg("../escape.yaml")), "unsafe path"},
		{"nested dotdot", rawLayer(t, reg("a/../../escape.yaml")), "unsafe path"},
		{"absolute", rawLayer(t, reg("/etc/cron.d/x")), "absolute"},
		{"backslash", rawLayer(t, reg(`..\x`)), "backslash"},
		{"duplicate", rawLayer(t, reg("a.yaml"), reg("a.yaml")), "duplicate"},
		{"symlink", rawLayer(t, entry{name: "link", typeflag: tar.TypeSymlink}), "not allowed"},
		{"hardlink", rawLayer(t, entry{name: "link", typeflag: tar.TypeLink}), "not allowed"},
		{"device", rawLayer(t, entry{name: "dev", typeflag: tar.TypeChar}), "not allowed"},
		{"file too large", rawLayer(t, entry{name: "big", typeflag: tar.TypeReg, data: strings.Repeat("a", MaxFileBytes+1), size: -1}), "limit"},
		{"not gzip", []byte("plain text"), "not gzip"},
		{"truncated", rawLayer(t, reg("a.yaml"))[:30], "layer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files, err := ReadLayer(bytes.NewReader(tt.layer))
			if err == nil {
				t.Fatalf("accepted, got %d files", len(files))
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.wantErr)
			}
			if files != nil {
				t.Fatal("refusal returned files")
			}
		})
	}
}

func TestFilesWriteToStaysInside(t *testing.T) {
	dir := t.TempDir()
	err := Files{{Name: "../outside", Mode: 0o644, Data: []byte("x")}}.WriteTo(dir)
	if !errors.Is(err, ErrUnsafePath) {
		t.Fatalf("err = %v, want ErrUnsafePath", err)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "outside")); !os.IsNotExist(err) {
		t.Fatal("file written outside the directory")
	}
	if err := (Files{{Name: "a/b.yaml", Mode: 0o644, Data: []byte("ok")}}).WriteTo(dir); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "a", "b.yaml")); err != nil || string(b) != "ok" {
		t.Fatalf("read back %q, %v", b, err)
	}
}

func FuzzReadLayer(f *testing.F) {
	f.Add(rawLayer(f, entry{name: "a.yaml", typeflag: tar.TypeReg, data: "kind: x", size: -1}))
	f.Add(rawLayer(f, entry{name: "../a", typeflag: tar.TypeReg, data: "x", size: -1}))
	f.Add([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255})
	f.Fuzz(func(t *testing.T, b []byte) {
		files, err := ReadLayer(bytes.NewReader(b))
		if err != nil {
			return
		}
		var total int
		for i, file := range files {
			if _, err := cleanEntryName(file.Name); err != nil {
				t.Fatalf("accepted unsafe name %q", file.Name)
			}
			if i > 0 && files[i-1].Name >= file.Name {
				t.Fatalf("names not sorted and unique: %q, %q", files[i-1].Name, file.Name)
			}
			total += len(file.Data)
		}
		if total > MaxLayerBytes {
			t.Fatalf("accepted %d bytes", total)
		}
	})
}

func TestReadLayerRefusesConcatenatedGzip(t *testing.T) {
	first := rawLayer(t, entry{name: "a.yaml", typeflag: tar.TypeReg, data: "a", size: -1})
	second := rawLayer(t, entry{name: "evil.yaml", typeflag: tar.TypeReg, data: "b", size: -1})
	_, err := ReadLayer(bytes.NewReader(append(bytes.Clone(first), second...)))
	if err == nil || !strings.Contains(err.Error(), "after the gzip stream") {
		t.Fatalf("err = %v, want concatenated members refused", err)
	}
	if _, err := ReadLayer(bytes.NewReader(first)); err != nil {
		t.Fatalf("control: %v", err)
	}
}

func TestReadLayerCapsAGzipBomb(t *testing.T) {
	// 100 MiB of zeros in one tar entry compress to about 100 KiB. The declared size is
	// refused before any of it is expanded.
	var buf bytes.Buffer
	gz, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	tw := tar.NewWriter(gz)
	size := int64(100 << 20)
	tw.WriteHeader(&tar.Header{Name: "bomb", Typeflag: tar.TypeReg, Size: size, Mode: 0o644})
	zeros := make([]byte, 1<<20)
	for written := int64(0); written < size; written += int64(len(zeros)) {
		tw.Write(zeros)
	}
	tw.Close()
	gz.Close()
	if buf.Len() > 2<<20 {
		t.Fatalf("bomb is %d bytes compressed; test setup wrong", buf.Len())
	}
	_, err := ReadLayer(bytes.NewReader(buf.Bytes()))
	if err == nil || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("err = %v, want the expanded size capped", err)
	}
}

func TestReadLayerRefusesDataAfterTheArchive(t *testing.T) {
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	tw.WriteHeader(&tar.Header{Name: "a.yaml", Typeflag: tar.TypeReg, Size: 1, Mode: 0o644})
	tw.Write([]byte("a"))
	tw.Close()
	for name, tail := range map[string][]byte{"zero padding": make([]byte, 4096), "hidden payload": []byte("HIDDEN PAYLOAD")} {
		var gzBuf bytes.Buffer
		gz := gzip.NewWriter(&gzBuf)
		gz.Write(tarBuf.Bytes())
		gz.Write(tail)
		gz.Close()
		_, err := ReadLayer(bytes.NewReader(gzBuf.Bytes()))
		if want := name == "zero padding"; want != (err == nil) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}
