package bundler

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// An SSH signature, as `git commit -S` makes with gpg.format=ssh (`ssh-keygen -Y sign -n git`),
// is an armored SSHSIG blob (OpenSSH's PROTOCOL.sshsig): the signer's public key, a namespace,
// the hash algorithm and a signature over a preamble holding the message's hash.

const (
	sshsigMagic    = "SSHSIG"
	sshsigArmorTop = "-----BEGIN SSH SIGNATURE-----"
	sshsigArmorEnd = "-----END SSH SIGNATURE-----"
	// gitNamespace is the namespace git signs commits and tags in.
	gitNamespace = "git"
	// maxSSHSig bounds an armored signature (an RSA-16384 key and signature fit in 8 KiB).
	maxSSHSig = 64 << 10
)

// sshSignature is a parsed SSHSIG blob.
type sshSignature struct {
	key       ssh.PublicKey
	namespace string
	hash      string
	sig       *ssh.Signature
}

// parseSSHSig reads an armored SSHSIG signature.
func parseSSHSig(armored []byte) (*sshSignature, error) {
	if len(armored) > maxSSHSig {
		return nil, fmt.Errorf("SSH signature: %d bytes, over the %d-byte limit", len(armored), maxSSHSig)
	}
	s := strings.TrimSpace(string(armored))
	if len(s) < len(sshsigArmorTop)+len(sshsigArmorEnd) || !strings.HasPrefix(s, sshsigArmorTop) || !strings.HasSuffix(s, sshsigArmorEnd) {
		return nil, errors.New("SSH signature: not armored as -----BEGIN SSH SIGNATURE-----")
	}
	body := strings.Join(strings.Fields(s[len(sshsigArmorTop):len(s)-len(sshsigArmorEnd)]), "")
	blob, err := base64.StdEncoding.DecodeString(body)
	if err != nil {
		return nil, fmt.Errorf("SSH signature: %w", err)
	}
	if !bytes.HasPrefix(blob, []byte(sshsigMagic)) {
		return nil, errors.New("SSH signature: no SSHSIG magic")
	}
	var w struct {
		Version   uint32
		PublicKey []byte
		Namespace string
		Reserved  []byte
		Hash      string
		Signature []byte
	}
	if err := ssh.Unmarshal(blob[len(sshsigMagic):], &w); err != nil {
		return nil, fmt.Errorf("SSH signature: %w", err)
	}
	if w.Version != 1 {
		return nil, fmt.Errorf("SSH signature: version %d, only 1 is known", w.Version)
	}
	key, err := ssh.ParsePublicKey(w.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("SSH signature: public key: %w", err)
	}
	sig := new(ssh.Signature)
	if err := ssh.Unmarshal(w.Signature, sig); err != nil {
		return nil, fmt.Errorf("SSH signature: %w", err)
	}
	return &sshSignature{key: key, namespace: w.Namespace, hash: w.Hash, sig: sig}, nil
}

// verify checks the signature over message in namespace. The key is the one the signature
// names; whether it is trusted is the allowed-signers file's business.
func (s *sshSignature) verify(message []byte, namespace string) error {
	if s.namespace != namespace {
		return fmt.Errorf("SSH signature: made in namespace %q, not %q", s.namespace, namespace)
	}
	var digest []byte
	switch s.hash {
	case "sha256":
		h := sha256.Sum256(message)
		digest = h[:]
	case "sha512":
		h := sha512.Sum512(message)
		digest = h[:]
	default:
		return fmt.Errorf("SSH signature: hash algorithm %q is not sha256 or sha512", s.hash)
	}
	if s.sig.Format == ssh.KeyAlgoRSA {
		return errors.New("SSH signature: ssh-rsa (SHA-1) signatures are not accepted")
	}
	signed := append([]byte(sshsigMagic), ssh.Marshal(struct {
		Namespace string
		Reserved  []byte
		Hash      string
		Digest    []byte
	}{namespace, nil, s.hash, digest})...)
	if err := s.key.Verify(signed, s.sig); err != nil {
		return fmt.Errorf("SSH signature: %w", err)
	}
	return nil
}

// allowedSigner is one line of an allowed-signers file (ssh-keygen(1), ALLOWED SIGNERS): the
// principals a key may sign as, and in which namespaces and when.
type allowedSigner struct {
	principals  []string // patterns, as written
	key         ssh.PublicKey
	namespaces  []string // empty: any
	validAfter  time.Time
	validBefore time.Time
	line        int
}

// maxAllowedSigners bounds an allowed-signers file.
const maxAllowedSigners = 1 << 20

// parseAllowedSigners reads an allowed-signers file. Certificate authorities are refused:
// Ferry checks keys, not certificates.
func parseAllowedSigners(name string, data []byte) ([]allowedSigner, error) {
	if len(data) > maxAllowedSigners {
		return nil, fmt.Errorf("%s: %d bytes, over the %d-byte limit", name, len(data), maxAllowedSigners)
	}
	var out []allowedSigner
	for i, raw := range strings.Split(string(data), "\n") {
		line := strings.TrimSpace(raw)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		cut := strings.IndexAny(line, " \t")
		if cut < 0 {
			return nil, fmt.Errorf("%s:%d: want principals, then options and a public key", name, i+1)
		}
		principals, rest := line[:cut], line[cut:]
		key, _, options, _, err := ssh.ParseAuthorizedKey([]byte(strings.TrimSpace(rest)))
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, i+1, err)
		}
		s := allowedSigner{principals: strings.Split(principals, ","), key: key, line: i + 1}
		for _, o := range options {
			k, v, _ := strings.Cut(o, "=")
			v = strings.Trim(v, `"`)
			switch strings.ToLower(k) {
			case "namespaces":
				s.namespaces = strings.Split(v, ",")
			case "valid-after", "valid-before":
				t, err := parseSignerTime(v)
				if err != nil {
					return nil, fmt.Errorf("%s:%d: %s: %w", name, i+1, k, err)
				}
				if strings.EqualFold(k, "valid-after") {
					s.validAfter = t
				} else {
					s.validBefore = t
				}
			case "cert-authority":
				return nil, fmt.Errorf("%s:%d: cert-authority lines are not supported: list the signing keys themselves", name, i+1)
			default:
				return nil, fmt.Errorf("%s:%d: unknown option %q", name, i+1, k)
			}
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no allowed signers", name)
	}
	return out, nil
}

// parseSignerTime reads YYYYMMDD[HHMM[SS]] with an optional Z (UTC; local time otherwise).
func parseSignerTime(v string) (time.Time, error) {
	loc := time.Local
	if s, ok := strings.CutSuffix(v, "Z"); ok {
		v, loc = s, time.UTC
	}
	for _, layout := range []string{"20060102150405", "200601021504", "20060102"} {
		if len(v) == len(layout) {
			return time.ParseInLocation(layout, v, loc)
		}
	}
	return time.Time{}, fmt.Errorf("%q is not YYYYMMDD[HHMM[SS]][Z]", v)
}

// signerOf finds the line that allows key to sign in namespace at t.
func signerOf(signers []allowedSigner, key ssh.PublicKey, namespace string, t time.Time) (*allowedSigner, error) {
	want := key.Marshal()
	for i := range signers {
		s := &signers[i]
		if !bytes.Equal(s.key.Marshal(), want) {
			continue
		}
		if len(s.namespaces) > 0 && !matchPatternList(s.namespaces, namespace) {
			continue
		}
		if !s.validAfter.IsZero() && t.Before(s.validAfter) || !s.validBefore.IsZero() && !t.Before(s.validBefore) {
			continue
		}
		return s, nil
	}
	return nil, fmt.Errorf("key %s is not an allowed signer for namespace %q at %s", ssh.FingerprintSHA256(key), namespace, t.UTC().Format(time.RFC3339))
}

// matchPatternList matches s against a comma-separated pattern list as OpenSSH does
// (match_pattern_list): * and ? are the only wildcards, a pattern starting with ! excludes
// what it matches, and s is matched when some pattern includes it and none excludes it.
func matchPatternList(patterns []string, s string) bool {
	matched := false
	for _, p := range patterns {
		if neg, ok := strings.CutPrefix(p, "!"); ok {
			if wildcard(neg, s) {
				return false
			}
			continue
		}
		matched = matched || wildcard(p, s)
	}
	return matched
}

// wildcard matches s against p, where * is any run of bytes and ? any one byte.
func wildcard(p, s string) bool {
	star, mark := -1, 0
	i, j := 0, 0
	for j < len(s) {
		switch {
		case i < len(p) && (p[i] == '?' || p[i] == s[j]):
			i++
			j++
		case i < len(p) && p[i] == '*':
			star, mark = i, j
			i++
		case star >= 0:
			i = star + 1
			mark++
			j = mark
		default:
			return false
		}
	}
	for i < len(p) && p[i] == '*' {
		i++
	}
	return i == len(p)
}
