package integration

import (
	"crypto"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/ferrygitops/ferry/bundler"
	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/verify"
	"github.com/ferrygitops/ferry/verify/verifytest"
)

// cosign runs the real cosign CLI offline: no transparency log, a private TUF cache, and a
// password from the environment.
func cosign(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	return cosignEnv(t, dir, nil, args...)
}

func cosignEnv(t *testing.T, dir string, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), tb.Bin("cosign"), args...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "COSIGN_PASSWORD=interop", "TUF_ROOT="+filepath.Join(dir, "tuf"), "HOME="+dir), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// pushed builds a bundle and pushes it to the testbed registry; it returns the registry
// address with the digest.
func pushed(t *testing.T, repo string) (bundles.Address, string) {
	t.Helper()
	layout, res := buildLayout(t, sourceTree(t, nil))
	src, desc, err := bundles.OpenSource(t.Context(), layout, bundles.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, _ := bundles.ParseAddress("oci://" + tb.Registry + "/" + repo + ":1.4.0")
	if _, err := bundles.Copy(t.Context(), src, desc, dst, bundles.Options{}); err != nil {
		t.Fatal(err)
	}
	byDigest := tb.Registry + "/" + repo + "@" + res.Descriptor.Digest.String()
	addr, _ := bundles.ParseAddress("oci://" + byDigest)
	return addr, byDigest
}

// ferryKey makes a cosign-format key pair with Ferry in dir and returns the private key
// and the public key file.
func ferryKey(t *testing.T, dir string) (crypto.Signer, string) {
	t.Helper()
	privPEM, pubPEM, err := bundler.GenerateKeyPair([]byte("interop"))
	if err != nil {
		t.Fatal(err)
	}
	priv, pub := filepath.Join(dir, "ferry.key"), filepath.Join(dir, "ferry.pub")
	writeFile(t, priv, privPEM)
	writeFile(t, pub, pubPEM)
	key, err := bundler.LoadPrivateKey(priv, []byte("interop"))
	if err != nil {
		t.Fatal(err)
	}
	return key, pub
}

// openedBundle opens the bundle at addr and reads its manifest and config; the source is
// closed when the test ends.
func openedBundle(t *testing.T, addr bundles.Address) (bundles.Source, ocispec.Descriptor, *bundles.Bundle) {
	t.Helper()
	src, desc, err := bundles.OpenSource(t.Context(), addr, bundles.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	b, err := bundles.Open(t.Context(), src, desc)
	if err != nil {
		t.Fatal(err)
	}
	return src, desc, b
}

func verifyWithFerry(t *testing.T, addr bundles.Address, pub string) error {
	t.Helper()
	key, err := verify.LoadPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	src, desc, err := bundles.OpenSource(t.Context(), addr, bundles.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	_, err = verify.Bundle(t.Context(), src, desc, verify.Policy{Keys: []verify.Key{key}})
	return err
}

func TestCosignVerifiesFerrySignature(t *testing.T) {
	work := t.TempDir()
	addr, ref := pushed(t, "interop/ferry-signed")
	key, pub := ferryKey(t, work)

	// Before signing, cosign must refuse: the check below is not vacuous.
	if out, err := cosign(t, work, "verify", "--key", pub, "--insecure-ignore-tlog=true", "--allow-http-registry", ref); err == nil {
		t.Fatalf("cosign verified an unsigned bundle:\n%s", out)
	}
	target, desc, err := bundles.OpenTarget(t.Context(), addr, bundles.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bundler.Sign(t.Context(), target, desc, key, addr.Ref.Registry+"/"+addr.Ref.Repository); err != nil {
		t.Fatal(err)
	}
	out, err := cosign(t, work, "verify", "--key", pub, "--insecure-ignore-tlog=true", "--allow-http-registry", ref)
	if err != nil {
		t.Fatalf("cosign verify of a ferry signature: %v\n%s", err, out)
	}
	if !strings.Contains(out, desc.Digest.String()) {
		t.Fatalf("cosign output does not name the digest:\n%s", out)
	}
	// cosign with another key refuses it.
	other := filepath.Join(work, "other")
	if out, err := cosign(t, work, "generate-key-pair", "--output-key-prefix", other); err != nil {
		t.Fatalf("cosign generate-key-pair: %v\n%s", err, out)
	}
	if out, err := cosign(t, work, "verify", "--key", other+".pub", "--insecure-ignore-tlog=true", "--allow-http-registry", ref); err == nil {
		t.Fatalf("cosign accepted the signature with an unrelated key:\n%s", out)
	}
}

func TestFerryVerifiesCosignSignature(t *testing.T) {
	work := t.TempDir()
	addr, ref := pushed(t, "interop/cosign-signed")
	prefix := filepath.Join(work, "cosign")
	if out, err := cosign(t, work, "generate-key-pair", "--output-key-prefix", prefix); err != nil {
		t.Fatalf("cosign generate-key-pair: %v\n%s", err, out)
	}
	if err := verifyWithFerry(t, addr, prefix+".pub"); !errors.Is(err, verify.ErrUntrusted) {
		t.Fatalf("unsigned bundle: err = %v, want ErrUntrusted", err)
	}
	if out, err := cosign(t, work, "sign", "--key", prefix+".key", "--tlog-upload=false", "--allow-http-registry", "--yes", ref); err != nil {
		t.Fatalf("cosign sign: %v\n%s", err, out)
	}
	if err := verifyWithFerry(t, addr, prefix+".pub"); err != nil {
		t.Fatalf("ferry refused a cosign signature: %v", err)
	}
	// The signature travels with the bundle to a USB tar and still verifies there.
	src, desc, err := bundles.OpenSource(t.Context(), addr, bundles.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(work, "stick.tar")
	dst, _ := bundles.ParseAddress(tarPath)
	if _, err := bundles.Copy(t.Context(), src, desc, dst, bundles.Options{}); err != nil {
		t.Fatal(err)
	}
	src.Close()
	onStick, _ := bundles.ParseAddress(tarPath)
	if err := verifyWithFerry(t, onStick, prefix+".pub"); err != nil {
		t.Fatalf("cosign signature lost on the way to the stick: %v", err)
	}
	// And ferry signs with the key cosign generated.
	key, err := bundler.LoadPrivateKey(prefix+".key", []byte("interop"))
	if err != nil {
		t.Fatalf("ferry cannot load a cosign key: %v", err)
	}
	target, desc, err := bundles.OpenTarget(t.Context(), addr, bundles.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bundler.Sign(t.Context(), target, desc, key, "x"); err != nil {
		t.Fatal(err)
	}
	// Both signatures are now there; cosign still verifies.
	if out, err := cosign(t, work, "verify", "--key", prefix+".pub", "--insecure-ignore-tlog=true", "--allow-http-registry", ref); err != nil {
		t.Fatalf("cosign verify after ferry appended a signature: %v\n%s", err, out)
	}
}

// deleteTagSignature removes the tag-scheme signature manifest from the registry, leaving only
// what is stored as OCI 1.1 referrers.
func deleteTagSignature(t *testing.T, addr bundles.Address) {
	t.Helper()
	repo, err := bundles.Options{}.Repository(addr)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := repo.Resolve(t.Context(), addr.Ref.Reference)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := repo.Resolve(t.Context(), bundles.SignatureTag(desc))
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Delete(t.Context(), sig); err != nil {
		t.Fatal(err)
	}
}

// TestSignaturesAsReferrers: Ferry stores each signature also as an OCI 1.1 referrer (the
// testbed registry has no referrers API, so oras keeps the referrers tag). With the tag-scheme
// signature deleted, Ferry still verifies from the referrer; and a bundle cosign signed in its
// oci-1-1 mode only, with no .sig tag, verifies in Ferry.
func TestSignaturesAsReferrers(t *testing.T) {
	work := t.TempDir()
	addr, ref := pushed(t, "interop/referrers")
	key, pub := ferryKey(t, work)
	target, desc, err := bundles.OpenTarget(t.Context(), addr, bundles.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bundler.Sign(t.Context(), target, desc, key, "x"); err != nil {
		t.Fatal(err)
	}
	deleteTagSignature(t, addr)
	if err := verifyWithFerry(t, addr, pub); err != nil {
		t.Fatalf("verify from the referrer alone: %v", err)
	}
	if out, err := cosignEnv(t, work, []string{"COSIGN_EXPERIMENTAL=1"}, "verify", "--key", pub, "--insecure-ignore-tlog=true",
		"--allow-http-registry", "--experimental-oci11", ref); err != nil {
		t.Fatalf("cosign verify --experimental-oci11 of ferry's referrer signature: %v\n%s", err, out)
	}
	// The referrer travels to a stick and verifies there.
	src, d, err := bundles.OpenSource(t.Context(), addr, bundles.Options{})
	if err != nil {
		t.Fatal(err)
	}
	stick, _ := bundles.ParseAddress(filepath.Join(work, "stick.tar"))
	if _, err := bundles.Copy(t.Context(), src, d, stick, bundles.Options{}); err != nil {
		t.Fatal(err)
	}
	src.Close()
	if err := verifyWithFerry(t, stick, pub); err != nil {
		t.Fatalf("referrer signature lost on the way to the stick: %v", err)
	}

	// cosign, oci-1-1 mode only, on another bundle.
	addr2, ref2 := pushed(t, "interop/cosign-referrers")
	prefix := filepath.Join(work, "cosign")
	if out, err := cosign(t, work, "generate-key-pair", "--output-key-prefix", prefix); err != nil {
		t.Fatalf("cosign generate-key-pair: %v\n%s", err, out)
	}
	// cosign gates the oci-1-1 mode behind COSIGN_EXPERIMENTAL.
	if out, err := cosignEnv(t, work, []string{"COSIGN_EXPERIMENTAL=1"}, "sign", "--key", prefix+".key", "--tlog-upload=false", "--allow-http-registry", "--yes",
		"--registry-referrers-mode=oci-1-1", ref2); err != nil {
		t.Fatalf("cosign sign (oci-1-1): %v\n%s", err, out)
	}
	repo, _ := bundles.Options{}.Repository(addr2)
	d2, _ := repo.Resolve(t.Context(), addr2.Ref.Reference)
	if _, err := repo.Resolve(t.Context(), bundles.SignatureTag(d2)); err == nil {
		t.Fatal("cosign in oci-1-1 mode wrote a .sig tag; the test would not prove referrers are read")
	}
	if err := verifyWithFerry(t, addr2, prefix+".pub"); err != nil {
		t.Fatalf("ferry refused cosign's referrer signature: %v", err)
	}
}

// TestCosignVerifiesFerryKeylessSignature: a keyless signature (certificate, chain and a
// transparency-log entry from a CA and log of the test's own) verifies in Ferry with a
// keyless policy and in the real cosign with the same trusted root, offline.
func TestCosignVerifiesFerryKeylessSignature(t *testing.T) {
	const subject = "https://github.com/example/site/.github/workflows/release.yml@refs/heads/main"
	const issuer = "https://token.actions.githubusercontent.com"
	work := t.TempDir()
	addr, ref := pushed(t, "interop/keyless")
	ss := verifytest.NewSigstore(t)
	root := filepath.Join(work, "trusted_root.json")
	os.WriteFile(root, ss.TrustedRoot, 0o644)
	target, desc, err := bundles.OpenTarget(t.Context(), addr, bundles.Options{})
	if err != nil {
		t.Fatal(err)
	}
	payload := bundles.NewPayload(addr.Ref.Registry+"/"+addr.Ref.Repository, desc.Digest)
	when := time.Now().Add(-30 * 24 * time.Hour)
	b64, ann := ss.Sign(t, payload, subject, issuer, when, when.Add(time.Minute))
	if _, err := bundles.AppendSignatureWith(t.Context(), target, desc, payload, b64, ann); err != nil {
		t.Fatal(err)
	}
	policyFile := filepath.Join(work, "policy.yaml")
	os.WriteFile(policyFile, []byte("apiVersion: ferry.dev/v1\nkind: TrustPolicy\nkeyless:\n  trustedRoot: trusted_root.json\n  identities:\n    - issuer: "+issuer+"\n      subject: "+subject+"\n"), 0o644)
	policy, err := verify.LoadPolicy(policyFile)
	if err != nil {
		t.Fatal(err)
	}
	src, d, err := bundles.OpenSource(t.Context(), addr, bundles.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if _, err := verify.Bundle(t.Context(), src, d, policy); err != nil {
		t.Fatalf("ferry keyless verify: %v", err)
	}
	out, err := cosign(t, work, "verify", "--certificate-identity", subject, "--certificate-oidc-issuer", issuer,
		"--trusted-root", root, "--insecure-ignore-sct", "--allow-http-registry", ref)
	if err != nil {
		t.Fatalf("cosign verify of ferry's keyless signature: %v\n%s", err, out)
	}
	if out, err := cosign(t, work, "verify", "--certificate-identity", "https://github.com/attacker/x", "--certificate-oidc-issuer", issuer,
		"--trusted-root", root, "--insecure-ignore-sct", "--allow-http-registry", ref); err == nil {
		t.Fatalf("cosign accepted another identity:\n%s", out)
	}
}
