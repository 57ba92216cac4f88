package decrypt

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/getsops/sops/v3"
	sopsdecrypt "github.com/getsops/sops/v3/decrypt"
	"github.com/getsops/sops/v3/keys"
	"github.com/getsops/sops/v3/pgp"

	"github.com/ferrygitops/ferry/bundles"
)

// noLeak fails the test if err shows a plaintext value or key material.
func noLeak(t *testing.T, err error, more ...string) {
	t.Helper()
	msg := err.Error()
	for _, s := range append([]string{secret, "AGE-SECRET-KEY"}, more...) {
		if strings.Contains(msg, s) {
			t.Fatalf("error shows %q: %s", s, msg)
		}
	}
}

func TestFileRoundTrip(t *testing.T) {
	id := newIdentity(t)
	k := keysOf(t, id)
	for _, tc := range []struct{ name, plain string }{
		{"apps/web/db.sops.yaml", plainYAML},
		{"db.yml", plainYAML},
		{"config.json", plainJSON},
		{"app.env", plainEnv},
		{"tls.key", string(plainBinary())},
		{"no-extension", "just text " + secret},
		{"upper.YAML", "sops reads this as binary: case-sensitive suffixes " + secret},
	} {
		t.Run(tc.name, func(t *testing.T) {
			enc := sealTo(t, tc.name, []byte(tc.plain), id)
			if !IsEncrypted(tc.name, enc) {
				t.Fatalf("IsEncrypted false on a sops file:\n%s", enc)
			}
			if IsEncrypted(tc.name, []byte(tc.plain)) {
				t.Fatal("IsEncrypted true on the plaintext")
			}
			got, err := k.File(tc.name, enc)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, []byte(tc.plain)) {
				t.Fatalf("round trip changed the file:\n got %q\nwant %q", got, tc.plain)
			}
		})
	}
}

// A node with several identities opens a file encrypted to any one of them, and a file
// encrypted to several recipients opens with any one of their identities.
func TestFileSeveralIdentitiesAndRecipients(t *testing.T) {
	a, b, c := newIdentity(t), newIdentity(t), newIdentity(t)
	enc := sealTo(t, "s.yaml", []byte(plainYAML), b, c)
	for name, k := range map[string]*Keys{"node holds a,c": keysOf(t, a, c), "node holds b": keysOf(t, b)} {
		if _, err := k.File("s.yaml", enc); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestFilePostQuantumIdentity(t *testing.T) {
	id, err := age.GenerateHybridIdentity()
	if err != nil {
		t.Fatal(err)
	}
	enc := seal(t, "pq.json", []byte(plainJSON), sealOptions{groups: [][]string{{id.Recipient().String()}}})
	got, err := keysOf(t, id).File("pq.json", enc)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != plainJSON {
		t.Fatalf("got %q", got)
	}
}

// encValue matches an encrypted value's ciphertext; group 1 is its data.
var encValue = regexp.MustCompile(`ENC\[AES256_GCM,data:([^,]+),iv:[^,]+,tag:[^,]+,type:[a-z]+\]`)

// flipData changes one character of the data of the i-th encrypted value.
func flipData(t *testing.T, enc []byte, i int) []byte {
	t.Helper()
	all := encValue.FindAllSubmatchIndex(enc, -1)
	if i < 0 {
		i += len(all)
	}
	if i >= len(all) || i < 0 {
		t.Fatalf("no encrypted value %d in\n%s", i, enc)
	}
	out := bytes.Clone(enc)
	p := all[i][2]
	if out[p] == 'A' {
		out[p] = 'B'
	} else {
		out[p] = 'A'
	}
	return out
}

// Every alteration of an encrypted file after sops wrote it is refused, with ErrIntegrity and
// the file named, and without the plaintext in the error.
func TestFileTampered(t *testing.T) {
	id := newIdentity(t)
	k := keysOf(t, id)
	const name = "apps/web/db.sops.yaml"
	enc := sealTo(t, name, []byte(plainYAML), id)
	if _, err := k.File(name, enc); err != nil {
		t.Fatalf("untampered file: %v", err)
	}
	macLine := regexp.MustCompile(`(?m)^    mac: (ENC\[[^\]]+\])$`)
	lastmod := regexp.MustCompile(`(?m)^    lastmodified: "?([0-9TZ:-]+)"?$`)
	m := macLine.FindSubmatch(enc)
	if m == nil || lastmod.Find(enc) == nil {
		t.Fatalf("fixture without mac or lastmodified:\n%s", enc)
	}
	other := sealTo(t, name, []byte(plainYAML), id) // same content, another data key

	cases := map[string][]byte{
		"value ciphertext":  flipData(t, enc, 0),
		"MAC ciphertext":    flipData(t, enc, -1), // the MAC is the last ENC[] in the file
		"MAC from another":  macLine.ReplaceAll(enc, macLine.FindSubmatch(other)[0]),
		"MAC removed":       macLine.ReplaceAll(enc, []byte(`    mac: ""`)),
		"lastmodified":      lastmod.ReplaceAll(enc, []byte(`    lastmodified: "2001-02-03T04:05:06Z"`)),
		"unencrypted value": bytes.Replace(enc, []byte("note_unencrypted: visible"), []byte("note_unencrypted: changed"), 1),
		"value removed":     regexp.MustCompile(`(?m)^    port: .*\n`).ReplaceAll(enc, nil),
		"value moved": bytes.Replace(enc, []byte("    password: ENC"),
			[]byte("    passw0rd: ENC"), 1), // the key path is the value's additional data
		"plaintext put back": regexp.MustCompile(`(?m)^    password: .*$`).ReplaceAll(enc, []byte("    password: "+secret)),
	}
	for what, data := range cases {
		t.Run(what, func(t *testing.T) {
			if bytes.Equal(data, enc) {
				t.Fatal("the test did not change the file")
			}
			_, err := k.File(name, data)
			if !errors.Is(err, ErrIntegrity) {
				t.Fatalf("got %v, want ErrIntegrity", err)
			}
			if !strings.Contains(err.Error(), name) {
				t.Fatalf("error does not name the file: %v", err)
			}
			noLeak(t, err, string(m[1]))
		})
	}
}

// The stored MAC is compared with the computed one, not merely decrypted: a file whose MAC
// decrypts but is wrong (what sops writes only if its own tree walk differs) is refused, and so
// is an empty MAC.
func TestFileMACIsCompared(t *testing.T) {
	id := newIdentity(t)
	k := keysOf(t, id)
	for what, mac := range map[string]func(string) string{
		"wrong MAC":   func(string) string { return strings.Repeat("0", 128) },
		"lower case":  strings.ToLower,
		"empty MAC":   func(string) string { return "" },
		"MAC prefix":  func(m string) string { return m[:64] },
		"MAC + extra": func(m string) string { return m + "0" },
	} {
		t.Run(what, func(t *testing.T) {
			enc := seal(t, "s.json", []byte(plainJSON), sealOptions{groups: [][]string{{id.Recipient().String()}}, mac: mac})
			_, err := k.File("s.json", enc)
			if !errors.Is(err, ErrIntegrity) {
				t.Fatalf("got %v, want ErrIntegrity", err)
			}
			noLeak(t, err)
		})
	}
}

func TestFileWrongKey(t *testing.T) {
	right, wrong := newIdentity(t), newIdentity(t)
	for _, name := range []string{"apps/db.sops.yaml", "c.json", "a.env", "blob.bin"} {
		t.Run(name, func(t *testing.T) {
			plain := map[string]string{".yaml": plainYAML, ".json": plainJSON, ".env": plainEnv, ".bin": secret}[filepath.Ext(name)]
			enc := sealTo(t, name, []byte(plain), right)
			_, err := keysOf(t, wrong).File(name, enc)
			if !errors.Is(err, ErrNoMatchingKey) {
				t.Fatalf("got %v, want ErrNoMatchingKey", err)
			}
			msg := err.Error()
			for _, want := range []string{name, right.Recipient().String(), wrong.Recipient().String()} {
				if !strings.Contains(msg, want) {
					t.Errorf("error lacks %q: %s", want, msg)
				}
			}
			noLeak(t, err, right.String(), wrong.String())
		})
	}
}

// The test that the node's identities are the only keys: the right key sits everywhere sops
// looks for one (SOPS_AGE_KEY_FILE, SOPS_AGE_KEY, SOPS_AGE_KEY_CMD, the user config directory),
// the Keys hold another, and decryption must fail. The same environment then lets sops's own
// decrypt package open the file, which proves the keys were really there to be found.
func TestKeysFromEnvironmentAndHomeAreNotUsed(t *testing.T) {
	right, wrong := newIdentity(t), newIdentity(t)
	enc := sealTo(t, "db.yaml", []byte(plainYAML), right)

	home := t.TempDir()
	keyText := "# created: test\n" + right.String() + "\n"
	keyFile := filepath.Join(t.TempDir(), "keys.txt")
	for _, p := range []string{
		keyFile,
		filepath.Join(home, ".config", "sops", "age", "keys.txt"),
		filepath.Join(home, "xdg", "sops", "age", "keys.txt"),
	} {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(keyText), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	marker := filepath.Join(t.TempDir(), "key-command-ran")
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, "xdg"))
	t.Setenv("SOPS_AGE_KEY_FILE", keyFile)
	t.Setenv("SOPS_AGE_KEY", right.String())
	t.Setenv("SOPS_AGE_KEY_CMD", "sh -c 'touch "+marker+"; cat "+keyFile+"'")

	_, err := keysOf(t, wrong).File("db.yaml", enc)
	if !errors.Is(err, ErrNoMatchingKey) {
		t.Fatalf("got %v, want ErrNoMatchingKey: a key from the environment or home was used", err)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("SOPS_AGE_KEY_CMD was run")
	}
	var nilKeys *Keys
	if _, err := nilKeys.File("db.yaml", enc); !errors.Is(err, ErrNoKey) {
		t.Fatalf("nil Keys: got %v, want ErrNoKey", err)
	}

	// Control: sops's own API does read these places, so the test above can fail.
	if _, err := sopsdecrypt.Data(enc, "yaml"); err != nil {
		t.Fatalf("control: sops/decrypt did not find the planted key (%v); the test proves nothing", err)
	}
}

func TestFileShamir(t *testing.T) {
	a, b, c := newIdentity(t), newIdentity(t), newIdentity(t)
	groups := [][]string{{a.Recipient().String()}, {b.Recipient().String()}, {c.Recipient().String()}}
	twoOfThree := seal(t, "s.yaml", []byte(plainYAML), sealOptions{groups: groups, threshold: 2})
	allThree := seal(t, "s.yaml", []byte(plainYAML), sealOptions{groups: groups})
	for _, tc := range []struct {
		what string
		file []byte
		keys *Keys
		ok   bool
	}{
		{"2 of 3 with a,c", twoOfThree, keysOf(t, a, c), true},
		{"2 of 3 with all", twoOfThree, keysOf(t, a, b, c), true},
		{"2 of 3 with b only", twoOfThree, keysOf(t, b), false},
		{"3 of 3 with all", allThree, keysOf(t, c, b, a), true},
		{"3 of 3 with a,b", allThree, keysOf(t, a, b), false},
	} {
		t.Run(tc.what, func(t *testing.T) {
			got, err := tc.keys.File("s.yaml", tc.file)
			if tc.ok {
				if err != nil || string(got) != plainYAML {
					t.Fatalf("got %v", err)
				}
				return
			}
			if !errors.Is(err, ErrNoMatchingKey) || !strings.Contains(err.Error(), "key groups opened") {
				t.Fatalf("got %v, want ErrNoMatchingKey naming the groups", err)
			}
			noLeak(t, err)
		})
	}
}

func TestFileRefused(t *testing.T) {
	id := newIdentity(t)
	k := keysOf(t, id)
	rcpt := id.Recipient().String()
	pgpKey := &pgp.MasterKey{Fingerprint: "FBC7B9E2A4F9289AC0C1D4843D16CEE4A27381B4", EncryptedKey: "-----BEGIN PGP MESSAGE-----\nx\n-----END PGP MESSAGE-----", CreationDate: time.Now().UTC()}
	for _, tc := range []struct {
		what, name string
		data       []byte
		want       string
		is         error
	}{
		{"too large", "big.yaml", bytes.Repeat([]byte("a"), MaxFileBytes+1), "more than", nil},
		{"ini", "app.ini", []byte("[sops]\nmac = x\n"), "INI files are not supported", nil},
		{"no metadata", "plain.yaml", []byte(plainYAML), "no sops metadata", nil},
		{"bad yaml", "x.yaml", []byte("a: 1\nb: " + secret + ": x\n"), "not a well-formed sops YAML file (or its sops metadata is invalid) at line 2", nil},
		{"not json", "x.json", []byte("{" + secret), "not a well-formed sops JSON file", nil},
		{"bad dotenv line", "x.env", []byte(secret + "\nsops_mac=x\n"), "not a well-formed sops dotenv file", nil},
		{"pgp only", "p.yaml", seal(t, "p.yaml", []byte(plainYAML), sealOptions{extra: []keys.MasterKey{pgpKey}}),
			"the file has no age recipient; its pgp keys are not used on nodes", ErrNoMatchingKey},
		{"age and pgp, wrong age", "p.yaml", seal(t, "p.yaml", []byte(plainYAML), sealOptions{groups: [][]string{{newIdentity(t).Recipient().String()}}, extra: []keys.MasterKey{pgpKey}}),
			"its pgp keys are not used on nodes", ErrNoMatchingKey},
		{"bad threshold", "t.yaml", seal(t, "t.yaml", []byte(plainYAML), sealOptions{groups: [][]string{{rcpt}, {rcpt}},
			meta: func(m *sops.Metadata) { m.ShamirThreshold = 3 }}), "invalid shamir_threshold 3", nil},
		{"recipient not a key", "r.yaml", bytes.ReplaceAll(sealTo(t, "r.yaml", []byte(plainYAML), newIdentity(t)), []byte("recipient: age1"), []byte("recipient: "+secret)),
			"(not an age recipient)", ErrNoMatchingKey},
		{"stanza garbage", "g.yaml", regexp.MustCompile(`(?s)enc: \|.*?-----END AGE ENCRYPTED FILE-----`).ReplaceAll(sealTo(t, "g.yaml", []byte(plainYAML), id), []byte("enc: "+secret)),
			"1 of its age data keys are malformed", ErrNoMatchingKey},
		{"JSON named as binary", "x.bin", sealTo(t, "x.json", []byte(plainJSON), id), `no string "data" value`, nil},
	} {
		t.Run(tc.what, func(t *testing.T) {
			_, err := k.File(tc.name, tc.data)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.name) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error lacks %q or the file name: %v", tc.want, err)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("error is not %v: %v", tc.is, err)
			}
			noLeak(t, err)
		})
	}
}

func TestFiles(t *testing.T) {
	id := newIdentity(t)
	k := keysOf(t, id)
	encYAML := sealTo(t, "apps/db.sops.yaml", []byte(plainYAML), id)
	encEnv := sealTo(t, "apps/app.env", []byte(plainEnv), id)
	in := bundles.Files{
		{Name: "apps/app.env", Mode: 0o644, Data: encEnv},
		{Name: "apps/db.sops.yaml", Mode: 0o644, Data: encYAML},
		{Name: "apps/deploy.yaml", Mode: 0o644, Data: []byte("kind: Deployment\n")},
		{Name: "apps/logo.png", Mode: 0o644, Data: []byte("\x89PNG\r\n\x1a\n\x00\x00")},
		{Name: "apps/run.sh", Mode: 0o755, Data: []byte("#!/bin/sh\n")},
		{Name: "apps/values.json", Mode: 0o644, Data: []byte(`{"sops": "not metadata"}`)},
	}
	orig := make([][]byte, len(in))
	for i, f := range in {
		orig[i] = bytes.Clone(f.Data)
	}

	out, n, err := k.Files(in)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 || len(out) != len(in) {
		t.Fatalf("decrypted %d of %d files, want 2 of %d", n, len(out), len(in))
	}
	want := map[string]string{"apps/app.env": plainEnv, "apps/db.sops.yaml": plainYAML}
	for i, f := range out {
		if f.Name != in[i].Name || f.Mode != in[i].Mode {
			t.Fatalf("file %d is %s %o, want %s %o", i, f.Name, f.Mode, in[i].Name, in[i].Mode)
		}
		w, ok := want[f.Name]
		if !ok {
			w = string(orig[i])
		}
		if string(f.Data) != w {
			t.Errorf("%s: got %q, want %q", f.Name, f.Data, w)
		}
		if !bytes.Equal(in[i].Data, orig[i]) {
			t.Errorf("%s: the input was modified", f.Name)
		}
	}

	// Without a key: fine while nothing is encrypted, an error naming the file otherwise.
	var none *Keys
	plainOnly := bundles.Files{in[2], in[3]}
	if got, n, err := none.Files(plainOnly); err != nil || n != 0 || len(got) != 2 {
		t.Fatalf("nil Keys, no encrypted file: %d %v", n, err)
	}
	_, _, err = none.Files(in)
	if !errors.Is(err, ErrNoKey) || !strings.Contains(err.Error(), "apps/db.sops.yaml") || !strings.Contains(err.Error(), "no age key configured") {
		t.Fatalf("nil Keys: got %v", err)
	}

	// Every failing file is reported.
	bad := bundles.Files{
		{Name: "a.yaml", Data: flipData(t, encYAML, 0)},
		{Name: "b.env", Data: sealTo(t, "b.env", []byte(plainEnv), newIdentity(t))},
		{Name: "c.yaml", Data: encYAML},
	}
	got, n, err := k.Files(bad)
	if err == nil || got != nil || n != 0 {
		t.Fatalf("got %d files, %d, %v", len(got), n, err)
	}
	if !errors.Is(err, ErrIntegrity) || !errors.Is(err, ErrNoMatchingKey) ||
		!strings.Contains(err.Error(), "a.yaml") || !strings.Contains(err.Error(), "b.env") {
		t.Fatalf("not every failure reported: %v", err)
	}
	noLeak(t, err)
}
