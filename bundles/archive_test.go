package bundles

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestArchiveErrorsSayWhatIsWrong: what a technician sees for a file on a stick that is not a
// whole bundle archive names the file and says what it is, not a lower layer's failure.
func TestArchiveErrorsSayWhatIsWrong(t *testing.T) {
	tarOf := func(entries ...string) []byte {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, e := range entries {
			data := []byte(strings.Repeat("x", 3000))
			tw.WriteHeader(&tar.Header{Name: e, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg})
			tw.Write(data)
		}
		tw.Close()
		return buf.Bytes()
	}
	whole := tarOf("oci-layout", "blobs/sha256/aa", "index.json")
	for name, tc := range map[string]struct {
		data []byte
		want string
	}{
		"a text file":             {[]byte(strings.Repeat("notes about the site\n", 40)), "not a tar archive"},
		"cut inside an entry":     {whole[:1024+1500], "truncated: the archive ends inside an entry"},
		"cut between two entries": {tarOf("oci-layout", "blobs/sha256/aa"), "no index.json entry"},
		"without its oci-layout":  {tarOf("index.json"), "no oci-layout entry"},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "site.tar")
			os.WriteFile(path, tc.data, 0o644)
			f, _ := os.Open(path)
			defer f.Close()
			_, err := checkArchive(f, int64(len(tc.data)), path)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("err = %v, want %q naming the file", err, tc.want)
			}
		})
	}
}
