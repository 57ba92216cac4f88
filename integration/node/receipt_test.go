package node

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/daemon"
	"github.com/ferrygitops/ferry/receipt"
	"github.com/ferrygitops/ferry/store"
	"github.com/ferrygitops/ferry/verify"
)

// TestSneakernetRoundTrip: headquarters → stick → site → receipt on the stick → headquarters
// → thin stick → site. The stick is laid out as udisks mounts one (/media/USER/LABEL); the
// node writes its signed receipt there (and to S3), rewrites it once the rollout is healthy,
// and admits the thin archive made from it, which leaves out the component layer it holds.
func TestSneakernetRoundTrip(t *testing.T) {
	s := newSite(t, "sneaker")
	media := filepath.Join(s.dir, "media")
	stick := filepath.Join(media, "alice", "SITE STICK")
	os.MkdirAll(stick, 0o755)
	creds := filepath.Join(s.dir, "aws-credentials")
	os.WriteFile(creds, []byte(fmt.Sprintf("[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n", tb.S3.AccessKey, tb.S3.SecretKey)), 0o600)
	s.writeConfig(t, fmt.Sprintf("  - name: usb\n    usb: {paths: [%q], interval: 300ms, receiptDir: receipts}\n"+
		"  - name: bucket\n    s3: {endpoint: %s, region: %s, bucket: %s, prefix: sneaker-in/, credentialsFile: %s, interval: 1s, receiptPrefix: sneaker-receipts}\n"+
		"nodeName: site-7\n", media, tb.S3.URL, tb.S3.Region, tb.S3.Bucket, creds))
	c := s.start(t)

	// Two components: "big" (incompressible, the same in both revisions) and "app".
	big := make([]byte, 384<<10)
	rand.Read(big)
	tree := func(rev uint64) map[string]string {
		return map[string]string{
			"ferry.yaml": fmt.Sprintf("apiVersion: ferry.dev/v1\nkind: Bundle\nmetadata: {name: sneaker}\nspec:\n  version: 1.0.%d\n  components:\n"+
				"    - name: big\n      kustomize: {path: ./big, prune: true}\n"+
				"    - name: app\n      kustomize: {path: ./app, prune: true, dependsOn: [{name: big}]}\n", rev),
			"big/kustomization.yaml": "resources: [ns.yaml, cm.yaml]\n",
			"big/ns.yaml":            "apiVersion: v1\nkind: Namespace\nmetadata: {name: sneaker}\n",
			"big/cm.yaml":            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: big, namespace: sneaker}\ndata: {blob: " + base64.StdEncoding.EncodeToString(big) + "}\n",
			"app/kustomization.yaml": "resources: [cm.yaml]\n",
			"app/cm.yaml":            fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app, namespace: sneaker}\ndata: {revision: \"%d\"}\n", rev),
		}
	}
	hq := filepath.Join(s.dir, "hq")
	publish := func(rev uint64) bundles.Address {
		mem, desc := s.signed(t, rev, tree(rev))
		a, _ := bundles.ParseAddress(fmt.Sprintf("%s/rev%d", hq, rev))
		if _, err := bundles.Copy(t.Context(), memSource{mem}, desc, a, bundles.Options{}); err != nil {
			t.Fatal(err)
		}
		return a
	}
	healthy := func(rev uint64) func(daemon.BundleStatus) bool {
		return func(b daemon.BundleStatus) bool { return b.Revision == rev && b.State == store.StateHealthy }
	}

	// Headquarters → stick → site.
	rev1 := publish(1)
	if _, err := bundles.Mirror(t.Context(), rev1, mustAddress(t, filepath.Join(stick, "sneaker-1.tar")), bundles.Options{StagingDir: t.TempDir()}, bundles.MirrorOptions{}); err != nil {
		t.Fatal(err)
	}
	s.waitStatus(t, c, "revision 1 healthy", 2*time.Minute, healthy(1))

	// The receipt on the stick, trusted by the node's public key, says so.
	nodePub, err := verify.LoadPublicKey(filepath.Join(s.dir, "state", "node.pub"))
	if err != nil {
		t.Fatal(err)
	}
	onStick := filepath.Join(stick, "receipts", "site-7"+receipt.Suffix)
	r1 := waitReceipt(t, onStick, nodePub, func(r *receipt.Receipt) bool {
		return len(r.Bundles) == 1 && r.Bundles[0].Running == 1 && r.Bundles[0].Healthy()
	})
	full, desc1, err := bundles.OpenSource(t.Context(), rev1, bundles.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b1, err := bundles.Open(t.Context(), full, desc1)
	full.Close()
	if err != nil {
		t.Fatal(err)
	}
	bigLayer := b1.Manifest.Layers[0]
	if !r1.Has(bigLayer.Digest) {
		t.Fatalf("the receipt does not list the big layer %s", bigLayer.Digest)
	}
	// The same receipt went to the bucket.
	o := bundles.Options{S3Endpoint: tb.S3.URL, S3Region: tb.S3.Region, S3AccessKey: tb.S3.AccessKey, S3SecretKey: tb.S3.SecretKey}
	var inBucket *receipt.Receipt
	deadline := time.Now().Add(30 * time.Second)
	for inBucket == nil || inBucket.Bundles[0].Running != 1 || !inBucket.Bundles[0].Healthy() {
		if time.Now().After(deadline) {
			t.Fatalf("no healthy receipt in s3://%s/sneaker-receipts: %+v", tb.S3.Bucket, inBucket)
		}
		time.Sleep(300 * time.Millisecond)
		file, ferr := o.GetS3(t.Context(), tb.S3.Bucket, "sneaker-receipts/site-7"+receipt.Suffix, receipt.MaxBytes)
		sig, serr := o.GetS3(t.Context(), tb.S3.Bucket, "sneaker-receipts/site-7"+receipt.SignatureSuffix, receipt.MaxSignatureBytes)
		if ferr == nil && serr == nil {
			inBucket, _ = receipt.Parse("bucket", file, sig, []verify.Key{nodePub})
		}
	}

	// Headquarters → thin stick: revision 2 without what the receipt says the node holds.
	rev2 := publish(2)
	thin := filepath.Join(stick, "sneaker-2.tar")
	if _, err := bundles.Mirror(t.Context(), rev2, mustAddress(t, thin), bundles.Options{StagingDir: t.TempDir()}, bundles.MirrorOptions{Omit: r1.Has}); err != nil {
		t.Fatal(err)
	}
	fullSize, thinSize := dirSize(t, rev2.Path), fileSize(t, thin)
	thinSrc, _, err := bundles.OpenSource(t.Context(), mustAddress(t, thin), bundles.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := thinSrc.Exists(t.Context(), bigLayer); ok {
		t.Fatal("the thin archive carries the layer the node holds")
	}
	thinSrc.Close()
	t.Logf("revision 2: full layout %d bytes, thin archive %d bytes", fullSize, thinSize)
	if thinSize >= fullSize-bigLayer.Size/2 {
		t.Fatalf("thin archive %d bytes, full %d: the %d-byte layer is not left out", thinSize, fullSize, bigLayer.Size)
	}

	// Site: the thin archive is admitted and rolled out; the receipt follows.
	s.waitStatus(t, c, "revision 2 healthy", 2*time.Minute, healthy(2))
	waitReceipt(t, onStick, nodePub, func(r *receipt.Receipt) bool { return r.Bundles[0].Running == 2 && r.Bundles[0].Healthy() })
}

// waitReceipt waits until the receipt at path verifies with key and satisfies cond.
func waitReceipt(t *testing.T, path string, key verify.Key, cond func(*receipt.Receipt) bool) *receipt.Receipt {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		file, ferr := os.ReadFile(path)
		sig, serr := os.ReadFile(path + ".sig")
		if ferr == nil && serr == nil {
			r, err := receipt.Parse(path, file, sig, []verify.Key{key})
			if err == nil && cond(r) {
				return r
			}
			last = err
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("no receipt at %s as wanted in 30s (last error %v)", path, last)
	return nil
}

func fileSize(t *testing.T, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func dirSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n
}
