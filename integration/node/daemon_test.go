package node

import (
	"archive/tar"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/daemon"
	"github.com/ferrygitops/ferry/store"
)

func configMapData(t *testing.T, ns string) map[string]string {
	t.Helper()
	cs, err := kubernetes.NewForConfig(tb.REST)
	if err != nil {
		t.Fatal(err)
	}
	cm, err := cs.CoreV1().ConfigMaps(ns).Get(t.Context(), "site", metav1.GetOptions{})
	if err != nil {
		return nil
	}
	return cm.Data
}

// TestUSBStick: a stick with a signed bundle is verified, applied and reported healthy, with
// the node's variables substituted; junk, a half-copied archive and a tampered copy on the
// stick leave the running revision alone; a revision whose Deployment never becomes Ready is
// rolled back by itself; the stick is never written to.
func TestUSBStick(t *testing.T) {
	s := newSite(t, "usb-site")
	media := filepath.Join(s.dir, "media")
	stick := filepath.Join(media, "usb0")
	os.MkdirAll(stick, 0o755)
	// The site's link is down at first: the webhook receiver answers 503 until the end.
	hook := newReceiver(t)
	s.writeConfig(t, fmt.Sprintf("  - name: usb\n    usb: {paths: [%s], interval: 300ms}\nwebhook: {url: %q, secret: %q}\n", media, hook.srv.URL, hookSecret))
	c := s.start(t)

	s.ship(t, 1, false, filepath.Join(stick, "usb-site-1.tar"))
	st := s.waitStatus(t, c, "revision 1 healthy", 90*time.Second, func(b daemon.BundleStatus) bool {
		return b.Revision == 1 && b.State == store.StateHealthy
	})
	if d := configMapData(t, s.ns); d["revision"] != "1" || d["site"] != "north-7" {
		t.Fatalf("cluster holds %v", d)
	}
	t.Logf("status: %+v", st)

	// Junk, a half-copied archive that keeps growing, and a tampered copy of revision 2.
	os.WriteFile(filepath.Join(stick, "junk.tar"), bytes.Repeat([]byte("junk"), 1000), 0o644)
	half, _ := os.Create(filepath.Join(stick, "copying.tar"))
	defer half.Close()
	s.ship(t, 2, false, filepath.Join(s.dir, "rev2.tar"))
	good, _ := os.ReadFile(filepath.Join(s.dir, "rev2.tar"))
	tampered := damageLayers(t, good)
	os.WriteFile(filepath.Join(stick, "tampered.tar"), tampered, 0o644)
	for k := 0; k < 10; k++ { // a slow copy: a few bytes every scan
		half.Write(good[k*10 : k*10+10])
		time.Sleep(100 * time.Millisecond)
	}
	var evs []store.Event
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		c.Do(t.Context(), "GET", "/v1/events", nil, &evs)
		refused := 0
		for _, e := range evs {
			if e.Reason == "Refused" {
				refused++
			}
		}
		if refused >= 2 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	st = s.waitStatus(t, c, "still revision 1", time.Second, func(b daemon.BundleStatus) bool { return true })
	if st.Revision != 1 || st.State != store.StateHealthy || st.Newest != 1 {
		t.Fatalf("bad copies disturbed the node: %+v (events %+v)", st, evs)
	}

	// Revision 3 never becomes Ready: rolled back to 1.
	s.ship(t, 3, true, filepath.Join(stick, "usb-site-3.tar"))
	st = s.waitStatus(t, c, "revision 3 rolled back", 2*time.Minute, func(b daemon.BundleStatus) bool {
		return b.Newest == 3 && b.Revision == 1 && b.Applying == 0 && b.LastError != ""
	})
	if d := configMapData(t, s.ns); d["revision"] != "1" {
		t.Fatalf("after the rollback the cluster holds %v", d)
	}
	t.Logf("after rollback: %+v", st)
	var hist []store.Revision
	if err := c.Do(t.Context(), "GET", "/v1/bundles/usb-site/history", nil, &hist); err != nil {
		t.Fatal(err)
	}
	if len(hist) != 2 || hist[1].Revision != 3 || hist[1].State != store.StateRolledBack {
		t.Fatalf("history %+v", hist)
	}
	// The link comes back: every event the node recorded reaches the receiver, once.
	var all []store.Event
	if err := c.Do(t.Context(), "GET", "/v1/events?limit=1000", nil, &all); err != nil {
		t.Fatal(err)
	}
	hook.up.Store(true)
	got := hook.waitFor(t, all[len(all)-1].Seq, 2*time.Minute) // the notifier backs off up to 64 s by then
	for i, e := range all {
		if i >= len(got) || got[i] != e.Seq {
			t.Fatalf("webhook got %v, the node recorded %d events", got, len(all))
		}
	}

	// Nothing was written to the stick.
	entries, _ := os.ReadDir(stick)
	for _, e := range entries {
		switch e.Name() {
		case "usb-site-1.tar", "usb-site-3.tar", "junk.tar", "copying.tar", "tampered.tar":
		default:
			t.Errorf("the daemon wrote %s to the stick", e.Name())
		}
	}
}

// TestRegistryAndS3Sources: a bundle pushed to the testbed's registry (highest tag in a
// semver range) and one uploaded to its S3 bucket are both picked up and applied.
func TestRegistryAndS3Sources(t *testing.T) {
	reg := newSite(t, "reg-site")
	repo := tb.Registry + "/edge/reg-site"
	reg.ship(t, 1, false, "oci://"+repo+":1.0.1")
	s3 := newSite(t, "s3-site")
	s3.ship(t, 1, false, "s3://"+tb.S3.Bucket+"/sites/s3-site/s3-site-1.0.1.tar")
	creds := filepath.Join(s3.dir, "aws-credentials")
	os.WriteFile(creds, []byte(fmt.Sprintf("[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n", tb.S3.AccessKey, tb.S3.SecretKey)), 0o600)

	// One node, two sources, two trust keys: the policy trusts both sites' keys.
	node := newSite(t, "node")
	pubA, _ := os.ReadFile(filepath.Join(reg.dir, "ci.pub"))
	pubB, _ := os.ReadFile(filepath.Join(s3.dir, "ci.pub"))
	os.WriteFile(filepath.Join(node.dir, "a.pub"), pubA, 0o644)
	os.WriteFile(filepath.Join(node.dir, "b.pub"), pubB, 0o644)
	os.WriteFile(filepath.Join(node.dir, "trust.yaml"), []byte("apiVersion: ferry.dev/v1\nkind: TrustPolicy\nkeys:\n  - {name: a, path: a.pub}\n  - {name: b, path: b.pub}\n"), 0o644)
	node.writeConfig(t, fmt.Sprintf("  - name: mirror\n    registry: {repository: %s, semver: \">=1.0.0\", interval: 500ms}\n"+
		"  - name: bucket\n    s3: {endpoint: %s, region: %s, bucket: %s, prefix: sites/, credentialsFile: %s, interval: 500ms}\n",
		repo, tb.S3.URL, tb.S3.Region, tb.S3.Bucket, creds))
	c := node.start(t)
	for _, s := range []*site{reg, s3} {
		s.waitStatus(t, c, s.bundle+" healthy", 90*time.Second, func(b daemon.BundleStatus) bool {
			return b.Revision == 1 && b.State == store.StateHealthy
		})
	}
	// A newer tag in range, pushed before its signature (CI pushes, then signs): refused while
	// unsigned, and rolled out once the signature arrives, though the tag did not move.
	mem, desc := reg.build(t, 2, false)
	dst, err := remote.NewRepository(repo)
	if err != nil {
		t.Fatal(err)
	}
	dst.PlainHTTP = true
	if err := oras.CopyGraph(t.Context(), mem, dst, desc, oras.DefaultCopyGraphOptions); err != nil {
		t.Fatal(err)
	}
	if err := dst.Tag(t.Context(), desc, "1.0.2"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var events []store.Event
		if err := c.Do(t.Context(), "GET", "/v1/events?limit=1000", nil, &events); err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(events, func(e store.Event) bool {
			return e.Reason == "Refused" && strings.Contains(e.Message, desc.Digest.String()) && strings.Contains(e.Message, "not signed")
		}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the unsigned tag was not refused: %+v", events)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := bundles.Copy(t.Context(), memSource{mem}, desc, mustAddress(t, "oci://"+repo+":1.0.2"), bundles.Options{}); err != nil {
		t.Fatal(err)
	}
	reg.waitStatus(t, c, "registry revision 2", 90*time.Second, func(b daemon.BundleStatus) bool {
		return b.Revision == 2 && b.State == store.StateHealthy
	})
}

func mustAddress(t *testing.T, s string) bundles.Address {
	t.Helper()
	a, err := bundles.ParseAddress(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestSocketIsOwnerOnly: the API socket is mode 0600 in a 0700 directory.
func TestSocketIsOwnerOnly(t *testing.T) {
	s := newSite(t, "sock")
	s.writeConfig(t, fmt.Sprintf("  - name: usb\n    usb: {paths: [%s/media]}\n", s.dir))
	s.start(t)
	sock := filepath.Join(s.dir, "run", "ferry.sock")
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v", fi.Mode())
	}
	di, _ := os.Stat(filepath.Dir(sock))
	if di.Mode().Perm() != 0o700 {
		t.Fatalf("socket directory mode %v", di.Mode())
	}
}

// TestSIGKILLMidApplyConverges: the daemon is killed while it waits for revision 2's health;
// restarted, it finishes the open rollout and the node converges on revision 2.
func TestSIGKILLMidApplyConverges(t *testing.T) {
	s := newSite(t, "kill-site")
	stick := filepath.Join(s.dir, "media", "usb0")
	os.MkdirAll(stick, 0o755)
	s.writeConfig(t, fmt.Sprintf("  - name: usb\n    usb: {paths: [%s/media], interval: 300ms}\n", s.dir))
	run := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"="+s.config)
		var logs bytes.Buffer
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
			if t.Failed() {
				t.Logf("daemon log:\n%s", logs.String())
			}
		})
		return cmd
	}
	c := daemon.NewClient(filepath.Join(s.dir, "run", "ferry.sock"))
	first := run()
	s.ship(t, 1, false, filepath.Join(stick, "kill-site-1.tar"))
	s.waitStatus(t, c, "revision 1 healthy", 90*time.Second, func(b daemon.BundleStatus) bool {
		return b.Revision == 1 && b.State == store.StateHealthy
	})
	// Revision 2 waits for a ConfigMap "gate" to exist: the daemon is killed while it waits.
	s.gate = true
	s.ship(t, 2, false, filepath.Join(stick, "kill-site-2.tar"))
	s.waitStatus(t, c, "revision 2 applying", 60*time.Second, func(b daemon.BundleStatus) bool { return b.Applying == 2 })
	// Kill it once revision 2's objects are in the cluster and it waits for their health.
	for deadline := time.Now().Add(30 * time.Second); configMapData(t, s.ns)["revision"] != "2"; {
		if time.Now().After(deadline) {
			t.Fatal("revision 2's objects never reached the cluster")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	first.Wait()
	cs, _ := kubernetes.NewForConfig(tb.REST)
	gate := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "gate", Namespace: s.ns}}
	if _, err := cs.CoreV1().ConfigMaps(s.ns).Create(t.Context(), gate, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	run()
	s.waitStatus(t, c, "revision 2 healthy after the restart", 90*time.Second, func(b daemon.BundleStatus) bool {
		return b.Revision == 2 && b.State == store.StateHealthy && b.Applying == 0
	})
	if d := configMapData(t, s.ns); d["revision"] != "2" {
		t.Fatalf("cluster holds %v", d)
	}
}

const hookSecret = "a-webhook-secret-of-some-length"

// receiver is a webhook receiver on loopback that refuses deliveries until up, checks
// signatures, and records each event sequence number once.
type receiver struct {
	srv  *httptest.Server
	up   atomic.Bool
	mu   sync.Mutex
	seqs map[uint64]bool
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{seqs: map[uint64]bool{}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !r.up.Load() {
			http.Error(w, "link down", http.StatusServiceUnavailable)
			return
		}
		body, _ := io.ReadAll(req.Body)
		mac := hmac.New(sha256.New, []byte(hookSecret))
		mac.Write(body)
		if req.Header.Get("X-Ferry-Signature") != "sha256="+hex.EncodeToString(mac.Sum(nil)) {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		var batch struct {
			Events []store.Event `json:"events"`
		}
		if err := json.Unmarshal(body, &batch); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		for _, e := range batch.Events {
			r.seqs[e.Seq] = true
		}
		r.mu.Unlock()
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// waitFor waits until every sequence up to last arrived and returns them, sorted.
func (r *receiver) waitFor(t *testing.T, last uint64, timeout time.Duration) []uint64 {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r.mu.Lock()
		var got []uint64
		for s := range r.seqs {
			got = append(got, s)
		}
		r.mu.Unlock()
		slices.Sort(got)
		if len(got) > 0 && got[len(got)-1] >= last || time.Now().After(deadline) {
			return got
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// damageLayers returns a bundle tar with one byte flipped inside every component layer
// (gzip blob), names and sizes kept: every layer, because a layer the node already holds is
// never read again. (Flipping a byte anywhere may land in tar padding and change nothing.)
func damageLayers(t *testing.T, archive []byte) []byte {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(archive))
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	flipped := 0
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(h.Name, "blobs/sha256/") && len(b) > 100 && bytes.HasPrefix(b, []byte{0x1f, 0x8b}) {
			b[len(b)/2] ^= 0xff
			flipped++
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(b)
	}
	if err := tw.Close(); err != nil || flipped == 0 {
		t.Fatalf("damaging the archive: %v (%d layers)", err, flipped)
	}
	return out.Bytes()
}
