// Command images measures a bundle carrying large container images through every step, with
// the real ferry binary, and a peer for each step in the same run:
//
//	build   ferry bundle build (carries the image)     oras copy --to-oci-layout of the image
//	push    ferry bundle push (layout → registry)       oras copy --from-oci-layout of the image
//	export  ferry bundle export (layout → tar)          tar -cf of the same layout (GNU tar)
//	upload  ferry bundle upload (layout → tar → S3)     minio-go FPutObject of the same tar
//	verify  ferry bundle verify of the tar               openssl dgst -sha256 of the tar
//	ingest  ferry daemon admits the tar from a stick     openssl dgst -sha256 of the tar
//	pull    ctr images pull through the node's endpoint  ctr images pull from distribution
//
// Peak memory is each process's VmHWM, read from /proc while it runs (a child's getrusage
// maxrss starts from its parent's). The image is LAYERS uncompressed tar layers of random
// bytes, made and pushed to the testbed's registry as a stream (testbed.PushImage).
//
//	go run ./bench/images -ferry bin/ferry -size 2GiB
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/ferrygitops/ferry/bench/measure"
	"github.com/ferrygitops/ferry/daemon"
	"github.com/ferrygitops/ferry/integration/testbed"
)

func main() {
	ferry := flag.String("ferry", "bin/ferry", "the ferry binary to measure")
	size := flag.String("size", "2GiB", "image payload (MiB or GiB)")
	layers := flag.Int("layers", 4, "layers the payload is split into")
	flag.Parse()
	n, err := parseSize(*size)
	if err == nil {
		err = run(context.Background(), *ferry, n, *layers)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseSize(s string) (int64, error) {
	for suffix, mult := range map[string]int64{"GiB": 1 << 30, "MiB": 1 << 20} {
		if v, ok := strings.CutSuffix(s, suffix); ok {
			n, err := strconv.ParseFloat(v, 64)
			return int64(n * float64(mult)), err
		}
	}
	return 0, fmt.Errorf("-size %q: want a number of MiB or GiB", s)
}

type row struct {
	step, what string
	bytes      int64
	took       time.Duration
	peakKiB    int64
}

func run(ctx context.Context, ferry string, size int64, nLayers int) error {
	ferry, err := filepath.Abs(ferry)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "bench-images-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	tb, err := testbed.Start(ctx, testbed.Options{Services: testbed.Kube | testbed.Registry | testbed.S3 | testbed.Containerd, Timeout: 5 * time.Minute})
	if err != nil {
		return err
	}
	defer tb.Stop()
	var rows []row

	// The image, streamed to the registry.
	begin := time.Now()
	ref := tb.Registry + "/bench/big:1"
	each := make([]int64, nLayers)
	for i := range each {
		each[i] = size / int64(nLayers)
	}
	if _, err := tb.PushImage(ctx, testbed.Image{Repository: "bench/big", Tag: "1", LayerBytes: each}); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "pushed %s (%d MiB) in %s\n", ref, size>>20, time.Since(begin).Round(time.Millisecond))

	// CI: build, sign, export, verify.
	tree := filepath.Join(work, "tree")
	files := map[string]string{
		"ferry.yaml": "apiVersion: ferry.dev/v1\nkind: Bundle\nmetadata: {name: big}\nspec:\n  version: 1.0.0\n  images: {carry: true}\n" +
			"  components:\n    - name: app\n      kustomize: {path: ./app, wait: false}\n",
		"app/kustomization.yaml": "resources: [deploy.yaml]\n",
		"app/deploy.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: big, namespace: default}\nspec:\n  selector: {matchLabels: {app: big}}\n" +
			"  template:\n    metadata: {labels: {app: big}}\n    spec: {containers: [{name: big, image: " + ref + "}]}\n",
		".gitignore": "dist/\n",
	}
	for name, body := range files {
		p := filepath.Join(tree, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			return err
		}
	}
	for _, args := range [][]string{{"init", "-q"}, {"add", "."}, {"-c", "user.email=b@x", "-c", "user.name=b", "commit", "-qm", "bench"}} {
		if out, err := exec.Command("git", append([]string{"-C", tree}, args...)...).CombinedOutput(); err != nil {
			return fmt.Errorf("git %v: %v\n%s", args, err, out)
		}
	}
	env := append(os.Environ(), "COSIGN_PASSWORD=pw", "CI=1")
	ferryRun := func(step string, bytes int64, args ...string) error {
		cmd := exec.Command(ferry, args...)
		cmd.Dir, cmd.Env = work, env
		took, peak, out, err := measure.Run(cmd)
		if err != nil {
			return fmt.Errorf("ferry %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		rows = append(rows, row{step, "ferry " + args[0] + " " + args[1], bytes, took, peak})
		return nil
	}
	peerRun := func(step, what string, bytes int64, cmd *exec.Cmd) error {
		took, peak, out, err := measure.Run(cmd)
		if err != nil {
			return fmt.Errorf("%s: %v\n%s", what, err, out)
		}
		rows = append(rows, row{step, what, bytes, took, peak})
		return nil
	}
	dist := filepath.Join(work, "dist", "big") // build writes dist/NAME in its working directory
	if err := ferryRun("build", size, "bundle", "build", tree); err != nil {
		return err
	}
	peerLayout := filepath.Join(work, "peer-layout")
	if err := peerRun("build", "oras copy --to-oci-layout", size, exec.Command(tb.Bin("oras"), "copy", "--from-plain-http", ref, "--to-oci-layout", peerLayout+":1")); err != nil {
		return err
	}
	keys := exec.Command(ferry, "keys", "generate", "--prefix", filepath.Join(work, "ci"))
	keys.Env = env
	if out, err := keys.CombinedOutput(); err != nil {
		return fmt.Errorf("keys generate: %v\n%s", err, out)
	}
	signCmd := exec.Command(ferry, "bundle", "sign", dist, "--key", filepath.Join(work, "ci.key"))
	signCmd.Env = env
	if out, err := signCmd.CombinedOutput(); err != nil {
		return fmt.Errorf("sign: %v\n%s", err, out)
	}
	if err := ferryRun("push", size, "bundle", "push", dist, "oci://"+tb.Registry+"/bench/bundle:1"); err != nil {
		return err
	}
	if err := peerRun("push", "oras copy --from-oci-layout (image only)", size, exec.Command(tb.Bin("oras"), "copy", "--from-oci-layout", peerLayout+":1", "--to-plain-http", tb.Registry+"/bench/peer:1")); err != nil {
		return err
	}
	stick := filepath.Join(work, "stick")
	os.MkdirAll(stick, 0o755)
	tarPath := filepath.Join(stick, "big.tar")
	if err := ferryRun("export", size, "bundle", "export", dist, tarPath); err != nil {
		return err
	}
	if err := peerRun("export", "tar -cf (GNU tar)", size, exec.Command("tar", "-C", dist, "-cf", filepath.Join(work, "peer.tar"), ".")); err != nil {
		return err
	}
	os.Remove(filepath.Join(work, "peer.tar"))
	if err := ferryRun("verify", size, "bundle", "verify", tarPath, "--key", filepath.Join(work, "ci.pub")); err != nil {
		return err
	}
	if err := peerRun("verify", "openssl dgst -sha256", size, exec.Command("openssl", "dgst", "-sha256", tarPath)); err != nil {
		return err
	}
	// Upload: ferry writes the tar (as export does) and puts it; the peer is the raw client,
	// minio-go's FPutObject of the same tar, in this process (its memory is not this row's).
	s3env := []string{"AWS_ACCESS_KEY_ID=" + tb.S3.AccessKey, "AWS_SECRET_ACCESS_KEY=" + tb.S3.SecretKey}
	env = append(env, s3env...)
	if err := ferryRun("upload", size, "bundle", "upload", dist, "s3://"+tb.S3.Bucket+"/bench", "--s3-endpoint", tb.S3.URL, "--s3-region", tb.S3.Region); err != nil {
		return err
	}
	mc, err := tb.S3Client()
	if err != nil {
		return err
	}
	start := time.Now()
	if _, err := mc.FPutObject(ctx, tb.S3.Bucket, "peer/big.tar", tarPath, minio.PutObjectOptions{}); err != nil {
		return fmt.Errorf("minio-go FPutObject: %w", err)
	}
	rows = append(rows, row{"upload", "minio-go FPutObject of the tar (raw client)", size, time.Since(start), 0})

	// The node: the daemon admits the tar from a stick, then serves the image to containerd.
	n, err := startDaemon(ctx, tb, ferry, filepath.Join(work, "node"))
	if err != nil {
		return err
	}
	defer n.stop()
	baseKiB := n.hwm()
	media := filepath.Join(work, "node", "media", "usb0")
	os.MkdirAll(media, 0o755)
	start = time.Now()
	// A rename onto the watched mount: the tar appears whole, as a finished copy does.
	if err := os.Rename(tarPath, filepath.Join(media, "big.tar")); err != nil {
		return err
	}
	for {
		var st []daemon.BundleStatus
		if err := n.client.Do(ctx, http.MethodGet, "/v1/status", nil, &st); err == nil && len(st) == 1 && st[0].Newest == 1 {
			break
		}
		if time.Since(start) > 10*time.Minute {
			return fmt.Errorf("not admitted in 10m; log %s", n.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The daemon's poller scans every 200ms and waits one scan for the file to be stable.
	rows = append(rows, row{"ingest", "ferry daemon (stick → store, incl. 2 scans of 200ms)", size, time.Since(start), n.hwm()})
	if err := peerRun("ingest", "openssl dgst -sha256", size, exec.Command("openssl", "dgst", "-sha256", filepath.Join(media, "big.tar"))); err != nil {
		return err
	}
	hostsDir := filepath.Join(work, "certs.d")
	if out, err := exec.Command(ferry, "images", "configure", "--config", n.config, "--hosts-dir", hostsDir, "--k3s-registries", "", "--socket", n.socket, "--registry", tb.Registry).CombinedOutput(); err != nil {
		return fmt.Errorf("images configure: %v\n%s", err, out)
	}
	pull := func(what string, hosts ...string) error {
		args := []string{"images", "pull", "--snapshotter", "native"}
		if len(hosts) > 0 {
			args = append(args, "--hosts-dir", hosts[0])
		} else {
			args = append(args, "--plain-http")
		}
		cmd := tb.Ctr(ctx, append(args, ref)...)
		took, _, out, err := measure.Run(cmd)
		if err != nil {
			return fmt.Errorf("%s: %v\n%s", what, err, out)
		}
		rows = append(rows, row{"pull", what, size, took, n.hwm()})
		rm := tb.Ctr(ctx, "images", "rm", "--sync", ref)
		if out, err := rm.CombinedOutput(); err != nil {
			return fmt.Errorf("ctr images rm: %v\n%s", err, out)
		}
		return nil
	}
	if err := pull("ctr pull from distribution (peer)"); err != nil {
		return err
	}
	if err := pull("ctr pull through ferry's endpoint", hostsDir); err != nil {
		return err
	}
	rows[len(rows)-2].peakKiB = 0 // the peer's row: the daemon's memory does not apply

	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "image of %d MiB in %d layers; daemon VmHWM at start %d MiB\n", size>>20, nLayers, baseKiB>>10)
	fmt.Fprintln(tw, "STEP\tWHAT\tSECONDS\tMiB/s\tPEAK RSS (MiB)\tRATIO TO PEER")
	var peer time.Duration
	for i, r := range rows {
		peak := "-"
		if r.peakKiB > 0 {
			peak = fmt.Sprint(r.peakKiB >> 10)
		}
		ratio := ""
		// Each step's ferry row is followed by its peer (pull: peer first).
		switch {
		case r.step == "pull" && strings.Contains(r.what, "peer"):
			peer = r.took
		case r.step == "pull":
			ratio = fmt.Sprintf("%.2f× the peer's throughput", peer.Seconds()/r.took.Seconds())
		case strings.HasPrefix(r.what, "ferry") && i+1 < len(rows):
			ratio = fmt.Sprintf("%.2f× the peer's throughput", rows[i+1].took.Seconds()/r.took.Seconds())
		}
		fmt.Fprintf(tw, "%s\t%s\t%.2f\t%.0f\t%s\t%s\n", r.step, r.what, r.took.Seconds(), float64(r.bytes)/(1<<20)/r.took.Seconds(), peak, ratio)
	}
	return tw.Flush()
}

type node struct {
	cmd                 *exec.Cmd
	client              *daemon.Client
	config, socket, log string
}

func startDaemon(ctx context.Context, tb *testbed.Testbed, ferry, dir string) (*node, error) {
	os.MkdirAll(filepath.Join(dir, "media"), 0o755)
	pub, err := os.ReadFile(filepath.Join(filepath.Dir(dir), "ci.pub"))
	if err != nil {
		return nil, err
	}
	os.WriteFile(filepath.Join(dir, "ci.pub"), pub, 0o644)
	os.WriteFile(filepath.Join(dir, "trust.yaml"), []byte("apiVersion: ferry.dev/v1\nkind: TrustPolicy\nkeys:\n  - name: ci\n    path: ci.pub\n"), 0o644)
	addr := func() string {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		defer ln.Close()
		return ln.Addr().String()
	}
	n := &node{config: filepath.Join(dir, "config.yaml"), socket: filepath.Join(dir, "run", "ferry.sock"), log: filepath.Join(dir, "daemon.log")}
	cfg := fmt.Sprintf("stateDir: %[1]s/state\nkubeconfig: %[2]s\ntrust: %[1]s/trust.yaml\nsocket: %[3]s\nmetricsAddress: %[4]s\nimagesAddress: %[5]s\n"+
		"sources:\n  - name: usb\n    usb: {paths: [%[1]s/media], interval: 200ms}\n", dir, tb.Kubeconfig, n.socket, addr(), addr())
	if err := os.WriteFile(n.config, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	logs, err := os.Create(n.log)
	if err != nil {
		return nil, err
	}
	defer logs.Close()
	n.cmd = exec.Command(ferry, "daemon", "--config", n.config)
	n.cmd.Stdout, n.cmd.Stderr = logs, logs
	if err := n.cmd.Start(); err != nil {
		return nil, err
	}
	n.client = daemon.NewClient(n.socket)
	for deadline := time.Now().Add(time.Minute); ; {
		var st []daemon.BundleStatus
		if err := n.client.Do(ctx, http.MethodGet, "/v1/status", nil, &st); err == nil {
			return n, nil
		}
		if time.Now().After(deadline) {
			n.stop()
			return nil, errors.New("daemon not ready in 1m; log " + n.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (n *node) hwm() int64 { return measure.VmHWM(fmt.Sprintf("/proc/%d/status", n.cmd.Process.Pid)) }

func (n *node) stop() {
	n.cmd.Process.Signal(syscall.SIGTERM)
	n.cmd.Wait()
}
