package decrypt

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"

	"filippo.io/age"
)

// MaxKeyFileBytes is the largest age key file LoadKeys reads. A key file holds a few lines of
// about 75 bytes (post-quantum keys are longer); anything near this size is not a key file.
const MaxKeyFileBytes = 64 << 10

// Keys holds the node's parsed age identities, the only keys this package decrypts with.
// A Keys is immutable and safe for concurrent use. It never formats or logs its identities.
type Keys struct {
	ids        []age.Identity
	recipients []string // public keys of ids, in order, for messages
	hashKey    []byte   // derived from the identities, see HashKey
}

// LoadKeys reads an age identity file, the format age-keygen writes: "#" comments and one
// AGE-SECRET-KEY-1… (or AGE-SECRET-KEY-PQ-1…) line per identity. It refuses a file that group or
// others may access in any way (chmod 600 fixes that), a file over MaxKeyFileBytes, anything
// but a regular file, and a file with no identity. SSH keys and age plugins are not accepted.
func LoadKeys(path string) (*Keys, error) {
	// Stat before opening, so a FIFO or device is refused without blocking on it; the opened
	// file is checked again below, since the path may have changed in between.
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("age key file: %w", err)
	}
	if err := checkKeyFile(path, info); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("age key file: %w", err)
	}
	defer f.Close()
	if info, err = f.Stat(); err != nil {
		return nil, fmt.Errorf("age key file: %w", err)
	}
	if err := checkKeyFile(path, info); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxKeyFileBytes+1))
	defer clear(data)
	if err != nil {
		return nil, fmt.Errorf("age key file %s: %w", path, err)
	}
	if len(data) > MaxKeyFileBytes {
		return nil, fmt.Errorf("age key file %s: larger than %d bytes", path, MaxKeyFileBytes)
	}
	k, err := parseKeys(data)
	if err != nil {
		return nil, fmt.Errorf("age key file %s: %w", path, err)
	}
	return k, nil
}

func checkKeyFile(path string, info os.FileInfo) error {
	if !info.Mode().IsRegular() {
		return fmt.Errorf("age key file %s: not a regular file (%s)", path, info.Mode().Type())
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("age key file %s has mode %04o, which lets group or others access it: "+
			"run chmod 600 %s", path, perm, path)
	}
	if info.Size() > MaxKeyFileBytes {
		return fmt.Errorf("age key file %s: larger than %d bytes", path, MaxKeyFileBytes)
	}
	return nil
}

// ageLine finds the line number in an age.ParseIdentities error ("error at line 3: …"). Only the
// number is kept: the rest of the message may quote characters of the key.
var ageLine = regexp.MustCompile(`^error at line ([0-9]+):`)

// parseKeys parses the content of an age identity file.
func parseKeys(data []byte) (*Keys, error) {
	if !hasIdentityLine(data) {
		return nil, errors.New("it holds no age identity, only blank lines and comments")
	}
	ids, err := age.ParseIdentities(bytes.NewReader(data))
	if err != nil {
		if m := ageLine.FindStringSubmatch(err.Error()); m != nil {
			return nil, fmt.Errorf("line %s is not an age identity (AGE-SECRET-KEY-1…)", m[1])
		}
		return nil, errors.New("not an age identity file (AGE-SECRET-KEY-1… lines)")
	}
	if len(ids) == 0 {
		return nil, errors.New("it holds no age identity")
	}
	k, err := newKeys(ids)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(append([]byte("ferry apply: object hash key v1\n"), data...))
	k.hashKey = sum[:]
	return k, nil
}

// HashKey is a key derived from the node's identities, for keyed hashes of what was
// decrypted: the applier records a hash of each object it sends, and with this key the
// hash of a Secret tells nothing to someone holding the state database but not the key
// file. nil for nil Keys.
func (k *Keys) HashKey() []byte {
	if k == nil {
		return nil
	}
	return append([]byte(nil), k.hashKey...)
}

// hasIdentityLine reports whether data has a line ParseIdentities would try to parse.
func hasIdentityLine(data []byte) bool {
	for line := range bytes.Lines(data) {
		line = bytes.TrimRight(line, "\r\n")
		if len(line) > 0 && line[0] != '#' {
			return true
		}
	}
	return false
}

func newKeys(ids []age.Identity) (*Keys, error) {
	k := &Keys{ids: ids}
	for _, id := range ids {
		switch id := id.(type) {
		case *age.X25519Identity:
			k.recipients = append(k.recipients, id.Recipient().String())
		case *age.HybridIdentity:
			k.recipients = append(k.recipients, id.Recipient().String())
		default:
			// ParseIdentities documents these two types only; a new one would need a look at how
			// it unwraps before the node trusts it.
			return nil, fmt.Errorf("unsupported age identity type %T", id)
		}
	}
	return k, nil
}

// Recipients returns the age public keys of the identities in k, the recipients a file must be
// encrypted to for this node to open it.
func (k *Keys) Recipients() []string {
	if k == nil {
		return nil
	}
	return append([]string(nil), k.recipients...)
}

// LogValue keeps identities out of logs: only their public keys are shown.
func (k *Keys) LogValue() slog.Value {
	if k == nil {
		return slog.StringValue("none")
	}
	return slog.AnyValue(k.recipients)
}
