package decrypt

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrygitops/ferry/bundles"
)

// fuzzNames are the file names the fuzzer chooses from: one per format. Names are not fuzzed, so
// an error that shows the planted secret can only have taken it from the file's content.
var fuzzNames = []string{"f.yaml", "f.yml", "f.json", "f.env", "f.ini", "f.bin", "f"}

func fuzzName(ext string) uint8 {
	for i, n := range fuzzNames {
		if filepath.Ext(n) == ext {
			return uint8(i)
		}
	}
	return uint8(len(fuzzNames) - 1)
}

// FuzzIsEncryptedAndFile feeds IsEncrypted and Keys.File files of every format: well-formed
// encrypted ones (for the key the fuzzer decrypts with), tampered ones, and the hostile seeds in
// testdata/seeds, which put the planted secret where sops's own errors would quote it. Neither
// function may panic, and no error may show the secret or key material.
func FuzzIsEncryptedAndFile(f *testing.F) {
	id := newIdentity(f)
	k := keysOf(f, id)
	for _, tc := range []struct {
		name  string
		plain []byte
	}{
		{"f.yaml", []byte(plainYAML)},
		{"f.json", []byte(plainJSON)},
		{"f.env", []byte(plainEnv)},
		{"f.bin", plainBinary()},
	} {
		enc := sealTo(f, tc.name, tc.plain, id)
		f.Add(fuzzName(filepath.Ext(tc.name)), enc)
		f.Add(fuzzName(filepath.Ext(tc.name)), []byte(strings.Replace(string(enc), "ENC[AES256_GCM,data:", "ENC[AES256_GCM,data:"+secret, 1)))
		f.Add(fuzzName(filepath.Ext(tc.name)), tc.plain)
	}
	seeds, err := filepath.Glob(filepath.Join("testdata", "seeds", "*"))
	if err != nil || len(seeds) == 0 {
		f.Fatalf("no seeds in testdata/seeds: %v", err)
	}
	for _, p := range seeds {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(fuzzName(filepath.Ext(p)), data)
	}
	keyText := id.String()

	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		name := fuzzNames[int(which)%len(fuzzNames)]
		encrypted := IsEncrypted(name, data)
		plain, err := k.File(name, data)
		if err != nil {
			checkErr(t, err, name, keyText)
		}
		out, n, ferr := k.Files(bundles.Files{{Name: name, Mode: 0o644, Data: data}})
		switch {
		case !encrypted:
			// A file IsEncrypted does not report passes through Files untouched.
			if ferr != nil || n != 0 || !bytes.Equal(out[0].Data, data) {
				t.Fatalf("Files changed a file IsEncrypted does not report (%d, %v)", n, ferr)
			}
		case err != nil:
			if ferr == nil {
				t.Fatal("Files decrypted what File refused")
			}
			checkErr(t, ferr, name, keyText)
		default:
			if ferr != nil || n != 1 || !bytes.Equal(out[0].Data, plain) {
				t.Fatalf("Files and File disagree (%d, %v)", n, ferr)
			}
		}
	})
}

func checkErr(t *testing.T, err error, name, keyText string) {
	t.Helper()
	msg := err.Error()
	if strings.Contains(msg, secret) || strings.Contains(msg, keyText) || strings.Contains(msg, "AGE-SECRET-KEY") {
		t.Fatalf("error shows a secret: %s", msg)
	}
	if !strings.Contains(msg, name) {
		t.Fatalf("error does not name the file: %s", msg)
	}
}
