package decrypt

import (
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/getsops/sops/v3"
	"github.com/getsops/sops/v3/aes"
	sopsage "github.com/getsops/sops/v3/age"
	"github.com/getsops/sops/v3/keys"
	"github.com/getsops/sops/v3/shamir"
)

// secret is planted in every plaintext fixture; no error may ever contain it.
const secret = "hunter2-PLANTED-a7f3e9"

func newIdentity(t testing.TB) *age.X25519Identity {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func keysOf(t testing.TB, ids ...age.Identity) *Keys {
	t.Helper()
	k, err := newKeys(ids)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// sealOptions changes how seal builds a file, to make files sops would never write.
type sealOptions struct {
	groups    [][]string // age recipients per key group; one group if len 1
	threshold int        // shamir_threshold stored in the file (0: sops's default)
	extra     []keys.MasterKey
	mac       func(computed string) string // the MAC to store instead of the computed one
	meta      func(*sops.Metadata)         // last changes to the metadata
}

// seal encrypts plain as the sops CLI does (cmd/sops/encrypt.go and common.EncryptTree): a random
// data key wrapped with age to each recipient (split with Shamir across several key groups),
// every value encrypted with AES-GCM, and the MAC of the plaintext tree encrypted with
// lastmodified as additional data.
func seal(t testing.TB, name string, plain []byte, o sealOptions) []byte {
	t.Helper()
	store, _, err := storeFor(name)
	if err != nil {
		t.Fatal(err)
	}
	branches, err := store.LoadPlainFile(plain)
	if err != nil {
		t.Fatalf("load plain %s: %v", name, err)
	}
	tree := sops.Tree{Branches: branches, Metadata: sops.Metadata{
		UnencryptedSuffix: sops.DefaultUnencryptedSuffix,
		Version:           "3.13.3",
		ShamirThreshold:   o.threshold,
	}}
	dataKey := make([]byte, dataKeyBytes)
	if _, err := rand.Read(dataKey); err != nil {
		t.Fatal(err)
	}
	parts := [][]byte{dataKey}
	if len(o.groups) > 1 {
		threshold := o.threshold
		if threshold == 0 {
			threshold = len(o.groups)
		}
		if parts, err = shamir.Split(dataKey, len(o.groups), threshold); err != nil {
			t.Fatal(err)
		}
	}
	for i, group := range o.groups {
		var kg sops.KeyGroup
		for _, r := range group {
			mk, err := sopsage.MasterKeyFromRecipient(r)
			if err != nil {
				t.Fatal(err)
			}
			if err := mk.Encrypt(parts[i]); err != nil {
				t.Fatal(err)
			}
			kg = append(kg, mk)
		}
		if i == 0 {
			kg = append(kg, o.extra...)
		}
		tree.Metadata.KeyGroups = append(tree.Metadata.KeyGroups, kg)
	}
	if len(o.groups) == 0 {
		tree.Metadata.KeyGroups = []sops.KeyGroup{o.extra}
	}
	cipher := aes.NewCipher()
	mac, err := tree.Encrypt(dataKey, cipher)
	if err != nil {
		t.Fatal(err)
	}
	if o.mac != nil {
		mac = o.mac(mac)
	}
	tree.Metadata.LastModified = time.Now().UTC()
	if tree.Metadata.MessageAuthenticationCode, err = cipher.Encrypt(mac, dataKey, tree.Metadata.LastModified.Format(time.RFC3339)); err != nil {
		t.Fatal(err)
	}
	if o.meta != nil {
		o.meta(&tree.Metadata)
	}
	out, err := store.EmitEncryptedFile(tree)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), secret) {
		t.Fatalf("%s: the encrypted fixture holds the plaintext", name)
	}
	return out
}

// sealTo encrypts plain to one key group of the given identities' recipients.
func sealTo(t testing.TB, name string, plain []byte, ids ...*age.X25519Identity) []byte {
	t.Helper()
	var group []string
	for _, id := range ids {
		group = append(group, id.Recipient().String())
	}
	return seal(t, name, plain, sealOptions{groups: [][]string{group}})
}

// Plaintexts in the form sops emits them (YAML indented by 4, JSON by tabs), so a round trip
// gives back exactly these bytes.
var (
	plainYAML = "apiVersion: v1\nkind: Secret\nmetadata:\n    name: db\n    namespace: web\n" +
		"# the password the app uses\nstringData:\n    password: " + secret + "\n    port: \"5432\"\n" +
		"    note_unencrypted: visible\nreplicas: 3\nenabled: true\nratio: 0.5\nlist:\n    - a\n    - " + secret + "-in-list\n"
	plainJSON = "{\n\t\"user\": \"admin\",\n\t\"password\": \"" + secret + "\",\n\t\"n\": 42,\n\t\"nested\": {\n\t\t\"ok\": true,\n\t\t\"xs\": [\n\t\t\t1.5,\n\t\t\t\"" + secret + "\"\n\t\t]\n\t}\n}\n"
	plainEnv  = "# database\nDB_USER=admin\nDB_PASSWORD=" + secret + "\nMULTI=line1\\nline2\nEMPTY=\n"
)

// plainBinary is bytes no text format would keep: NUL, invalid UTF-8, CR, the secret.
func plainBinary() []byte {
	b := []byte("\x00\xff\xfe binary \r\n" + secret + "\x80\x81")
	for i := range 256 {
		b = append(b, byte(i))
	}
	return b
}
