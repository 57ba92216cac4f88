// Command demo is what `make demo` runs: one bundle's life on an edge node, with the real
// ferry binary, on the testbed.
//
//	CI side:   generate a signing key, build bundles/examples/edge-site carrying its two
//	           container images (resolved from the testbed's registry standing in for
//	           registry.local), sign it, export it to a tar on a directory that stands for a
//	           USB stick
//	edge side: start `ferry daemon` with the stick's mount point as a source; it verifies the
//	           signature, keeps the revision, applies it and waits for it to be healthy;
//	           a real containerd pulls the example's image through the node's image endpoint
//	           (registry.local does not exist: nothing else could serve it);
//	           a tampered copy on the stick is refused and changes nothing; then a v2 whose
//	           Deployment never becomes Ready arrives, and the daemon rolls back to v1 by
//	           itself; `ferry status` and `ferry history` tell the story
//
// The control plane is real (etcd, kube-apiserver, controller manager, scheduler, a kwok
// node: kwok's testbed Stage keeps pods labelled testbed.ferry.dev/fail unready).
//
//	go run ./integration/demo -ferry bin/ferry [-keep]
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/ferrygitops/ferry/daemon"
	"github.com/ferrygitops/ferry/integration/testbed"
	"github.com/ferrygitops/ferry/store"
)

func main() {
	keep := flag.Bool("keep", false, "leave the testbed and the daemon running until Ctrl-C")
	bin := flag.String("ferry", "bin/ferry", "the ferry binary to run")
	flag.Parse()
	if err := run(*bin, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func step(format string, a ...any) { fmt.Printf("\n==> "+format+"\n", a...) }

type demo struct {
	ctx    context.Context
	ferry  string
	work   string
	socket string
	env    []string
}

// sh runs the ferry binary, prints the command and its output, and returns the output.
func (d *demo) sh(args ...string) (string, error) {
	fmt.Printf("$ ferry %s\n", strings.Join(args, " "))
	cmd := exec.CommandContext(d.ctx, d.ferry, args...)
	cmd.Dir, cmd.Env = d.work, append(os.Environ(), d.env...)
	out, err := cmd.CombinedOutput()
	fmt.Print(indent(string(out)))
	if err != nil {
		return string(out), fmt.Errorf("ferry %s: %w", args[0], err)
	}
	return string(out), nil
}

func indent(s string) string {
	if s == "" {
		return ""
	}
	return "  " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n  ") + "\n"
}

func run(bin string, keep bool) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ferry, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	if _, err := os.Stat(ferry); err != nil {
		return fmt.Errorf("%s: build it first (make build)", bin)
	}
	_, self, _, _ := runtime.Caller(0)
	example := filepath.Join(filepath.Dir(self), "..", "..", "bundles", "examples", "edge-site")

	step("Starting the testbed: etcd, kube-apiserver, controller manager, scheduler, a kwok node, a registry, containerd")
	begin := time.Now()
	tb, err := testbed.Start(ctx, testbed.Options{Services: testbed.Kube | testbed.Registry | testbed.Containerd,
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		return err
	}
	defer func() {
		step("Stopping the testbed")
		if err := tb.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "demo: stop:", err)
		}
	}()
	fmt.Printf("up in %s\n", time.Since(begin).Round(time.Millisecond))
	work := filepath.Join(tb.Dir, "demo")
	stick := filepath.Join(work, "media", "usb0")
	if err := os.MkdirAll(stick, 0o755); err != nil {
		return err
	}
	d := &demo{ctx: ctx, ferry: ferry, work: work, socket: filepath.Join(work, "run", "ferry.sock"),
		env: []string{"COSIGN_PASSWORD=demo", "CI=1"}}

	// ---- CI side ----
	step("CI: the example's images in CI's registry (the testbed's, standing in for registry.local)")
	for _, im := range []testbed.Image{
		{Repository: "web", Tag: "1.0.0", LayerBytes: []int64{8 << 20, 1 << 20}, Seed: 1},
		{Repository: "status", Tag: "1.0", LayerBytes: []int64{2 << 20}, Seed: 2},
	} {
		desc, err := tb.PushImage(ctx, im)
		if err != nil {
			return err
		}
		fmt.Printf("pushed %s/%s:%s %s\n", tb.Registry, im.Repository, im.Tag, desc.Digest)
	}
	// The example, told to carry its images (spec.images), as a site with no registry needs.
	v1 := filepath.Join(work, "edge-site-v1")
	if err := copyTree(example, v1); err != nil {
		return err
	}
	if err := edit(filepath.Join(v1, "ferry.yaml"), "  version: 1.0.0\n", "  version: 1.0.0\n  images: {carry: true}\n"); err != nil {
		return err
	}
	mirror := "registry.local=" + tb.Registry
	d.env = append(d.env, "SOURCE_DATE_EPOCH=1764057600") // the copies are not Git commits
	step("CI: a signing key (cosign's format), the bundle with its images, its signature, a tar on the USB stick")
	if _, err := d.sh("keys", "generate", "--prefix", "ci"); err != nil {
		return err
	}
	if _, err := d.sh("bundle", "build", v1, "--allow-dirty", "--revision", "1", "--to", "dist/v1", "--image-mirror", mirror); err != nil {
		return err
	}
	if _, err := d.sh("bundle", "sign", "dist/v1", "--key", "ci.key"); err != nil {
		return err
	}
	if _, err := d.sh("bundle", "export", "dist/v1", filepath.Join(stick, "edge-site-1.0.0.tar")); err != nil {
		return err
	}

	// ---- Edge side ----
	step("Edge: the node's trust policy and config; the stick's mount point is a source")
	imagesAddr, err := freeAddr()
	if err != nil {
		return err
	}
	trust := "apiVersion: ferry.dev/v1\nkind: TrustPolicy\nkeys:\n  - name: ci\n    path: " + filepath.Join(work, "ci.pub") + "\n"
	config := fmt.Sprintf(`stateDir: %s/state
kubeconfig: %s
trust: %s/trust.yaml
socket: %s
metricsAddress: "off"
imagesAddress: %s
variables: {SITE_ID: north-7}
sources:
  - name: usb
    usb: {paths: [%s/media], interval: 500ms}
`, work, tb.Kubeconfig, work, d.socket, imagesAddr, work)
	for name, body := range map[string]string{"trust.yaml": trust, "config.yaml": config} {
		if err := os.WriteFile(filepath.Join(work, name), []byte(body), 0o600); err != nil {
			return err
		}
	}
	fmt.Print(indent(config))
	if _, err := d.sh("daemon", "--check-config", "--config", "config.yaml"); err != nil {
		return err
	}

	step("Edge: starting ferry daemon (its JSON log goes to %s)", filepath.Join(work, "daemon.log"))
	logf, err := os.Create(filepath.Join(work, "daemon.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	dcmd := exec.Command(ferry, "daemon", "--config", filepath.Join(work, "config.yaml"))
	dcmd.Stdout, dcmd.Stderr = logf, logf
	if err := dcmd.Start(); err != nil {
		return err
	}
	defer func() {
		dcmd.Process.Signal(syscall.SIGTERM)
		dcmd.Wait()
	}()

	step("Edge: the daemon finds the stick, verifies the signature, applies v1 and waits for health")
	begin = time.Now()
	if _, err := d.waitFor("edge-site revision 1 healthy", 3*time.Minute, func(s daemon.BundleStatus) bool {
		return s.Revision == 1 && s.State == store.StateHealthy
	}); err != nil {
		return err
	}
	fmt.Printf("healthy %s after the stick was mounted\n", time.Since(begin).Round(100*time.Millisecond))
	if _, err := d.sh("status", "--socket", d.socket); err != nil {
		return err
	}
	kubectl := func(args ...string) {
		out, _ := exec.CommandContext(ctx, tb.Bin("kubectl"), append([]string{"--kubeconfig", tb.Kubeconfig}, args...)...).CombinedOutput()
		fmt.Printf("$ kubectl %s\n%s", strings.Join(args, " "), indent(string(out)))
	}
	kubectl("-n", "web", "get", "deployment,service,configmap", "-l", "ferry.dev/bundle=edge-site")
	helm := func(args ...string) {
		out, _ := exec.CommandContext(ctx, tb.Bin("helm"), append([]string{"--kubeconfig", tb.Kubeconfig}, args...)...).CombinedOutput()
		fmt.Printf("$ helm %s\n%s", strings.Join(args, " "), indent(string(out)))
	}
	fmt.Println("the status component is a real Helm release, its site taken from the site-vars ConfigMap (valuesFrom):")
	helm("list", "-n", "web")
	helm("get", "values", "web-status", "-n", "web")

	step("Edge: containerd pulls the example's image through the node (registry.local does not exist)")
	hostsDir := filepath.Join(work, "certs.d")
	if _, err := d.sh("images", "list", "--socket", d.socket); err != nil {
		return err
	}
	// On a k3s node: ferry images configure, with k3s's certs.d and registries.yaml.
	if _, err := d.sh("images", "configure", "--config", "config.yaml", "--socket", d.socket, "--hosts-dir", hostsDir, "--k3s-registries", ""); err != nil {
		return err
	}
	ctr := func(args ...string) error {
		fmt.Printf("$ ctr %s\n", strings.Join(args, " "))
		out, err := tb.Ctr(ctx, args...).CombinedOutput()
		fmt.Print(indent(string(out)))
		return err
	}
	if err := ctr("images", "pull", "--hosts-dir", hostsDir, "--snapshotter", "native", "registry.local/web:1.0.0"); err != nil {
		return fmt.Errorf("ctr pull through the node: %w", err)
	}
	if err := ctr("images", "ls", "-q"); err != nil {
		return err
	}

	step("CI: v2 of the bundle, whose Deployment will never become Ready")
	v2 := filepath.Join(work, "edge-site-v2")
	if err := copyTree(v1, v2); err != nil {
		return err
	}
	if err := edit(filepath.Join(v2, "ferry.yaml"), "version: 1.0.0", "version: 1.1.0", "timeout: 5m", "timeout: 30s"); err != nil {
		return err
	}
	if err := edit(filepath.Join(v2, "apps", "web", "deployment.yaml"), "labels: {app: web}\n    spec:", "labels: {app: web, "+testbed.FailLabel+": \"true\"}\n    spec:"); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"bundle", "build", v2, "--allow-dirty", "--revision", "2", "--to", "dist/v2", "--image-mirror", mirror},
		{"bundle", "sign", "dist/v2", "--key", "ci.key"},
		{"bundle", "export", "dist/v2", "edge-site-1.1.0.tar"},
	} {
		if _, err := d.sh(args...); err != nil {
			return err
		}
	}

	step("Edge: a copy of v2 damaged on the way is refused; the running revision is untouched")
	if err := tamper(filepath.Join(work, "edge-site-1.1.0.tar"), filepath.Join(stick, "edge-site-1.1.0-damaged.tar")); err != nil {
		return err
	}
	if err := d.waitEvent("Refused", 30*time.Second); err != nil {
		log, _ := os.ReadFile(filepath.Join(work, "daemon.log"))
		return fmt.Errorf("%w\ndaemon log:\n%s", err, log)
	}
	if _, err := d.sh("events", "--socket", d.socket); err != nil {
		return err
	}
	if _, err := d.sh("status", "--socket", d.socket); err != nil {
		return err
	}
	os.Remove(filepath.Join(stick, "edge-site-1.1.0-damaged.tar"))
	fmt.Println("\nthe good copy of v2 goes on the stick")
	if err := copyFile(filepath.Join(work, "edge-site-1.1.0.tar"), filepath.Join(stick, "edge-site-1.1.0.tar")); err != nil {
		return err
	}

	step("Edge: the daemon applies v2, its health check times out (30s), it rolls back to v1 by itself")
	begin = time.Now()
	if _, err := d.waitFor("revision 2 applying", time.Minute, func(s daemon.BundleStatus) bool { return s.Applying == 2 }); err != nil {
		return err
	}
	fmt.Println("applying revision 2…")
	if _, err := d.waitFor("rolled back to revision 1", 3*time.Minute, func(s daemon.BundleStatus) bool {
		return s.Newest == 2 && s.Revision == 1 && s.Applying == 0 && s.State == store.StateHealthy
	}); err != nil {
		d.sh("events", "--socket", d.socket)
		dcmd.Process.Signal(syscall.SIGTERM)
		dcmd.Wait()
		if st, err := store.Open(filepath.Join(work, "state"), store.Options{}); err == nil {
			b, _ := st.GetBundle("edge-site")
			fmt.Printf("bundle record: %+v txn %+v\n", b, b.Txn)
			st.Close()
		}
		log, _ := os.ReadFile(filepath.Join(work, "daemon.log"))
		return fmt.Errorf("%w\ndaemon log:\n%s", err, log)
	}
	fmt.Printf("back on revision 1 %s after v2 was applied\n", time.Since(begin).Round(100*time.Millisecond))
	if _, err := d.sh("status", "--socket", d.socket); err != nil {
		return err
	}
	if _, err := d.sh("history", "edge-site", "--socket", d.socket); err != nil {
		return err
	}
	kubectl("-n", "web", "get", "deployment", "web", "-o", "jsonpath={.spec.template.metadata.labels}{\"\\n\"}")
	fmt.Println("v2 did not change the status chart or its values: no new Helm revision was made, before or after the rollback")
	helm("history", "web-status", "-n", "web")

	if keep {
		step("Leaving everything up. KUBECONFIG=%s; ferry status --socket %s. Ctrl-C to stop.", tb.Kubeconfig, d.socket)
		<-ctx.Done()
	}
	fmt.Println("\nDemo complete.")
	return nil
}

// waitFor polls the daemon's status until cond holds for edge-site.
func (d *demo) waitFor(what string, timeout time.Duration, cond func(daemon.BundleStatus) bool) (daemon.BundleStatus, error) {
	c := daemon.NewClient(d.socket)
	deadline := time.Now().Add(timeout)
	var last []daemon.BundleStatus
	for time.Now().Before(deadline) {
		last = nil // Unmarshal into old elements would keep fields the new reply omits
		if err := c.Do(d.ctx, "GET", "/v1/status", nil, &last); err == nil {
			for _, s := range last {
				if s.Bundle == "edge-site" && cond(s) {
					return s, nil
				}
			}
		}
		select {
		case <-d.ctx.Done():
			return daemon.BundleStatus{}, d.ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	b, _ := json.Marshal(last)
	return daemon.BundleStatus{}, fmt.Errorf("%s: not within %s (status %s)", what, timeout, b)
}

func (d *demo) waitEvent(reason string, timeout time.Duration) error {
	c := daemon.NewClient(d.socket)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		var evs []store.Event
		if err := c.Do(d.ctx, "GET", "/v1/events?limit=1000", nil, &evs); err == nil {
			for _, e := range evs {
				if e.Reason == reason {
					return nil
				}
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("no %s event within %s", reason, timeout)
}

// tamper rewrites a bundle tar with one byte flipped inside each component layer (gzip
// blobs), the way a bad USB stick damages a file; names and sizes stay the same. (Every
// layer: one the node already holds from v1 is not read again, content addressing makes
// the node's copy the one that counts.)
func tamper(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	var out bytes.Buffer
	tr, tw := tar.NewReader(in), tar.NewWriter(&out)
	flipped := false
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return err
		}
		if strings.Contains(h.Name, "blobs/sha256/") && len(b) > 200 && bytes.HasPrefix(b, []byte{0x1f, 0x8b}) {
			b[len(b)/2] ^= 0xff
			flipped = true
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := tw.Write(b); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if !flipped {
		return errors.New("no component layer found to damage")
	}
	if err := os.WriteFile(to+".part", out.Bytes(), 0o644); err != nil {
		return err
	}
	return os.Rename(to+".part", to)
}

func copyTree(from, to string) error {
	return filepath.WalkDir(from, func(p string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		if e.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o644)
	})
}

// copyFile copies a file the way a careful technician does: to a temporary name, then renamed.
func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	if err := os.WriteFile(to+".part", b, 0o644); err != nil {
		return err
	}
	return os.Rename(to+".part", to)
}

// edit replaces each old string (which must occur) with its new one, in pairs.
func edit(path string, pairs ...string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(b)
	for i := 0; i+1 < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			return fmt.Errorf("%s: %q not found", path, pairs[i])
		}
		s = strings.Replace(s, pairs[i], pairs[i+1], 1)
	}
	return os.WriteFile(path, []byte(s), 0o644)
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
