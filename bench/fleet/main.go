// Command fleet measures what a fleet of nodes polling one mirror costs the mirror (issue #19,
// "Fleet scale"; docs/BENCHMARKS.md, "A fleet polling one mirror", has the results).
//
// Each simulated node is the daemon's own poller and admission (daemon.Poller: the registry or
// S3 source's poll, then daemon.Ingest and store.Admit into a bbolt store of its own, with the
// signatures verified against a trust policy), on one goroutine that waits the interval after
// each pass as the daemon's poller does, from a random phase. They poll one testbed mirror
// (CNCF distribution, then versitygw for S3) through a counting reverse proxy on loopback,
// which counts requests, connections and bytes both ways; the mirror's CPU is utime+stime of its
// process (/proc/PID/stat). Per mirror:
//
//  1. revision 1 is published and every node admits it (the warm-up, not measured);
//  2. nothing changes for -idle: requests, bytes, connections and mirror CPU per poll;
//  3. revision 2 is published: the time from its tag (or object) being there to each node
//     having admitted it, p50 and p100, and what admitting it cost per node;
//  4. the peer, for -peer: one goroutine per node sending the same idle request with plain
//     net/http (a HEAD of the tag; for S3 one signed ListObjectsV2 GET) on one keep-alive
//     client, and for the registry the same HEAD with If-None-Match.
//
// Progress goes to stderr, the report (markdown) to stdout.
//
//	go run ./bench/fleet [-nodes 500] [-interval 10s] [-idle 5m] [-peer 1m] [-semver RANGE] [-only registry|s3]
package main

import (
	"context"
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7/pkg/signer"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content/memory"

	meter "github.com/ferrygitops/ferry/bench/measure"
	"github.com/ferrygitops/ferry/bundler"
	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/daemon"
	"github.com/ferrygitops/ferry/integration/testbed"
	"github.com/ferrygitops/ferry/store"
	"github.com/ferrygitops/ferry/verify"
)

const (
	bundleName = "fleet"
	repoPath   = "fleet/app" // the registry repository
	followTag  = "stable"    // the tag the nodes follow (without -semver)
	s3Prefix   = "fleet/"
	// admitDeadline bounds the wait for every node to admit a revision.
	admitDeadline = 15 * time.Minute
)

type options struct {
	nodes          int
	interval, idle time.Duration
	peer           time.Duration
	semver, only   string
}

func main() {
	var o options
	flag.IntVar(&o.nodes, "nodes", 500, "simulated nodes")
	flag.DurationVar(&o.interval, "interval", 10*time.Second, "poll interval of every node")
	flag.DurationVar(&o.idle, "idle", 5*time.Minute, "measured window with nothing changing")
	flag.DurationVar(&o.peer, "peer", time.Minute, "measured window of each peer loop")
	flag.StringVar(&o.semver, "semver", "", "nodes follow this semver range (GET tags/list + HEAD) instead of the tag "+followTag)
	flag.StringVar(&o.only, "only", "", "run one mirror: registry or s3; both when empty")
	flag.Parse()
	if o.nodes < 1 || o.interval <= 0 || o.idle <= 0 || o.peer <= 0 || (o.only != "" && o.only != "registry" && o.only != "s3") {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(context.Background(), o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	// The nodes' S3 credentials come from their credentials file, never this environment.
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"} {
		os.Unsetenv(k)
	}
	work, err := os.MkdirTemp("", "bench-fleet-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	cmdline := "go run ./bench/fleet"
	if len(os.Args) > 1 {
		cmdline += " " + strings.Join(os.Args[1:], " ")
	}
	fmt.Printf("Reproduce (from the repository root):\n\n    %s\n\n", cmdline)
	fmt.Printf("Machine: %s, %d cores, %s; load average at start %s. %d nodes, interval %s, idle window %s, peer window %s.\n\n",
		meter.CPUModel(), runtime.NumCPU(), runtime.Version(), meter.LoadAvg(), o.nodes, o.interval, o.idle, o.peer)

	progress("starting the testbed's registry and S3 server")
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	tb, err := testbed.Start(ctx, testbed.Options{Services: testbed.Registry | testbed.S3, Log: log})
	if err != nil {
		return err
	}
	defer tb.Stop()
	pids := map[string]int{}
	for _, pid := range tb.PIDs() {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		pids[strings.TrimSpace(string(b))] = pid
	}
	k, err := newKeys(work)
	if err != nil {
		return err
	}
	var reports []report
	if o.only != "s3" {
		r, err := measure(ctx, o, work, k, registryMirror(tb, pids["registry"], o))
		if err != nil {
			return fmt.Errorf("registry: %w", err)
		}
		reports = append(reports, r)
	}
	if o.only != "registry" {
		r, err := measure(ctx, o, work, k, s3Mirror(tb, pids["versitygw"], work, o))
		if err != nil {
			return fmt.Errorf("s3: %w", err)
		}
		reports = append(reports, r)
	}
	printReport(o, reports)
	fmt.Printf("\nLoad average at the end: %s.\n", meter.LoadAvg())
	return nil
}

// ---------------------------------------------------------------------------------------
// Keys and bundles

// keys are CI's signing key and the nodes' trust policy that trusts it, loaded as a node
// loads its policy file.
type keys struct {
	sign   func(ctx context.Context, mem *memory.Store, d ocispec.Descriptor, identity string) error
	policy verify.Policy
	dir    string
}

func newKeys(work string) (*keys, error) {
	priv, pub, err := bundler.GenerateKeyPair([]byte("pw"))
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(work, "ci")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	keyPath := filepath.Join(dir, "ci.key")
	if err := os.WriteFile(keyPath, priv, 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "ci.pub"), pub, 0o644); err != nil {
		return nil, err
	}
	trust := filepath.Join(dir, "trust.yaml")
	if err := os.WriteFile(trust, []byte("apiVersion: ferry.dev/v1\nkind: TrustPolicy\nkeys:\n  - name: ci\n    path: ci.pub\n"), 0o644); err != nil {
		return nil, err
	}
	key, err := bundler.LoadPrivateKey(keyPath, []byte("pw"))
	if err != nil {
		return nil, err
	}
	policy, err := verify.LoadPolicy(trust)
	if err != nil {
		return nil, err
	}
	return &keys{
		sign: func(ctx context.Context, mem *memory.Store, d ocispec.Descriptor, identity string) error {
			_, err := bundler.Sign(ctx, mem, d, key, identity)
			return err
		},
		policy: policy, dir: dir,
	}, nil
}

// build builds and signs revision rev (version 1.0.rev) of the fleet bundle, one ConfigMap.
func (k *keys) build(ctx context.Context, work string, rev uint64, identity string) (*memory.Store, ocispec.Descriptor, error) {
	tree, err := os.MkdirTemp(work, "tree-")
	if err != nil {
		return nil, ocispec.Descriptor{}, err
	}
	defer os.RemoveAll(tree)
	files := map[string]string{
		"ferry.yaml": fmt.Sprintf("apiVersion: ferry.dev/v1\nkind: Bundle\nmetadata: {name: %s}\nspec:\n  version: 1.0.%d\n  components:\n"+
			"    - name: app\n      kustomize: {path: ./app, prune: true, wait: true}\n", bundleName, rev),
		"app/kustomization.yaml": "resources: [cm.yaml]\n",
		"app/cm.yaml":            fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: fleet, namespace: default}\ndata: {revision: \"%d\"}\n", rev),
	}
	for name, body := range files {
		p := filepath.Join(tree, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, ocispec.Descriptor{}, err
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			return nil, ocispec.Descriptor{}, err
		}
	}
	mem := memory.New()
	res, err := bundler.Build(ctx, mem, bundler.Options{Dir: tree, AllowDirty: true, Revision: rev, Created: time.Unix(1764057600, 0).UTC()})
	if err != nil {
		return nil, ocispec.Descriptor{}, err
	}
	if err := k.sign(ctx, mem, res.Descriptor, identity); err != nil {
		return nil, ocispec.Descriptor{}, err
	}
	return mem, res.Descriptor, nil
}

type memSource struct{ *memory.Store }

func (memSource) Close() error { return nil }

// ---------------------------------------------------------------------------------------
// Mirrors

// mirror is one server the fleet polls.
type mirror struct {
	key     string // registry, s3
	name    string
	server  string // the server's own base URL, for the proxy and publishing
	pid     int
	follows string // what a node's idle poll is, for the report
	// source is the nodes' source config, reaching the mirror at proxy (host:port).
	source func(proxy string) daemon.SourceConfig
	// publish puts revision rev where the nodes look, straight to the server.
	publish func(ctx context.Context, k *keys, work string, rev uint64) error
	peers   []peer
}

// peer is a plain net/http loop sending a node's idle request; prepare runs once before the
// window (an ETag to send back) and returns the request to send.
type peer struct {
	name    string
	prepare func(ctx context.Context, c *http.Client, proxy string) (func(ctx context.Context) (*http.Request, error), error)
}

func registryMirror(tb *testbed.Testbed, pid int, o options) mirror {
	tag, follows := followTag, "HEAD manifests/"+followTag
	if o.semver != "" {
		follows = "GET tags/list, HEAD manifests/<highest>"
	}
	m := mirror{
		key: "registry", name: "registry (distribution " + toolVersion(tb.Bin("registry")) + ")", server: "http://" + tb.Registry, pid: pid, follows: follows,
		source: func(proxy string) daemon.SourceConfig {
			rs := &daemon.RegistrySource{Repository: proxy + "/" + repoPath, Interval: daemon.Duration{Duration: o.interval}}
			if o.semver != "" {
				rs.SemVer = o.semver
			} else {
				rs.Tag = tag
			}
			return daemon.SourceConfig{Name: "registry", Registry: rs}
		},
		publish: func(ctx context.Context, k *keys, work string, rev uint64) error {
			mem, desc, err := k.build(ctx, work, rev, tb.Registry+"/"+repoPath)
			if err != nil {
				return err
			}
			dst := "oci://" + tb.Registry + "/" + repoPath // tagged with the version
			if o.semver == "" {
				dst += ":" + tag
			}
			a, err := bundles.ParseAddress(dst)
			if err != nil {
				return err
			}
			_, err = bundles.Copy(ctx, memSource{mem}, desc, a, bundles.Options{})
			return err
		},
	}
	head := func(proxy, etag string) func(ctx context.Context) (*http.Request, error) {
		return func(ctx context.Context) (*http.Request, error) {
			req, err := http.NewRequestWithContext(ctx, http.MethodHead, "http://"+proxy+"/v2/"+repoPath+"/manifests/"+peerTag(o), nil)
			if err != nil {
				return nil, err
			}
			req.Header.Set("Accept", ocispec.MediaTypeImageManifest)
			if etag != "" {
				req.Header.Set("If-None-Match", etag)
			}
			return req, nil
		}
	}
	m.peers = []peer{
		{name: "peer: plain HEAD", prepare: func(_ context.Context, _ *http.Client, proxy string) (func(context.Context) (*http.Request, error), error) {
			return head(proxy, ""), nil
		}},
		{name: "peer: HEAD with If-None-Match", prepare: func(ctx context.Context, c *http.Client, proxy string) (func(context.Context) (*http.Request, error), error) {
			req, err := head(proxy, "")(ctx)
			if err != nil {
				return nil, err
			}
			resp, err := c.Do(req)
			if err != nil {
				return nil, err
			}
			resp.Body.Close()
			etag := resp.Header.Get("ETag")
			if etag == "" {
				return nil, errors.New("the registry sent no ETag")
			}
			return head(proxy, etag), nil
		}},
	}
	if o.semver != "" {
		// The same two requests a semver poll sends, the listing first.
		m.peers = []peer{{name: "peer: plain GET tags/list + HEAD", prepare: func(_ context.Context, _ *http.Client, proxy string) (func(context.Context) (*http.Request, error), error) {
			n := 0
			return func(ctx context.Context) (*http.Request, error) {
				n++
				if n%2 == 1 {
					return http.NewRequestWithContext(ctx, http.MethodGet, "http://"+proxy+"/v2/"+repoPath+"/tags/list", nil)
				}
				return head(proxy, "")(ctx)
			}, nil
		}}}
	}
	return m
}

// peerTag is the tag the peer's HEAD asks for: the followed tag, or revision 2's version.
func peerTag(o options) string {
	if o.semver != "" {
		return "1.0.2"
	}
	return followTag
}

func s3Mirror(tb *testbed.Testbed, pid int, work string, o options) mirror {
	s3 := tb.S3
	creds := filepath.Join(work, "aws-credentials")
	return mirror{
		key: "s3", name: "S3 (versitygw " + toolVersion(tb.Bin("versitygw")) + ")", server: s3.URL, pid: pid, follows: "ListObjectsV2 of " + s3Prefix,
		source: func(proxy string) daemon.SourceConfig {
			return daemon.SourceConfig{Name: "s3", S3: &daemon.S3Source{Endpoint: "http://" + proxy, Region: s3.Region,
				Bucket: s3.Bucket, Prefix: s3Prefix, CredentialsFile: creds, Interval: daemon.Duration{Duration: o.interval}}}
		},
		publish: func(ctx context.Context, k *keys, work string, rev uint64) error {
			if err := os.WriteFile(creds, fmt.Appendf(nil, "[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n", s3.AccessKey, s3.SecretKey), 0o600); err != nil {
				return err
			}
			mem, desc, err := k.build(ctx, work, rev, bundleName)
			if err != nil {
				return err
			}
			a, err := bundles.ParseAddress("s3://" + s3.Bucket + "/" + s3Prefix)
			if err != nil {
				return err
			}
			_, err = bundles.Copy(ctx, memSource{mem}, desc, a, bundles.Options{S3Endpoint: s3.URL, S3Region: s3.Region,
				S3AccessKey: s3.AccessKey, S3SecretKey: s3.SecretKey, StagingDir: filepath.Join(work, "staging")})
			return err
		},
		peers: []peer{{name: "peer: plain signed ListObjectsV2", prepare: func(_ context.Context, _ *http.Client, proxy string) (func(context.Context) (*http.Request, error), error) {
			empty := sha256.Sum256(nil)
			return func(ctx context.Context) (*http.Request, error) {
				u := "http://" + proxy + "/" + s3.Bucket + "/?list-type=2&prefix=" + url.QueryEscape(s3Prefix)
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
				if err != nil {
					return nil, err
				}
				req.Header.Set("X-Amz-Content-Sha256", hex.EncodeToString(empty[:]))
				return signer.SignV4(*req, s3.AccessKey, s3.SecretKey, "", s3.Region), nil
			}, nil
		}}},
	}
}

// ---------------------------------------------------------------------------------------
// The fleet

// node is one simulated node: the daemon's poller over its own store.
type node struct {
	p        *daemon.Poller
	passes   atomic.Int64
	failures atomic.Int64
	mu       sync.Mutex
	admitted map[uint64]time.Time
	lastErr  string
}

func (n *node) at(rev uint64) (time.Time, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	t, ok := n.admitted[rev]
	return t, ok
}

// loop runs passes until ctx is done: a random phase first, then the interval after each
// pass, as the daemon's pollSource waits.
func (n *node) loop(ctx context.Context, interval time.Duration) {
	t := time.NewTimer(rand.N(interval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		revs, err := n.p.Pass(ctx)
		now := time.Now()
		n.passes.Add(1)
		n.mu.Lock()
		for _, r := range revs {
			n.admitted[r.Revision] = now
		}
		if err != nil && ctx.Err() == nil {
			n.failures.Add(1)
			n.lastErr = err.Error()
		}
		n.mu.Unlock()
		t.Reset(interval)
	}
}

// window is what the mirror served in a span of time.
type window struct {
	took                  time.Duration
	polls                 int64
	reqs, conns, in, out  int64
	peakOpen              int64 // connections open at once, at most
	cpuMS                 float64
	fleetCPUMS            float64 // this process: the nodes, the proxy, the peers
	kinds                 map[string]int64
	failures              int64
	admitP50, admitP100   time.Duration
	admitReqs, admitBytes float64 // per node, for revision 2
	firstFailure          string
}

func (w window) perPoll(v float64) float64 {
	if w.polls == 0 {
		return 0
	}
	return v / float64(w.polls)
}

type report struct {
	mirror         mirror
	idle, admitted window
	peers          []window
}

// measure runs the fleet against m, then its peers.
func measure(ctx context.Context, o options, work string, k *keys, m mirror) (report, error) {
	r := report{mirror: m}
	px, err := startProxy(m.server)
	if err != nil {
		return r, err
	}
	defer px.close()
	if _, err := cpuMS(m.pid); err != nil {
		return r, fmt.Errorf("mirror CPU: %w", err)
	}
	progress(m.name + ": publishing revision 1, opening " + strconv.Itoa(o.nodes) + " stores")
	if err := m.publish(ctx, k, work, 1); err != nil {
		return r, err
	}
	nodes := make([]*node, o.nodes)
	for i := range nodes {
		dir := filepath.Join(work, m.key, fmt.Sprintf("node-%03d", i))
		st, err := store.Open(dir, store.Options{})
		if err != nil {
			return r, err
		}
		defer st.Close()
		nodes[i] = &node{p: daemon.NewPoller(m.source(px.addr), st, k.policy), admitted: map[uint64]time.Time{}}
	}
	fleetCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(func() { n.loop(fleetCtx, o.interval) })
	}
	defer func() { stop(); wg.Wait() }()

	progress(m.name + ": waiting for every node to admit revision 1")
	if _, err := waitAdmitted(ctx, nodes, 1, time.Now()); err != nil {
		return r, err
	}
	progress(fmt.Sprintf("%s: idle for %s", m.name, o.idle))
	s0 := px.snapshot(m.pid, nodes)
	select {
	case <-ctx.Done():
		return r, ctx.Err()
	case <-time.After(o.idle):
	}
	s1 := px.snapshot(m.pid, nodes)
	r.idle = s1.since(s0)

	progress(m.name + ": publishing revision 2")
	if err := m.publish(ctx, k, work, 2); err != nil {
		return r, err
	}
	published := time.Now()
	times, err := waitAdmitted(ctx, nodes, 2, published)
	if err != nil {
		return r, err
	}
	s2 := px.snapshot(m.pid, nodes)
	r.admitted = s2.since(s1)
	r.admitted.admitP50, r.admitted.admitP100 = times[len(times)/2], times[len(times)-1]
	r.admitted.admitReqs = float64(r.admitted.reqs) / float64(len(nodes))
	r.admitted.admitBytes = float64(r.admitted.in+r.admitted.out) / float64(len(nodes))
	stop()
	wg.Wait()

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second}}
	for _, p := range m.peers {
		progress(fmt.Sprintf("%s: %s for %s", m.name, p.name, o.peer))
		w, err := runPeer(ctx, o, px, m.pid, client, p)
		if err != nil {
			return r, fmt.Errorf("%s: %w", p.name, err)
		}
		r.peers = append(r.peers, w)
	}
	return r, nil
}

// waitAdmitted waits until every node has admitted revision rev and returns the times from
// since, sorted.
func waitAdmitted(ctx context.Context, nodes []*node, rev uint64, since time.Time) ([]time.Duration, error) {
	deadline := time.Now().Add(admitDeadline)
	for {
		var times []time.Duration
		for _, n := range nodes {
			if t, ok := n.at(rev); ok {
				times = append(times, max(0, t.Sub(since)))
			}
		}
		if len(times) == len(nodes) {
			slices.Sort(times)
			return times, nil
		}
		if time.Now().After(deadline) {
			var last string
			for _, n := range nodes {
				n.mu.Lock()
				if n.lastErr != "" {
					last = n.lastErr
				}
				n.mu.Unlock()
			}
			return nil, fmt.Errorf("%d of %d nodes admitted revision %d in %s; a last error: %s", len(times), len(nodes), rev, admitDeadline, last)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// runPeer runs one goroutine per node sending p's request every interval (from a random
// phase) on one keep-alive client, and measures a window after one interval of warm-up.
func runPeer(ctx context.Context, o options, px *proxy, pid int, client *http.Client, p peer) (window, error) {
	next, err := p.prepare(ctx, client, px.addr)
	if err != nil {
		return window{}, err
	}
	var mu sync.Mutex // next may keep state
	var polls, failures atomic.Int64
	var firstErr atomic.Value
	peerCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range o.nodes {
		wg.Go(func() {
			t := time.NewTimer(rand.N(o.interval))
			defer t.Stop()
			for {
				select {
				case <-peerCtx.Done():
					return
				case <-t.C:
				}
				// A semver peer sends two requests per poll, as the node does.
				sends := 1
				if o.semver != "" {
					sends = 2
				}
				for range sends {
					mu.Lock()
					req, err := next(peerCtx)
					mu.Unlock()
					if err == nil {
						var resp *http.Response
						if resp, err = client.Do(req); err == nil {
							io.Copy(io.Discard, resp.Body)
							resp.Body.Close()
							if resp.StatusCode >= 400 {
								err = fmt.Errorf("%s %s: %s", req.Method, req.URL.Path, resp.Status)
							}
						}
					}
					if err != nil && peerCtx.Err() == nil {
						failures.Add(1)
						firstErr.CompareAndSwap(nil, err.Error())
					}
				}
				polls.Add(1)
				t.Reset(o.interval)
			}
		})
	}
	defer func() { stop(); wg.Wait() }()
	select {
	case <-ctx.Done():
		return window{}, ctx.Err()
	case <-time.After(o.interval):
	}
	s0 := px.snapshot(pid, nil)
	p0, f0 := polls.Load(), failures.Load()
	select {
	case <-ctx.Done():
		return window{}, ctx.Err()
	case <-time.After(o.peer):
	}
	s1 := px.snapshot(pid, nil)
	w := s1.since(s0)
	w.polls, w.failures = polls.Load()-p0, failures.Load()-f0
	if e, ok := firstErr.Load().(string); ok {
		w.firstFailure = e
	}
	return w, nil
}

// ---------------------------------------------------------------------------------------
// The counting proxy

// proxy is a reverse proxy on loopback in front of a mirror that counts what the fleet sends
// and receives: requests (by method, path shape and status), connections accepted and open,
// and bytes on the wire both ways, headers included.
type proxy struct {
	addr                 string
	srv                  *http.Server
	reqs, conns, in, out atomic.Int64
	open, peakOpen       atomic.Int64
	mu                   sync.Mutex
	kinds                map[string]int64
}

func startProxy(server string) (*proxy, error) {
	target, err := url.Parse(server)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &proxy{addr: ln.Addr().String(), kinds: map[string]int64{}}
	rp := &httputil.ReverseProxy{
		// The Host header stays the proxy's: S3 signatures cover it.
		Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(target); r.Out.Host = r.In.Host },
		// Enough idle connections to the mirror that the proxy never opens one per request:
		// the mirror's CPU is then the requests', as with nodes that keep theirs alive.
		Transport: &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024, IdleConnTimeout: 90 * time.Second},
		ModifyResponse: func(resp *http.Response) error {
			p.count(resp.Request, resp.StatusCode)
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			p.count(r, http.StatusBadGateway)
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	p.srv = &http.Server{Handler: rp, ReadHeaderTimeout: time.Minute}
	go p.srv.Serve(countingListener{ln, p})
	return p, nil
}

var digestPart = regexp.MustCompile(`sha256[:-][0-9a-f]{64}|[0-9a-f-]{36}`)

func (p *proxy) count(r *http.Request, status int) {
	p.reqs.Add(1)
	q := r.URL.Query()
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range q {
			if !yield(k) {
				return
			}
		}
	})
	kind := r.Method + " " + digestPart.ReplaceAllString(r.URL.Path, "<digest>")
	if len(keys) > 0 {
		kind += "?" + strings.Join(keys, "&")
	}
	kind += " " + strconv.Itoa(status)
	p.mu.Lock()
	p.kinds[kind]++
	p.mu.Unlock()
}

func (p *proxy) close() { p.srv.Close() }

type countingListener struct {
	net.Listener
	p *proxy
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.p.conns.Add(1)
	if n := l.p.open.Add(1); n > l.p.peakOpen.Load() {
		l.p.peakOpen.Store(n)
	}
	return &countingConn{Conn: c, p: l.p}, nil
}

type countingConn struct {
	net.Conn
	p    *proxy
	once sync.Once
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.p.in.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.p.out.Add(int64(n))
	return n, err
}

func (c *countingConn) Close() error {
	c.once.Do(func() { c.p.open.Add(-1) })
	return c.Conn.Close()
}

// snapshot is the proxy's counters, the mirror's CPU and the nodes' passes at one moment.
type snapshot struct {
	at                         time.Time
	reqs, conns, in, out, peak int64
	cpuMS, fleetCPUMS          float64
	kinds                      map[string]int64
	polls, failures            int64
	firstFailure               string
}

func (p *proxy) snapshot(pid int, nodes []*node) snapshot {
	s := snapshot{at: time.Now(), reqs: p.reqs.Load(), conns: p.conns.Load(), in: p.in.Load(), out: p.out.Load(), kinds: map[string]int64{}}
	s.cpuMS, _ = cpuMS(pid)
	s.fleetCPUMS, _ = cpuMS(os.Getpid())
	s.peak = p.peakOpen.Swap(p.open.Load()) // the peak since the last snapshot; a new one starts
	p.mu.Lock()
	for k, v := range p.kinds {
		s.kinds[k] = v
	}
	p.mu.Unlock()
	for _, n := range nodes {
		s.polls += n.passes.Load()
		s.failures += n.failures.Load()
		n.mu.Lock()
		if s.firstFailure == "" && n.lastErr != "" {
			s.firstFailure = n.lastErr
		}
		n.mu.Unlock()
	}
	return s
}

// since is the window from s0 to s (the peak of open connections is the one s read).
func (s snapshot) since(s0 snapshot) window {
	w := window{took: s.at.Sub(s0.at), polls: s.polls - s0.polls, reqs: s.reqs - s0.reqs, conns: s.conns - s0.conns,
		in: s.in - s0.in, out: s.out - s0.out, peakOpen: s.peak, cpuMS: s.cpuMS - s0.cpuMS, fleetCPUMS: s.fleetCPUMS - s0.fleetCPUMS, failures: s.failures - s0.failures,
		firstFailure: s.firstFailure, kinds: map[string]int64{}}
	for k, v := range s.kinds {
		if d := v - s0.kinds[k]; d > 0 {
			w.kinds[k] = d
		}
	}
	return w
}

// cpuMS is utime+stime of process pid in milliseconds (/proc/PID/stat fields 14 and 15).
func cpuMS(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:]) // the name may hold spaces
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return float64(utime+stime) * 1000 / float64(clockTicks()), nil
}

var clockTicks = sync.OnceValue(func() int64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if n, perr := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); err == nil && perr == nil && n > 0 {
		return n
	}
	return 100 // Linux's USER_HZ everywhere that matters
})

// ---------------------------------------------------------------------------------------
// The report

func printReport(o options, reports []report) {
	fmt.Printf("| mirror | client | idle poll | polls | requests/poll | bytes/poll (to / from the mirror) | new connections/poll | connections open at most | mirror CPU ms/poll | mirror CPU (%% of a core) | failed polls |\n")
	fmt.Printf("|---|---|---|---|---|---|---|---|---|---|---|\n")
	// A peer's peak would count the nodes' idle connections still open from before it.
	row := func(mirror, client, follows string, w window, peak bool) {
		open := "—"
		if peak {
			open = strconv.FormatInt(w.peakOpen, 10)
		}
		fmt.Printf("| %s | %s | %s | %d | %.2f | %.0f (%.0f / %.0f) | %.2f | %s | %.3f | %.2f%% | %d |\n", mirror, client, follows, w.polls,
			w.perPoll(float64(w.reqs)), w.perPoll(float64(w.in+w.out)), w.perPoll(float64(w.in)), w.perPoll(float64(w.out)),
			w.perPoll(float64(w.conns)), open, w.perPoll(w.cpuMS), w.cpuMS/float64(w.took.Milliseconds())*100, w.failures)
	}
	for _, r := range reports {
		row(r.mirror.name, fmt.Sprintf("%d ferry nodes (daemon.Poller)", o.nodes), r.mirror.follows, r.idle, true)
		for i, p := range r.peers {
			row(r.mirror.name, r.mirror.peers[i].name, "", p, false)
		}
	}
	fmt.Printf("\n| mirror | revision 2 published → admitted by all %d nodes: p50 / p100 | requests per node to admit it | bytes per node (both ways) | mirror CPU for the whole fleet's admission | the fleet's own CPU (all nodes, this process) |\n", o.nodes)
	fmt.Printf("|---|---|---|---|---|---|\n")
	for _, r := range reports {
		a := r.admitted
		fmt.Printf("| %s | %.2f s / %.2f s | %.1f | %.0f | %.0f ms | %.0f ms |\n", r.mirror.name, a.admitP50.Seconds(), a.admitP100.Seconds(), a.admitReqs, a.admitBytes, a.cpuMS, a.fleetCPUMS)
	}
	for _, r := range reports {
		fmt.Printf("\n%s, idle window (%s): what the nodes sent\n\n", r.mirror.name, r.idle.took.Round(time.Second))
		printKinds(r.idle)
		for i, p := range r.peers {
			if p.firstFailure != "" {
				fmt.Printf("\n%s: a failure: %s\n", r.mirror.peers[i].name, p.firstFailure)
			}
		}
		if r.idle.firstFailure != "" {
			fmt.Printf("\nA node's failure: %s\n", r.idle.firstFailure)
		}
		fmt.Printf("\n%s, revision 2: what the nodes sent to admit it\n\n", r.mirror.name)
		printKinds(r.admitted)
	}
}

func printKinds(w window) {
	kinds := slices.Sorted(func(yield func(string) bool) {
		for k := range w.kinds {
			if !yield(k) {
				return
			}
		}
	})
	for _, k := range kinds {
		fmt.Printf("    %8d  %s\n", w.kinds[k], k)
	}
}

// toolVersion is the main module's version recorded in a Go binary.
func toolVersion(bin string) string {
	if bi, err := buildinfo.ReadFile(bin); err == nil {
		return bi.Main.Version
	}
	return "?"
}

func progress(msg string) { fmt.Fprintf(os.Stderr, "%s %s\n", time.Now().Format("15:04:05"), msg) }
