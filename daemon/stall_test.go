package daemon

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
	"unsafe"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/memory"

	"github.com/ferrygitops/ferry/bundler/bundlertest"
	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/store"
)

// stuckReads makes reads of the files it is given block in the kernel, as on a USB stick that
// stopped answering, until release: fanotify permission events that nobody answers. It needs
// CAP_SYS_ADMIN (the daemon's tests run as root); without it the test fails, never skips.
type stuckReads struct{ fd int }

func newStuckReads(t *testing.T) *stuckReads {
	t.Helper()
	fd, err := unix.FanotifyInit(unix.FAN_CLASS_CONTENT|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK, unix.O_RDONLY)
	if err != nil {
		t.Fatalf("fanotify, which makes a read block as on a failing stick, needs CAP_SYS_ADMIN (run the tests as root, as the testbed machine does): %v", err)
	}
	s := &stuckReads{fd: fd}
	t.Cleanup(s.release)
	return s
}

// block makes every read of path from a file opened from now on block.
func (s *stuckReads) block(t *testing.T, path string) {
	t.Helper()
	if err := unix.FanotifyMark(s.fd, unix.FAN_MARK_ADD, unix.FAN_ACCESS_PERM, unix.AT_FDCWD, path); err != nil {
		t.Fatal(err)
	}
}

// blocked counts the reads that blocked since the last call, and leaves them blocked.
func (s *stuckReads) blocked(t *testing.T) int {
	t.Helper()
	size := int(unsafe.Sizeof(unix.FanotifyEventMetadata{}))
	buf := make([]byte, 64*size)
	count := 0
	for {
		n, err := unix.Read(s.fd, buf)
		if errors.Is(err, unix.EAGAIN) {
			return count
		}
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off+size <= n; {
			ev := (*unix.FanotifyEventMetadata)(unsafe.Pointer(&buf[off]))
			unix.Close(int(ev.Fd)) // the event holds the file open for an answer never given
			count++
			if ev.Event_len == 0 {
				break
			}
			off += int(ev.Event_len)
		}
	}
}

// waitBlocked waits until a read is blocked, and leaves it blocked.
func (s *stuckReads) waitBlocked(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for s.blocked(t) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no read blocked within 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// release lets every blocked read go on (the kernel allows what nobody answered).
func (s *stuckReads) release() {
	if s.fd >= 0 {
		unix.Close(s.fd)
		s.fd = -1
	}
}

// writeTrust makes a signing key and writes the trust policy file of a node that trusts it.
func writeTrust(t *testing.T) (keyPair, string) {
	t.Helper()
	k, pubPEM := quickKey(t)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "k.pub"), pubPEM, 0o644)
	policy := filepath.Join(dir, "trust.yaml")
	os.WriteFile(policy, []byte("apiVersion: ferry.dev/v1\nkind: TrustPolicy\nkeys:\n  - name: ci\n    path: k.pub\n"), 0o644)
	return k, policy
}

func stickBundle(t *testing.T, k keyPair, dir, name string) (imageLayer string) {
	t.Helper()
	ctx := t.Context()
	mem := memory.New()
	push := func(mediaType string, b []byte) ocispec.Descriptor {
		d := content.NewDescriptorFromBytes(mediaType, b)
		if err := mem.Push(ctx, d, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		return d
	}
	layerBytes := make([]byte, 256<<10)
	rand.Read(layerBytes)
	layer := push(ocispec.MediaTypeImageLayerGzip, layerBytes)
	man := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Layers: []ocispec.Descriptor{layer},
		Config: push(ocispec.MediaTypeImageConfig, []byte(`{"architecture":"amd64","os":"linux"}`))}
	man.SchemaVersion = 2
	mb, _ := json.Marshal(man)
	image := push(ocispec.MediaTypeImageManifest, mb)

	tree := bundlertest.WriteTree(t, map[string]string{"kustomization.yaml": "resources: []\n"})
	var comp bytes.Buffer
	if err := bundles.PackDir(tree, &comp); err != nil {
		t.Fatal(err)
	}
	m := &bundles.Metadata{
		SchemaVersion: bundles.SchemaVersion, Name: name, Version: "1.0.0", Revision: 1,
		Created:    time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC),
		Components: []bundles.Component{{Name: "app", Type: "kustomize", Kustomize: &bundles.KustomizeSpec{Path: "."}}},
		Images:     []bundles.Image{{Name: "registry.local/app:1", Descriptor: image}},
	}
	desc, err := bundles.Pack(ctx, mem, m, [][]byte{comp.Bytes()})
	if err != nil {
		t.Fatal(err)
	}
	sign(t, mem, desc, k)
	dst, err := bundles.ParseAddress(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bundles.Copy(ctx, memSource{mem}, desc, dst, bundles.Options{}); err != nil {
		t.Fatal(err)
	}
	imageLayer = filepath.Join(dir, "blobs", "sha256", layer.Digest.Encoded())
	if _, err := os.Stat(imageLayer); err != nil {
		t.Fatalf("the layout lacks the image layer: %v", err)
	}
	return imageLayer
}

// testDaemon is a daemon with the given sources, its store in a temporary directory and its
// cluster out of reach (its reconcile loops wait for the API server, as after a power cut).
func testDaemon(t *testing.T, policy string, sources ...SourceConfig) *Daemon {
	t.Helper()
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
users: [{name: u, user: {token: x}}]
`), 0o600)
	cfg := &Config{StateDir: filepath.Join(dir, "state"), Kubeconfig: kubeconfig, Trust: policy,
		Socket: filepath.Join(dir, "run", "ferry.sock"), MetricsAddress: "off", ImagesAddress: "off",
		Namespace: "default", Retention: 10, SpaceMargin: "1", Sources: sources}
	d, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func usbConfig(media string, stall time.Duration) SourceConfig {
	return SourceConfig{Name: "usb", USB: &USBSource{Paths: []string{media},
		Interval: Duration{50 * time.Millisecond}, StallTimeout: Duration{stall}}}
}

// running runs d until the test stops it with stop, which fails the test unless Run returns
// within 5 seconds.
// running runs d until the test ends (or stop), once it serves its API.
func running(t *testing.T, d *Daemon) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	ready := make(chan struct{})
	d.opts.Ready = func() { close(ready) }
	errc := make(chan error, 1)
	go func() { errc <- d.Run(ctx) }()
	select {
	case <-ready:
	case err := <-errc:
		cancel()
		t.Fatalf("daemon stopped: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("daemon not ready in 30s")
	}
	stopped := false
	stop = func() {
		t.Helper()
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return within 5s of its context being cancelled")
		}
	}
	t.Cleanup(stop)
	return stop
}

// waitAdmitted waits until the store holds a revision of bundle name.
func waitAdmitted(t *testing.T, st *store.Store, name string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, err := st.GetBundle(name); err == nil && b.Newest > 0 {
			return
		}
		if time.Now().After(deadline) {
			evs, _ := st.Events(0, 100)
			t.Fatalf("bundle %s not admitted within 30s; events: %+v", name, evs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// refusals are the Refused events whose message holds s.
func refusals(t *testing.T, st *store.Store, s string) []store.Event {
	t.Helper()
	evs, err := st.Events(0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []store.Event
	for _, e := range evs {
		if e.Reason == "Refused" && strings.Contains(e.Message, s) {
			out = append(out, e)
		}
	}
	return out
}

// putStick makes a stick appear at media/name at once, as a mount does, holding a layout
// of bundle bundleName; it returns the image layer's file on it.
func putStick(t *testing.T, k keyPair, media, name, bundleName string) string {
	t.Helper()
	staging := filepath.Join(t.TempDir(), name)
	layer := stickBundle(t, k, filepath.Join(staging, "bundle"), bundleName)
	if err := os.Rename(staging, filepath.Join(media, name)); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(media, name, "bundle", "blobs", "sha256", filepath.Base(layer))
}

// A stick whose reads stop answering in the middle of an admission (the store holding its
// lock, copying) fails that admission after the deadline, with an event that names the file:
// the next stick is admitted, the stuck one is not read again while its read is stuck, and
// is admitted once it answers again.
func TestStuckStickDoesNotStopTheNext(t *testing.T) {
	stuck := newStuckReads(t)
	k, policy := writeTrust(t)
	media := t.TempDir()
	badLayer := putStick(t, k, media, "usb0", "bad")
	stuck.block(t, badLayer)
	d := testDaemon(t, policy, usbConfig(media, 300*time.Millisecond))
	stop := running(t, d)

	deadline := time.Now().Add(30 * time.Second)
	for len(refusals(t, d.st, "stopped answering")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no Refused event for the stick that stopped answering within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	ev := refusals(t, d.st, "stopped answering")[0]
	if !strings.Contains(ev.Message, badLayer) {
		t.Errorf("the event does not name the file that stopped answering: %s", ev.Message)
	}

	putStick(t, k, media, "usb1", "good")
	waitAdmitted(t, d.st, "good")
	if b, _ := d.st.GetBundle("bad"); b.Newest != 0 {
		t.Fatal("the stuck stick's bundle was admitted")
	}
	if n := len(refusals(t, d.st, "usb0")); n != 1 {
		t.Errorf("%d Refused events for the stuck stick, want 1", n)
	}
	if n := stuck.blocked(t); n != 1 {
		t.Errorf("%d reads of the stuck file blocked, want 1: it was read again while its first read was stuck", n)
	}

	stuck.release() // the stick answers again
	waitAdmitted(t, d.st, "bad")
	stop()
}

// Shutdown does not wait on a read that is stuck in the kernel with a long deadline: Run
// returns within seconds, and the admission it was in has let go of the store.
func TestRunReturnsWhileAStickIsStuck(t *testing.T) {
	stuck := newStuckReads(t)
	k, policy := writeTrust(t)
	media := t.TempDir()
	stuck.block(t, putStick(t, k, media, "usb0", "bad"))
	d := testDaemon(t, policy, usbConfig(media, time.Hour))
	stop := running(t, d)
	stuck.waitBlocked(t)
	stop()

	other := memory.New()
	desc := makeBundle(t, other, "other", 1, "x")
	sign(t, other, desc, k)
	done := make(chan error, 1)
	go func() {
		_, err := Ingest(context.Background(), d.st, memSource{other}, desc, k.policy, "test")
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the store is still held by the stuck admission")
	}
}

// hungSource is a source whose poll never returns, whatever its context says: a call stuck in
// the kernel.
type hungSource struct{ release <-chan struct{} }

func (h hungSource) poll(context.Context) ([]candidate, error) {
	<-h.release
	return nil, nil
}

func (hungSource) interval() time.Duration { return time.Millisecond }

// A source whose poll never returns stops neither the other sources nor shutdown.
func TestRunReturnsWhileASourceHangs(t *testing.T) {
	k, policy := writeTrust(t)
	media := t.TempDir()
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	orig := sourceOf
	t.Cleanup(func() { sourceOf = orig })
	sourceOf = func(c SourceConfig) source {
		if c.Name == "hung" {
			return hungSource{release}
		}
		return orig(c)
	}
	d := testDaemon(t, policy, SourceConfig{Name: "hung", USB: &USBSource{Paths: []string{"/nonexistent"}}}, usbConfig(media, time.Minute))
	stop := running(t, d)
	putStick(t, k, media, "usb0", "good")
	waitAdmitted(t, d.st, "good")
	stop()
}

// The scan of a stick whose directory listing hangs reports it once, naming it, and finds the
// other sticks; later scans leave it out at once, without another stuck call, until the
// stuck listing returns.
func TestScanLeavesOutAStuckStick(t *testing.T) {
	stuck := newStuckReads(t)
	media := t.TempDir()
	bad, good := filepath.Join(media, "usb0"), filepath.Join(media, "usb1")
	os.MkdirAll(bad, 0o755)
	os.MkdirAll(good, 0o755)
	os.WriteFile(filepath.Join(bad, "site.tar"), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(good, "site.tar"), []byte("x"), 0o644)
	if err := unix.FanotifyMark(stuck.fd, unix.FAN_MARK_ADD, unix.FAN_ACCESS_PERM|unix.FAN_ONDIR, unix.AT_FDCWD, bad); err != nil {
		t.Fatal(err)
	}
	u := newSource(usbConfig(media, 200*time.Millisecond)).(*usbSource)
	scan := func() ([]candidate, error) {
		t.Helper()
		var (
			cands []candidate
			err   error
		)
		done := make(chan struct{})
		go func() { defer close(done); cands, err = u.poll(t.Context()) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("a scan is still blocked after 10s")
		}
		return cands, err
	}
	_, err := scan()
	if !errors.Is(err, bundles.ErrStalled) || !strings.Contains(err.Error(), bad) {
		t.Fatalf("first scan: %v, want ErrStalled naming %s", err, bad)
	}
	cands, err := scan()
	if err != nil {
		t.Errorf("second scan: %v, want the stuck stick left out quietly", err)
	}
	if len(cands) != 1 || cands[0].addr.Path != filepath.Join(good, "site.tar") || cands[0].addr.Kind != bundles.KindTar {
		t.Errorf("second scan offered %+v, want the other stick's archive", cands)
	}
	if n := stuck.blocked(t); n != 1 {
		t.Errorf("%d listings of the stuck stick blocked, want 1", n)
	}
	stuck.release()
	deadline := time.Now().Add(10 * time.Second)
	for {
		scan()
		if _, ok := u.seen[filepath.Join(bad, "site.tar")]; ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the stick is still left out 10s after its listing returned")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// What a scan offers: stable archives and layouts, down to four directories below the mount
// point; nothing hidden, nothing through a symlink, nothing still changing.
func TestUSBScanOffers(t *testing.T) {
	media := t.TempDir()
	put := func(rel string) string {
		p := filepath.Join(media, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte("x"), 0o644)
		return p
	}
	put("u/usb1/layout/oci-layout")
	want := map[string]bundles.Kind{
		put("usb0/site.tar"):                  bundles.KindTar,
		put("u/usb1/a/b/deep.tar"):            bundles.KindTar,
		put("a/b/c/d/deepest.tar"):            bundles.KindTar,
		filepath.Join(media, "u/usb1/layout"): bundles.KindLayout,
	}
	put("u/usb1/layout/inside.tar") // a layout is a candidate as a whole
	put("a/b/c/d/e/too-deep.tar")
	put("usb0/.hidden.tar")
	put("usb0/.trash/site.tar")
	put("usb0/notes.txt")
	os.Symlink(filepath.Join(media, "usb0"), filepath.Join(media, "link"))
	os.Symlink(filepath.Join(media, "usb0/site.tar"), filepath.Join(media, "usb0/link.tar"))
	u := newSource(usbConfig(media, time.Minute)).(*usbSource)
	if cands, err := u.poll(t.Context()); err != nil || len(cands) != 0 {
		t.Fatalf("first scan: %v %v, want nothing yet (not known to be stable)", cands, err)
	}
	changing := put("usb0/copying.tar")
	os.WriteFile(changing, []byte("xx"), 0o644)
	cands, err := u.poll(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bundles.Kind{}
	for _, c := range cands {
		got[c.addr.Path] = c.addr.Kind
		if c.opts.StallTimeout != time.Minute {
			t.Errorf("%s: read with a stall timeout of %s, want the source's", c.addr.Path, c.opts.StallTimeout)
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("offered %v, want %v", got, want)
	}
}
