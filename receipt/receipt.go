// Package receipt is what a node says it holds: the revisions of each bundle, what runs and
// whether it is healthy, and the digest of every blob in its store, signed with the node's
// own key. A receipt travels back to headquarters on the stick that brought the bundles (or
// through S3); there it shows which site runs what (ferry receipts) and lets the next export
// leave out what the node already has (a thin archive).
//
// A receipt is a JSON file, NODE.receipt.json, and its signature beside it, NODE.receipt.json.sig:
// the base64 signature over the file's bytes that `cosign sign-blob` would write with the
// same key, so `cosign verify-blob --key node.pub --signature F.sig F` checks it too.
package receipt

import (
	"bytes"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ferrygitops/ferry/internal/cosignkey"
	"github.com/ferrygitops/ferry/verify"
)

const (
	// APIVersion and Kind name the format.
	APIVersion = "ferry.dev/v1"
	Kind       = "Receipt"
	// Suffix ends a receipt's file name; SignatureSuffix its signature's.
	Suffix          = ".receipt.json"
	SignatureSuffix = Suffix + ".sig"
	// MaxBytes bounds a receipt read from outside (a stick, a bucket), MaxBlobs its blob list.
	MaxBytes = 32 << 20
	MaxBlobs = 500_000
	// MaxSignatureBytes bounds its signature file.
	MaxSignatureBytes = 4 << 10
)

// Receipt is one node's state at one time.
type Receipt struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	// Node is the node's name (its hostname unless configured).
	Node string `json:"node"`
	// Key is the ID of the node key that signs it ("sha256:" and the hex of its PKIX DER).
	Key     string          `json:"key"`
	Written time.Time       `json:"written"`
	Bundles []Bundle        `json:"bundles"`
	Blobs   []digest.Digest `json:"blobs"`
}

// Bundle is one bundle on the node.
type Bundle struct {
	Name string `json:"name"`
	// Running is the revision applied now (0: none), LastGood the last that was healthy.
	Running  uint64 `json:"running"`
	LastGood uint64 `json:"lastGood"`
	// State is the running revision's state (healthy, failed, applying, …); "removed" for a
	// bundle removed from the node.
	State     string     `json:"state"`
	Revisions []Revision `json:"revisions"`
}

// Revision is one revision the node holds.
type Revision struct {
	Revision uint64 `json:"revision"`
	Version  string `json:"version"`
	Digest   string `json:"digest"`
	State    string `json:"state"`
}

// Healthy reports whether the bundle's running revision is healthy.
func (b Bundle) Healthy() bool { return b.Running != 0 && b.State == "healthy" }

// Has reports whether the node holds blob d.
func (r *Receipt) Has(d digest.Digest) bool {
	i := sort.Search(len(r.Blobs), func(i int) bool { return r.Blobs[i] >= d })
	return i < len(r.Blobs) && r.Blobs[i] == d
}

var nodeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$`)

// ValidNode checks a node name: it names files on sticks and keys in buckets.
func ValidNode(name string) error {
	if !nodeName.MatchString(name) {
		return fmt.Errorf("node name %q: want letters, digits, '.', '_' or '-' (at most 253)", name)
	}
	return nil
}

// Sign marshals r (its blobs sorted) and signs the bytes with key, as cosign sign-blob does.
func Sign(r *Receipt, key crypto.Signer) (file, sig []byte, err error) {
	if err := ValidNode(r.Node); err != nil {
		return nil, nil, err
	}
	r.APIVersion, r.Kind = APIVersion, Kind
	sort.Slice(r.Blobs, func(i, j int) bool { return r.Blobs[i] < r.Blobs[j] })
	file, err = json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, nil, err
	}
	file = append(file, '\n')
	raw, err := cosignkey.Sign(key, file)
	if err != nil {
		return nil, nil, err
	}
	return file, []byte(base64.StdEncoding.EncodeToString(raw)), nil
}

// ErrUnknownKey is a receipt signed by none of the node keys the reader trusts.
var ErrUnknownKey = errors.New("receipt not signed by a known node key")

// Parse checks the signature sig over file against keys and decodes the receipt: strictly
// (no unknown field), within MaxBytes and MaxBlobs, every digest valid. source names the
// file in errors.
func Parse(source string, file, sig []byte, keys []verify.Key) (*Receipt, error) {
	if len(file) > MaxBytes {
		return nil, fmt.Errorf("%s: over the %d-byte limit for a receipt", source, MaxBytes)
	}
	if len(sig) > MaxSignatureBytes {
		return nil, fmt.Errorf("%s: signature over the %d-byte limit", source, MaxSignatureBytes)
	}
	raw, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(sig)))
	if err != nil {
		return nil, fmt.Errorf("%s: signature: not base64", source)
	}
	var by *verify.Key
	for i := range keys {
		if keys[i].Verify(file, raw) {
			by = &keys[i]
			break
		}
	}
	if by == nil {
		return nil, fmt.Errorf("%s: %w (%d keys tried)", source, ErrUnknownKey, len(keys))
	}
	dec := json.NewDecoder(bytes.NewReader(file))
	dec.DisallowUnknownFields()
	var r Receipt
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	switch {
	case r.APIVersion != APIVersion || r.Kind != Kind:
		return nil, fmt.Errorf("%s: apiVersion %q kind %q, want %s %s", source, r.APIVersion, r.Kind, APIVersion, Kind)
	case r.Key != by.ID:
		return nil, fmt.Errorf("%s: key: names %s but is signed by %s (%s)", source, r.Key, by.ID, by.Source)
	case len(r.Blobs) > MaxBlobs:
		return nil, fmt.Errorf("%s: blobs: %d, over the limit of %d", source, len(r.Blobs), MaxBlobs)
	}
	if err := ValidNode(r.Node); err != nil {
		return nil, fmt.Errorf("%s: node: %w", source, err)
	}
	for i, d := range r.Blobs {
		if err := d.Validate(); err != nil {
			return nil, fmt.Errorf("%s: blobs[%d]: %w", source, i, err)
		}
		if i > 0 && r.Blobs[i-1] >= d {
			return nil, fmt.Errorf("%s: blobs[%d]: not sorted or repeated", source, i)
		}
	}
	return &r, nil
}
