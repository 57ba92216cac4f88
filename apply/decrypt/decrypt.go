package decrypt

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"time"

	"filippo.io/age"
	"filippo.io/age/armor"
	"github.com/getsops/sops/v3"
	"github.com/getsops/sops/v3/aes"
	sopsage "github.com/getsops/sops/v3/age"
	"github.com/getsops/sops/v3/cmd/sops/formats"
	"github.com/getsops/sops/v3/config"
	"github.com/getsops/sops/v3/shamir"
	"github.com/getsops/sops/v3/stores/dotenv"
	sopsjson "github.com/getsops/sops/v3/stores/json"
	"github.com/getsops/sops/v3/stores/yaml"

	"github.com/ferrygitops/ferry/bundles"
)

// Limits on what File accepts. Secrets are small; these bound the work a hostile file can ask
// for before its MAC is checked.
const (
	// MaxFileBytes is the largest encrypted file File decrypts.
	MaxFileBytes = 4 << 20
	// maxMasterKeys bounds the master keys (of any type) and key groups a file may list; each age
	// stanza costs one X25519 operation per identity.
	maxMasterKeys = 64
	// dataKeyBytes is the size of every sops data key (AES-256).
	dataKeyBytes = 32
	// maxShownRecipients bounds how many of a file's recipients an error lists.
	maxShownRecipients = 8
)

// Errors callers branch on. Each is wrapped with the file name and the details.
var (
	// ErrNoKey: a file is encrypted but the node has no age key configured.
	ErrNoKey = errors.New("no age key configured")
	// ErrNoMatchingKey: none of the node's age identities opens the file's data key.
	ErrNoMatchingKey = errors.New("no age identity of this node can decrypt it")
	// ErrIntegrity: a value or the MAC fails authentication, or the MAC does not match the
	// content: the file was altered after sops wrote it, or is corrupt.
	ErrIntegrity = errors.New("integrity check failed")
)

// File decrypts one SOPS file in memory and returns what `sops --decrypt` prints for it: YAML,
// JSON or dotenv text, or the raw bytes of a binary file. The format comes from name as the sops
// CLI chooses it (see the package documentation); ".ini" files are refused. The data key is
// taken only from the file's age stanzas with k's identities, and the MAC must verify.
// Errors name the file and never hold plaintext.
func (k *Keys) File(name string, data []byte) (plain []byte, err error) {
	if k == nil || len(k.ids) == 0 {
		return nil, fmt.Errorf("decrypt %s: %w (set the node's age key file)", name, ErrNoKey)
	}
	if len(data) > MaxFileBytes {
		return nil, fmt.Errorf("decrypt %s: %d bytes, more than the %d an encrypted file may have", name, len(data), MaxFileBytes)
	}
	// The sops stores parse hostile input with third-party parsers; should one of them panic, the
	// panic must not cross this package's boundary, and its value may quote the input, so it is
	// dropped. (The fuzz target has found no panic so far.)
	defer func() {
		if r := recover(); r != nil {
			plain, err = nil, fmt.Errorf("decrypt %s: malformed sops file (the sops library panicked on it)", name)
		}
	}()
	plain, err = k.file(name, data)
	if err != nil {
		return nil, fmt.Errorf("decrypt %s: %w", name, err)
	}
	return plain, nil
}

func (k *Keys) file(name string, data []byte) ([]byte, error) {
	store, kind, err := storeFor(name)
	if err != nil {
		return nil, err
	}
	// The store's error is not kept: YAML, JSON and dotenv parse errors quote the input.
	tree, err := store.LoadEncryptedFile(data)
	if err != nil {
		if errors.Is(err, sops.MetadataNotFound) {
			return nil, fmt.Errorf("no sops metadata in this %s file", kind)
		}
		return nil, fmt.Errorf("not a well-formed sops %s file (or its sops metadata is invalid)%s", kind, lineOf(err))
	}
	key, err := k.dataKey(&tree.Metadata)
	if err != nil {
		return nil, err
	}
	defer clear(key)

	// Verify the MAC as sops's decrypt path does (decrypt/decrypt.go, cmd/sops/common.DecryptTree):
	// Tree.Decrypt returns the MAC computed over the plaintext tree; the stored MAC is decrypted
	// with the data key and "lastmodified" as additional data. Unlike sops, neither MAC is ever
	// shown: a MAC of a short secret is a way to guess it offline.
	cipher := aes.NewCipher()
	computed, err := tree.Decrypt(key, cipher)
	if err != nil {
		// Tree.Decrypt's error may quote the value it could not decrypt.
		return nil, fmt.Errorf("%w: a value does not decrypt with the file's data key", ErrIntegrity)
	}
	stored, err := cipher.Decrypt(tree.Metadata.MessageAuthenticationCode, key, tree.Metadata.LastModified.Format(time.RFC3339))
	if err != nil {
		return nil, fmt.Errorf("%w: the MAC does not decrypt (MAC or lastmodified altered)", ErrIntegrity)
	}
	mac, ok := stored.(string)
	if !ok || mac == "" || subtle.ConstantTimeCompare([]byte(mac), []byte(computed)) != 1 {
		return nil, fmt.Errorf("%w: MAC mismatch, the content was altered", ErrIntegrity)
	}

	plain, err := store.EmitPlainFile(tree.Branches)
	if err != nil {
		if errors.Is(err, sopsjson.BinaryStoreEmitPlainError) {
			return nil, fmt.Errorf("not a sops binary file: no string \"data\" value (is the file name's extension the one it was encrypted as?)")
		}
		return nil, fmt.Errorf("cannot write the plaintext as %s", kind)
	}
	return plain, nil
}

// errLine finds a line number in a parser's error ("yaml: line 3: …").
var errLine = regexp.MustCompile(`\bline ([0-9]{1,9})\b`)

// lineOf returns " at line N" for an error that names a line, and "" otherwise. Only the digits
// are taken from the error, which may quote the input.
func lineOf(err error) string {
	if m := errLine.FindStringSubmatch(err.Error()); m != nil {
		return " at line " + m[1]
	}
	return ""
}

// storeFor returns the sops store for name's format and the format's name for messages. The
// stores get the sops CLI's defaults for a missing .sops.yaml (config.NewStoresConfig reads no
// file), so the output is byte for byte what the CLI prints.
func storeFor(name string) (sops.Store, string, error) {
	c := config.NewStoresConfig()
	switch formatFor(name) {
	case formats.Yaml:
		return yaml.NewStore(&c.YAML), "YAML", nil
	case formats.Json:
		return sopsjson.NewStore(&c.JSON), "JSON", nil
	case formats.Dotenv:
		return dotenv.NewStore(&c.Dotenv), "dotenv", nil
	case formats.Ini:
		return nil, "", errors.New("sops INI files are not supported on nodes; encrypt the file as YAML, JSON, dotenv or binary")
	default:
		return sopsjson.NewBinaryStore(&c.JSONBinary), "binary", nil
	}
}

// dataKey recovers the file's data key from its age stanzas with k's identities only; it never
// asks sops's key services, which would read keys from the environment, the home directory and
// cloud KMS. With several key groups the key is split by Shamir's scheme: any threshold of
// groups, each opened by one of its age keys, rebuild it (sops.Metadata.GetDataKeyWithKeyServices).
func (k *Keys) dataKey(md *sops.Metadata) ([]byte, error) {
	groups := md.KeyGroups
	if len(groups) == 0 {
		return nil, errors.New("the sops metadata lists no keys")
	}
	if n := md.MasterKeyCount(); n > maxMasterKeys || len(groups) > maxMasterKeys {
		return nil, fmt.Errorf("the sops metadata lists %d keys in %d groups, more than the %d allowed", n, len(groups), maxMasterKeys)
	}
	threshold := 1
	if len(groups) > 1 {
		// sops stores the threshold it split with; 0 means all groups (sops's own default).
		threshold = md.ShamirThreshold
		if threshold == 0 {
			threshold = len(groups)
		}
		if threshold < 2 || threshold > len(groups) {
			return nil, fmt.Errorf("the sops metadata has %d key groups and an invalid shamir_threshold %d", len(groups), md.ShamirThreshold)
		}
	}

	var (
		parts      [][]byte
		recipients []string // age recipients of the file, for the error
		others     []string // types of the other master keys, which nodes never use
		unreadable int      // age stanzas that are not well-formed age files
	)
	defer func() {
		for _, p := range parts {
			clear(p)
		}
	}()
	for _, group := range groups {
		var part []byte
		for _, mk := range group {
			ak, ok := mk.(*sopsage.MasterKey)
			if !ok {
				if t := mk.TypeToIdentifier(); !slices.Contains(others, t) {
					others = append(others, t)
				}
				continue
			}
			recipients = append(recipients, shownRecipient(ak.Recipient))
			if part != nil {
				continue // the group is open; keep listing recipients only
			}
			p, err := k.openStanza(ak.EncryptedKey)
			switch {
			case err == nil:
				part = p
			case !errors.As(err, new(*age.NoIdentityMatchError)):
				unreadable++
			}
		}
		if part != nil {
			parts = append(parts, part)
		}
	}
	if len(parts) < threshold {
		return nil, noMatch(k, len(groups), threshold, len(parts), recipients, others, unreadable)
	}

	if len(groups) == 1 {
		if len(parts[0]) != dataKeyBytes {
			return nil, fmt.Errorf("%w: the age stanza holds %d bytes, not a %d-byte data key", ErrIntegrity, len(parts[0]), dataKeyBytes)
		}
		return slices.Clone(parts[0]), nil
	}
	key, err := shamir.Combine(parts)
	if err != nil || len(key) != dataKeyBytes {
		clear(key)
		return nil, fmt.Errorf("%w: the key groups' shares do not combine into a data key", ErrIntegrity)
	}
	return key, nil
}

// openStanza decrypts one armored age file holding a data key (or a Shamir share of one) with
// k's identities. A share is one byte longer than the key; anything longer is refused unread.
func (k *Keys) openStanza(armored string) ([]byte, error) {
	r, err := age.Decrypt(armor.NewReader(strings.NewReader(armored)), k.ids...)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(r, dataKeyBytes+2))
	if err != nil {
		clear(b)
		return nil, err
	}
	if len(b) > dataKeyBytes+1 {
		clear(b)
		return nil, errors.New("age payload too long for a data key")
	}
	return b, nil
}

// noMatch builds the error for a file none of k's identities opens (enough groups of).
func noMatch(k *Keys, groups, threshold, opened int, recipients, others []string, unreadable int) error {
	var b strings.Builder
	b.WriteString(ErrNoMatchingKey.Error())
	if groups > 1 {
		fmt.Fprintf(&b, " (%d of its %d key groups opened, %d needed)", opened, groups, threshold)
	}
	if len(recipients) == 0 {
		b.WriteString("; the file has no age recipient")
	} else {
		shown := recipients
		if len(shown) > maxShownRecipients {
			shown = shown[:maxShownRecipients]
		}
		fmt.Fprintf(&b, "; the file's age recipients: %s", strings.Join(shown, ", "))
		if more := len(recipients) - len(shown); more > 0 {
			fmt.Fprintf(&b, " and %d more", more)
		}
	}
	if len(others) > 0 {
		fmt.Fprintf(&b, "; its %s keys are not used on nodes", strings.Join(others, ", "))
	}
	if unreadable > 0 {
		fmt.Fprintf(&b, "; %d of its age data keys are malformed", unreadable)
	}
	fmt.Fprintf(&b, "; this node's recipients: %s", strings.Join(k.recipients, ", "))
	return &noMatchError{msg: b.String()}
}

// noMatchError carries a message built from public data only and matches ErrNoMatchingKey.
type noMatchError struct{ msg string }

func (e *noMatchError) Error() string        { return e.msg }
func (e *noMatchError) Is(target error) bool { return target == ErrNoMatchingKey }

// shownRecipient returns an age recipient as the file states it if it parses as one, so only a
// public key can reach an error message, whatever the metadata holds.
func shownRecipient(r string) string {
	if _, err := age.ParseX25519Recipient(r); err == nil {
		return r
	}
	if _, err := age.ParseHybridRecipient(r); err == nil {
		return r
	}
	return "(not an age recipient)"
}

// Files returns a copy of files in which every file IsEncrypted reports is replaced by its
// plaintext (name and mode unchanged), and how many were decrypted. Files that are not
// encrypted keep their Data, shared with the input. k may be nil on a node without an age key:
// that is an error (ErrNoKey) only if some file is encrypted. Every file that fails is reported,
// joined into one error, and no files are returned then.
func (k *Keys) Files(files bundles.Files) (bundles.Files, int, error) {
	out := slices.Clone(files)
	var (
		errs      []error
		decrypted []int
	)
	for i, f := range out {
		if !IsEncrypted(f.Name, f.Data) {
			continue
		}
		plain, err := k.File(f.Name, f.Data)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out[i].Data = plain
		decrypted = append(decrypted, i)
	}
	if len(errs) > 0 {
		for _, i := range decrypted {
			clear(out[i].Data) // plaintext nobody will use
		}
		return nil, 0, errors.Join(errs...)
	}
	return out, len(decrypted), nil
}
