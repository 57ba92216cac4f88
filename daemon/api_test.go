package daemon

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"oras.land/oras-go/v2/content/memory"

	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/store"
	"github.com/ferrygitops/ferry/verify"
)

// apiNode is a daemon run in this process, its API served on a socket, with no API server
// behind it (127.0.0.1:1): bundles are admitted and never applied.
type apiNode struct {
	dir    string
	key    keyPair
	client *Client
}

func startAPINode(t *testing.T) *apiNode {
	t.Helper()
	k, policy := writeTrust(t)
	d := testDaemon(t, policy)
	running(t, d)
	return &apiNode{dir: t.TempDir(), key: k, client: NewClient(d.cfg.Socket)}
}

// quickKey is a signing key and its public key in cosign's PEM, without newKey's encrypted
// private key file (scrypt takes seconds under -race).
func quickKey(t *testing.T) (keyPair, []byte) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	pub, err := verify.ParsePublicKey("ci.pub", pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	return keyPair{signer: priv, policy: verify.Policy{Keys: []verify.Key{pub}}}, pubPEM
}

// stick writes revision rev of bundle name, signed with k, to a tar file and returns its path.
func (n *apiNode) stick(t *testing.T, name string, rev uint64, k keyPair) string {
	t.Helper()
	src := memory.New()
	desc := makeBundle(t, src, name, rev, fmt.Sprint(rev))
	sign(t, src, desc, k)
	path := filepath.Join(n.dir, fmt.Sprintf("%s-%d.tar", name, rev))
	dst, err := bundles.ParseAddress(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bundles.Copy(t.Context(), memSource{src}, desc, dst, bundles.Options{}); err != nil {
		t.Fatal(err)
	}
	return path
}

// The API's refusals carry a reason the client gives back as the daemon's sentinel, so the
// CLI branches on errors.Is, not on message text: a suspended bundle's reconcile is refused
// (it would do nothing), an untrusted bundle's import, an unknown bundle, and a socket nobody
// answers on.
func TestAPIRefusalsMatchTheirSentinels(t *testing.T) {
	n := startAPINode(t)
	ctx := t.Context()
	var rev store.Revision
	if err := n.client.Do(ctx, http.MethodPost, "/v1/import", map[string]string{"ref": n.stick(t, "site", 1, n.key)}, &rev); err != nil || rev.Revision != 1 {
		t.Fatalf("import: %+v %v", rev, err)
	}

	var out map[string]string
	if err := n.client.Do(ctx, http.MethodPost, "/v1/bundles/site/reconcile", nil, &out); err != nil || out["result"] != "reconcile requested" {
		t.Fatalf("reconcile: %v %v", out, err)
	}
	if err := n.client.Do(ctx, http.MethodPost, "/v1/bundles/site/suspend", nil, &out); err != nil {
		t.Fatal(err)
	}
	err := n.client.Do(ctx, http.MethodPost, "/v1/bundles/site/reconcile", nil, &out)
	var ae *APIError
	if !errors.Is(err, ErrSuspended) || !errors.As(err, &ae) || ae.Status != http.StatusConflict {
		t.Fatalf("reconcile of a suspended bundle: %v (%#v), want a 409 matching ErrSuspended", err, ae)
	}
	for _, want := range []string{`"site" is suspended`, "ferry resume site"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("reconcile of a suspended bundle: %q lacks %q", err, want)
		}
	}
	if err := n.client.Do(ctx, http.MethodPost, "/v1/bundles/site/resume", nil, &out); err != nil {
		t.Fatal(err)
	}
	if err := n.client.Do(ctx, http.MethodPost, "/v1/bundles/site/reconcile", nil, &out); err != nil {
		t.Fatalf("reconcile after resume: %v", err)
	}

	stranger, _ := quickKey(t)
	err = n.client.Do(ctx, http.MethodPost, "/v1/import", map[string]string{"ref": n.stick(t, "site", 2, stranger)}, &rev)
	if !errors.Is(err, verify.ErrUntrusted) || errors.Is(err, ErrSuspended) {
		t.Fatalf("import of a bundle signed by an unknown key: %v, want it to match verify.ErrUntrusted", err)
	}

	if err := n.client.Do(ctx, http.MethodPost, "/v1/bundles/nope/reconcile", nil, &out); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("reconcile of an unknown bundle: %v, want it to match store.ErrNotFound", err)
	}
	if err := n.client.Do(ctx, http.MethodGet, "/v1/bundles/nope/history", nil, nil); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("history of an unknown bundle: %v, want it to match store.ErrNotFound", err)
	}
	// A failed request is not a daemon away.
	if errors.Is(err, ErrUnreachable) {
		t.Fatalf("a daemon's refusal matches ErrUnreachable: %v", err)
	}

	err = NewClient(filepath.Join(n.dir, "nobody.sock")).Do(ctx, http.MethodGet, "/v1/status", nil, nil)
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "nobody.sock") {
		t.Fatalf("a socket nobody listens on: %v, want ErrUnreachable naming the socket", err)
	}
}

// A bundle admitted and never applied has no last change: the JSON says nothing rather than
// year 1.
func TestStatusOfABundleNeverApplied(t *testing.T) {
	n := startAPINode(t)
	if err := n.client.Do(t.Context(), http.MethodPost, "/v1/import", map[string]string{"ref": n.stick(t, "site", 1, n.key)}, nil); err != nil {
		t.Fatal(err)
	}
	var raw []map[string]any
	if err := n.client.Do(t.Context(), http.MethodGet, "/v1/status", nil, &raw); err != nil {
		t.Fatal(err)
	}
	if len(raw) != 1 || raw[0]["revision"] != float64(0) || raw[0]["newest"] != float64(1) {
		t.Fatalf("status %v, want site at no revision, newest 1", raw)
	}
	if v, ok := raw[0]["lastChange"]; ok {
		t.Fatalf("status of a bundle never applied has lastChange %v", v)
	}
}
