package node

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content/memory"

	"github.com/ferrygitops/ferry/bundler"
	"github.com/ferrygitops/ferry/bundler/bundlertest"
	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/daemon"
	"github.com/ferrygitops/ferry/daemon/images"
	"github.com/ferrygitops/ferry/integration/testbed"
	"github.com/ferrygitops/ferry/store"
)

// pushImage pushes a runnable image (testbed.PushImage) and fails the test on error.
func pushImage(t *testing.T, im testbed.Image) ocispec.Descriptor {
	t.Helper()
	d, err := tb.PushImage(t.Context(), im)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func deleteFromRegistry(t *testing.T, repo string, d ocispec.Descriptor) {
	t.Helper()
	if err := tb.DeleteImage(t.Context(), repo, d); err != nil {
		t.Fatalf("delete %s@%s from the testbed registry: %v", repo, d.Digest, err)
	}
}

// shipImages builds and signs revision rev of a bundle whose Deployment runs web and which
// also carries include, and exports it to the stick; without carry, it carries no image.
func (s *site) shipImages(t *testing.T, rev uint64, fail, carry bool, web string, include []string, to string) ocispec.Descriptor {
	t.Helper()
	labels := "app: web"
	if fail {
		labels += ", " + testbed.FailLabel + ": \"true\""
	}
	images := ""
	if carry {
		images = "  images: {carry: true, include: [" + strings.Join(include, ", ") + "]}\n"
	}
	dir := bundlertest.WriteTree(t, map[string]string{
		"ferry.yaml": fmt.Sprintf("apiVersion: ferry.dev/v1\nkind: Bundle\nmetadata: {name: %s}\nspec:\n  version: 1.0.%d\n"+
			"%s  components:\n"+
			"    - name: app\n      kustomize: {path: ./app, prune: true, wait: true, timeout: 20s}\n", s.bundle, rev, images),
		"app/ns.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: " + s.ns + "}\n",
		"app/deploy.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: " + s.ns + "}\nspec:\n  replicas: 1\n" +
			"  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {" + labels + "}}\n    spec: {containers: [{name: web, image: " + web + "}]}\n",
	})
	mem := memSource{memory.New()}
	res, err := bundler.Build(t.Context(), mem.Store, bundler.Options{Dir: dir, AllowDirty: true, Revision: rev, Created: time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := bundler.LoadPrivateKey(s.key, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bundler.Sign(t.Context(), mem.Store, res.Descriptor, signer, s.bundle); err != nil {
		t.Fatal(err)
	}
	dst, _ := bundles.ParseAddress(to)
	if _, err := bundles.Copy(t.Context(), mem, res.Descriptor, dst, bundles.Options{}); err != nil {
		t.Fatal(err)
	}
	return res.Descriptor
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// ctr runs the testbed's ctr and returns its combined output, failing the test on error.
func ctr(t *testing.T, args ...string) string {
	t.Helper()
	out, err := tb.Ctr(t.Context(), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// imageDigest is the digest containerd records for an image it pulled.
func imageDigest(t *testing.T, ref string) string {
	t.Helper()
	for _, line := range strings.Split(ctr(t, "images", "ls"), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == ref {
			return f[2]
		}
	}
	t.Fatalf("containerd has no image %s:\n%s", ref, ctr(t, "images", "ls"))
	return ""
}

// TestImagesServedToContainerd: a bundle with two images (one an index over two platforms)
// comes from a stick; with the hosts directory Ferry writes, the real containerd pulls both
// by tag and by digest from the node's endpoint alone (the registry they came from no longer
// has them), with the digests CI resolved; revision 2 moves a tag and fails, the rollback
// moves it back and containerd pulls the old image again, still from the node; the
// endpoint refuses a push; skopeo and oras read it too.
func TestImagesServedToContainerd(t *testing.T) {
	s := newSite(t, "pics")
	media := filepath.Join(s.dir, "media")
	stick := filepath.Join(media, "usb0")
	os.MkdirAll(stick, 0o755)
	s.images = freeAddr(t)
	s.writeConfig(t, fmt.Sprintf("  - name: usb\n    usb: {paths: [%s], interval: 300ms}\n", media))
	c := s.start(t)

	web := tb.Registry + "/pics/web:1.0"
	multi := tb.Registry + "/pics/multi:2"
	web1 := pushImage(t, testbed.Image{Repository: "pics/web", Tag: "1.0", LayerBytes: []int64{256 << 10, 64 << 10}, Seed: 1})
	multiRoot := pushImage(t, testbed.Image{Repository: "pics/multi", Tag: "2", LayerBytes: []int64{128 << 10}, Archs: []string{"amd64", "arm64"}, Seed: 2})
	s.shipImages(t, 1, false, true, web, []string{multi}, filepath.Join(stick, "pics-1.tar"))
	s.waitStatus(t, c, "revision 1", time.Minute, func(b daemon.BundleStatus) bool { return b.Revision == 1 && b.State == store.StateHealthy })
	// From here on the upstream registry has neither image: only the node can serve them.
	deleteFromRegistry(t, "pics/web", web1)
	deleteFromRegistry(t, "pics/multi", multiRoot)

	// containerd's configuration, as ferry images configure writes it.
	var held []images.Held
	if err := c.Do(t.Context(), "GET", "/v1/images", nil, &held); err != nil {
		t.Fatal(err)
	}
	if len(held) != 2 || !held[0].Served || !held[1].Served {
		t.Fatalf("held images: %+v", held)
	}
	hostsDir := filepath.Join(s.dir, "certs.d")
	changes, err := images.PlanMirror(images.MirrorConfig{Endpoint: s.images, HostsDir: hostsDir, Hosts: images.Registries(held)})
	if err != nil {
		t.Fatal(err)
	}
	if err := images.ApplyMirror(changes); err != nil {
		t.Fatal(err)
	}
	pull := func(ref string, extra ...string) string {
		t.Helper()
		args := append([]string{"images", "pull", "--hosts-dir", hostsDir, "--snapshotter", "native"}, extra...)
		return ctr(t, append(args, ref)...)
	}
	pull(web)
	pull(multi)
	if got := imageDigest(t, web); got != web1.Digest.String() {
		t.Errorf("containerd pulled %s as %s, CI resolved %s", web, got, web1.Digest)
	}
	if got := imageDigest(t, multi); got != multiRoot.Digest.String() {
		t.Errorf("containerd pulled %s as %s, CI resolved %s", multi, got, multiRoot.Digest)
	}
	// By digest, and every platform of the index.
	ctr(t, "images", "rm", "--sync", web, multi) // and their content: nothing left from the first pulls
	pull(strings.TrimSuffix(web, ":1.0") + "@" + web1.Digest.String())
	pull(multi, "--all-platforms")

	// Revision 2 moves web's tag to a new image and fails its health check: while it is
	// current the tag is its image; after the rollback, revision 1's again.
	web2 := pushImage(t, testbed.Image{Repository: "pics/web", Tag: "1.0", LayerBytes: []int64{200 << 10}, Seed: 3})
	s.shipImages(t, 2, true, true, web, nil, filepath.Join(stick, "pics-2.tar"))
	// LastError tells "rolled back" from "admitted, not applying yet", which has the same
	// revisions and no rollout in progress.
	s.waitStatus(t, c, "revision 2 rolled back", 2*time.Minute, func(b daemon.BundleStatus) bool {
		return b.Revision == 1 && b.Newest == 2 && b.Applying == 0 && b.LastError != ""
	})
	deleteFromRegistry(t, "pics/web", web2)
	ctr(t, "images", "rm", "--sync", web)
	pull(web)
	if got := imageDigest(t, web); got != web1.Digest.String() {
		t.Errorf("after the rollback containerd pulled %s as %s, want revision 1's %s", web, got, web1.Digest)
	}
	// Revision 2's image is still held (retention keeps it) and served by digest.
	pull(strings.TrimSuffix(web, ":1.0") + "@" + web2.Digest.String())

	// Other clients read the endpoint.
	// The path alone (one registry holds it here), as skopeo cannot write a host with a port
	// inside a repository name.
	skopeo, err := exec.Command("skopeo", "inspect", "--raw", "--tls-verify=false", "docker://"+s.images+"/pics/web:1.0").CombinedOutput()
	if err != nil || digest.FromBytes(skopeo) != web1.Digest {
		t.Errorf("skopeo inspect: %v\n%s", err, skopeo)
	}
	orasOut, err := exec.Command(tb.Bin("oras"), "manifest", "fetch", "--plain-http", "--descriptor", s.images+"/pics/multi:2").CombinedOutput()
	if err != nil || !strings.Contains(string(orasOut), multiRoot.Digest.String()) {
		t.Errorf("oras manifest fetch: %v\n%s", err, orasOut)
	}
	// Nothing writes: a push with oras is refused.
	os.WriteFile(filepath.Join(s.dir, "x.txt"), []byte("x"), 0o644)
	push := exec.Command(tb.Bin("oras"), "push", "--plain-http", s.images+"/pics/web:evil", "x.txt")
	push.Dir = s.dir
	if out, err := push.CombinedOutput(); err == nil {
		t.Errorf("oras push to the node's endpoint succeeded:\n%s", out)
	}
	resp, err := http.Post("http://"+s.images+"/v2/"+tb.Registry+"/pics/web/blobs/uploads/", "application/octet-stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("upload start: %d, want 405", resp.StatusCode)
	}
	// Revision 3 runs an image neither it nor the node has: its health check fails naming
	// the image (kwok's fail label stands for the Pod's ImagePullBackOff).
	absent := tb.Registry + "/pics/absent:3"
	s.shipImages(t, 3, true, false, absent, nil, filepath.Join(stick, "pics-3.tar"))
	var notes []string
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
		var revs []store.Revision
		if err := c.Do(t.Context(), "GET", "/v1/bundles/pics/history", nil, &revs); err != nil {
			t.Fatal(err)
		}
		notes = nil
		for _, r := range revs {
			if r.Revision == 3 && r.State == store.StateRolledBack {
				for _, h := range r.History {
					notes = append(notes, h.Note)
				}
			}
		}
		if notes != nil {
			break
		}
	}
	if !strings.Contains(strings.Join(notes, "\n"), "images not on this node: "+absent) {
		t.Errorf("revision 3's failure does not name the missing image:\n%s", strings.Join(notes, "\n"))
	}

	// A tag no kept revision carries is not served.
	out, err := tb.Ctr(t.Context(), "images", "pull", "--hosts-dir", hostsDir, "--snapshotter", "native", tb.Registry+"/pics/web:9.9").CombinedOutput()
	if err == nil {
		t.Errorf("a tag no revision carries was pulled:\n%s", out)
	}
}
