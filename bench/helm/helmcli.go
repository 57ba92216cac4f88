package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/ferrygitops/ferry/bench/measure"
	"github.com/ferrygitops/ferry/integration/testbed"
)

// helmCLI runs the testbed's helm binary with a HOME of its own (its discovery cache, its
// repositories) so that nothing of the user's is read or written.
type helmCLI struct {
	bin, home string
	chart     string
}

func (h *helmCLI) env() []string {
	return append(os.Environ(), "HOME="+h.home,
		"HELM_CACHE_HOME="+filepath.Join(h.home, ".cache", "helm"),
		"HELM_CONFIG_HOME="+filepath.Join(h.home, ".config", "helm"),
		"HELM_DATA_HOME="+filepath.Join(h.home, ".local", "share", "helm"))
}

// upgrade runs `helm upgrade --install` of the chart with the given generation and returns
// its wall time and peak RSS.
func (h *helmCLI) upgrade(ctx context.Context, kubeconfig, ns string, gen int) (time.Duration, int64, error) {
	return h.run(ctx, "upgrade", "--install", release, h.chart, "-n", ns, "--create-namespace",
		"--wait", "--timeout", "5m", "--set", fmt.Sprintf("generation=%d", gen), "--kubeconfig", kubeconfig)
}

// run starts helm and polls its VmHWM every 5 ms until it exits.
//
// The peak is read from /proc while it runs, not from getrusage after it exits: os/exec
// starts a child with CLONE_VM|CLONE_VFORK, and at exec the kernel carries the parent's RSS
// high-water mark into the child's ru_maxrss, so helm would report the bench's peak. VmHWM
// only grows, so a sample misses at most what helm added in its last 5 ms.
func (h *helmCLI) run(ctx context.Context, args ...string) (time.Duration, int64, error) {
	cmd := exec.CommandContext(ctx, h.bin, args...)
	cmd.Env = h.env()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	begin := time.Now()
	if err := cmd.Start(); err != nil { // returns once helm is exec'd: /proc shows its own memory
		return 0, 0, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var hwm int64
	for {
		select {
		case err := <-done:
			elapsed := time.Since(begin)
			if err != nil {
				return elapsed, hwm, fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, out.String())
			}
			return elapsed, hwm, nil
		case <-tick.C:
			hwm = max(hwm, measure.VmHWM(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)))
		}
	}
}

// warm fills helm's discovery cache for a kubeconfig (as any helm user's is after the first
// command), so that no timed run pays for it: `helm upgrade` reads the cache on disk.
func (h *helmCLI) warm(ctx context.Context, kubectl, kubeconfig string) error {
	cmd := exec.CommandContext(ctx, kubectl, "api-resources", "--kubeconfig", kubeconfig)
	cmd.Env = h.env()
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("kubectl api-resources: %w\n%s", err, out)
	}
	return nil
}

// runHelm is the peer: install, upgrade, the same upgrade again (nothing changed), each
// timed with its peak RSS; then the same no-op once more through the counting proxy.
func runHelm(ctx context.Context, tb *testbed.Testbed, h *helmCLI, px *proxy, kc kubernetes.Interface, ns string) (result, error) {
	var res result
	var err error
	for p, gen := range [phases]int{1, 2, 2} {
		if p == noop {
			if res.RevisionsBefore, err = releaseRevisions(ctx, kc, ns); err != nil {
				return res, err
			}
		}
		d, hwm, err := h.upgrade(ctx, tb.Kubeconfig, ns, gen)
		if err != nil {
			return res, fmt.Errorf("%s: %w", phaseNames[p], err)
		}
		res.Seconds[p], res.PhaseRSSKiB[p] = d.Seconds(), hwm
		res.RSSKiB = max(res.RSSKiB, hwm)
	}
	if res.RevisionsAfter, err = releaseRevisions(ctx, kc, ns); err != nil {
		return res, err
	}
	px.cnt.Take()
	d, _, err := h.upgrade(ctx, px.kubeconfig, ns, 2)
	if err != nil {
		return res, fmt.Errorf("counted no-op: %w", err)
	}
	res.CountedSeconds = d.Seconds()
	res.Reads[noop], res.Writes[noop], res.Log[noop] = px.cnt.Take()
	return res, nil
}

// proxy is a plain-HTTP reverse proxy on loopback to the testbed's API server, holding the
// admin credentials, that counts what passes: the helm CLI has no request counter of its
// own, so a kubeconfig that points at the proxy lets the bench count its requests.
type proxy struct {
	srv        *http.Server
	cnt        *measure.Counter
	kubeconfig string
}

func startProxy(tb *testbed.Testbed, dir string) (*proxy, error) {
	rt, err := rest.TransportFor(tb.REST)
	if err != nil {
		return nil, err
	}
	target, err := url.Parse(tb.REST.Host)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	px := &proxy{cnt: &measure.Counter{}, kubeconfig: filepath.Join(dir, "proxy.kubeconfig")}
	px.srv = &http.Server{Handler: &httputil.ReverseProxy{
		Rewrite:       func(r *httputil.ProxyRequest) { r.SetURL(target) },
		Transport:     px.cnt.Wrap(rt),
		FlushInterval: -1, // watches stream
	}}
	kubeconfig := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: proxy, cluster: {server: "http://%s"}}]
users: [{name: proxy, user: {}}]
contexts: [{name: proxy, context: {cluster: proxy, user: proxy}}]
current-context: proxy
`, ln.Addr())
	if err := os.WriteFile(px.kubeconfig, []byte(kubeconfig), 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	go func() {
		if err := px.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintln(os.Stderr, "proxy:", err)
		}
	}()
	return px, nil
}

// Close stops the proxy and its Serve goroutine.
func (px *proxy) Close() error { return px.srv.Close() }
