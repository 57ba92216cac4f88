package receipt

import (
	"bytes"
	"crypto"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ferrygitops/ferry/internal/cosignkey"
	"github.com/ferrygitops/ferry/verify"
)

type testKey struct {
	signer crypto.Signer
	key    verify.Key
}

// keys are made once: a cosign key is encrypted with scrypt, which takes a second or two.
var keys = map[int]testKey{}

// nodeKey returns test key n.
func nodeKey(t testing.TB, n int) testKey {
	t.Helper()
	if k, ok := keys[n]; ok {
		return k
	}
	priv, pub, err := cosignkey.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "node.key")
	os.WriteFile(path, priv, 0o600)
	signer, err := cosignkey.Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	key, err := verify.ParsePublicKey("node.pub", pub)
	if err != nil {
		t.Fatal(err)
	}
	keys[n] = testKey{signer, key}
	return keys[n]
}

// signBytes signs any bytes, so a test can hand Parse a well-signed file Sign would not write.
func (k testKey) signBytes(t testing.TB, b []byte) []byte {
	raw, err := cosignkey.Sign(k.signer, b)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(base64.StdEncoding.EncodeToString(raw))
}

func sample(k testKey) *Receipt {
	return &Receipt{Node: "site-7", Key: k.key.ID, Written: time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC),
		Bundles: []Bundle{{Name: "shop", Running: 2, LastGood: 2, State: "healthy", Revisions: []Revision{{Revision: 2, Version: "1.0.2", Digest: digest.FromString("m").String(), State: "healthy"}}}},
		Blobs:   []digest.Digest{digest.FromString("b"), digest.FromString("a")}}
}

func TestSignParseRoundTrip(t *testing.T) {
	k := nodeKey(t, 0)
	file, sig, err := Sign(sample(k), k.signer)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Parse("site-7.receipt.json", file, sig, []verify.Key{nodeKey(t, 1).key, k.key})
	if err != nil {
		t.Fatal(err)
	}
	if r.Node != "site-7" || !r.Bundles[0].Healthy() || !r.Has(digest.FromString("a")) || !r.Has(digest.FromString("b")) || r.Has(digest.FromString("c")) {
		t.Fatalf("parsed %+v", r)
	}
}

func TestParseRefusals(t *testing.T) {
	k, other := nodeKey(t, 0), nodeKey(t, 1)
	good, goodSig, err := Sign(sample(k), k.signer)
	if err != nil {
		t.Fatal(err)
	}
	signed := func(b []byte) ([]byte, []byte) { return b, k.signBytes(t, b) }
	swap := func(b []byte, x, y string) []byte {
		b = bytes.Replace(b, []byte(x), []byte("\x00"), 1)
		b = bytes.Replace(b, []byte(y), []byte(x), 1)
		return bytes.Replace(b, []byte("\x00"), []byte(y), 1)
	}
	a, b := digest.FromString("a").String(), digest.FromString("b").String()
	type input struct{ file, sig []byte }
	in := func(f, s []byte) input { return input{f, s} }
	cases := []struct {
		name string
		in   input
		keys []verify.Key
		want string
	}{
		{"unknown key", in(good, goodSig), []verify.Key{other.key}, "not signed by a known node key"},
		{"tampered", in(bytes.Replace(good, []byte("site-7"), []byte("site-8"), 1), goodSig), []verify.Key{k.key}, "not signed by a known node key"},
		{"signature not base64", in(good, []byte("!!")), []verify.Key{k.key}, "not base64"},
		{"key field lies", in(signed(bytes.Replace(good, []byte(k.key.ID), []byte(other.key.ID), 1))), []verify.Key{k.key}, "but is signed by"},
		{"unsorted blobs", in(signed(swap(good, a, b))), []verify.Key{k.key}, "not sorted"},
		{"repeated blob", in(signed(bytes.Replace(good, []byte(b), []byte(a), 1))), []verify.Key{k.key}, "repeated"},
		{"bad digest", in(signed(bytes.Replace(good, []byte(a), []byte("sha256:nothex"), 1))), []verify.Key{k.key}, "blobs["},
		{"bad node", in(signed(bytes.Replace(good, []byte(`"site-7"`), []byte(`"../etc"`), 1))), []verify.Key{k.key}, "node name"},
		{"unknown field", in(signed(bytes.Replace(good, []byte(`"node"`), []byte(`"extra": 1, "node"`), 1))), []verify.Key{k.key}, "unknown field"},
		{"other kind", in(signed(bytes.Replace(good, []byte(`"Receipt"`), []byte(`"Bundle"`), 1))), []verify.Key{k.key}, "kind"},
		{"over the limit", in(make([]byte, MaxBytes+1), goodSig), []verify.Key{k.key}, "limit"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("r.json", c.in.file, c.in.sig, c.keys)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "r.json") {
				t.Fatalf("err = %v, want %q naming the file", err, c.want)
			}
		})
	}
	if _, err := Parse("r.json", good, goodSig, []verify.Key{other.key}); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("err = %v, want ErrUnknownKey", err)
	}
	if _, _, err := Sign(&Receipt{Node: "a/b"}, k.signer); err == nil {
		t.Fatal("Sign wrote a receipt for a node name that is a path")
	}
}

// FuzzParse: any bytes, signed by a trusted key, are refused with an error or parsed into a
// receipt whose invariants hold; nothing panics.
func FuzzParse(f *testing.F) {
	k := nodeKey(f, 0)
	good, _, err := Sign(sample(k), k.signer)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"apiVersion":"ferry.dev/v1","kind":"Receipt","node":"n","blobs":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Parse("fuzz", b, k.signBytes(t, b), []verify.Key{k.key})
		if err != nil {
			return
		}
		if ValidNode(r.Node) != nil || r.Key != k.key.ID || len(r.Blobs) > MaxBlobs {
			t.Fatalf("parsed an invalid receipt %+v", r)
		}
		for i := 1; i < len(r.Blobs); i++ {
			if r.Blobs[i-1] >= r.Blobs[i] {
				t.Fatal("unsorted blobs accepted")
			}
		}
	})
}
