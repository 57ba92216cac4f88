package node

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"oras.land/oras-go/v2/content/memory"

	"github.com/ferrygitops/ferry/apply"
	"github.com/ferrygitops/ferry/bundler"
	"github.com/ferrygitops/ferry/bundler/bundlertest"
	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/daemon"
	"github.com/ferrygitops/ferry/integration/testbed"
	"github.com/ferrygitops/ferry/rollout"
)

// site is one edge node: a config directory with a trust policy and a signing key on the
// CI side.
type site struct {
	dir, key, config string
	bundle, ns       string
	// gate makes the next builds wait (health check) for a ConfigMap named "gate" that
	// the test creates when it wants the rollout to finish.
	gate bool
	// metrics is the metrics address ("off" when empty).
	metrics string
	images  string // imagesAddress; empty is off
	// timeout is the component's health timeout (default 30s, 90s with gate).
	timeout string
	// configMaps adds that many ConfigMaps to each build (a rollout that takes a while).
	configMaps int
	// margin is the engine's DeadlineMargin (0: its default).
	margin time.Duration
}

func newSite(t *testing.T, bundle string) *site {
	t.Helper()
	dir := t.TempDir()
	priv, pub, err := bundler.GenerateKeyPair([]byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	s := &site{dir: dir, key: filepath.Join(dir, "ci.key"), config: filepath.Join(dir, "config.yaml"), bundle: bundle, ns: bundle}
	os.WriteFile(s.key, priv, 0o600)
	os.WriteFile(filepath.Join(dir, "ci.pub"), pub, 0o644)
	os.WriteFile(filepath.Join(dir, "trust.yaml"), []byte("apiVersion: ferry.dev/v1\nkind: TrustPolicy\nkeys:\n  - name: ci\n    path: ci.pub\n"), 0o644)
	return s
}

// writeConfig writes the node's config with the given sources section.
func (s *site) writeConfig(t *testing.T, sources string) {
	t.Helper()
	metrics := s.metrics
	if metrics == "" {
		metrics = "off"
	}
	images := s.images
	if images == "" {
		images = "off"
	}
	cfg := fmt.Sprintf(`stateDir: %s/state
kubeconfig: %s
trust: %s/trust.yaml
socket: %s/run/ferry.sock
metricsAddress: %q
imagesAddress: %q
driftInterval: 2s
variables: {SITE_ID: north-7}
sources:
%s`, s.dir, tb.Kubeconfig, s.dir, s.dir, metrics, images, sources)
	if err := os.WriteFile(s.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

// build builds and signs revision rev of the site's bundle; fail makes its Deployment never
// become Ready. It returns a memory store holding it and its descriptor.
func (s *site) build(t *testing.T, rev uint64, fail bool) (*memory.Store, ocispec.Descriptor) {
	t.Helper()
	labels := "app: web"
	if fail {
		labels += ", " + testbed.FailLabel + ": \"true\""
	}
	timeout := s.timeout
	if timeout == "" {
		timeout = "30s"
		if s.gate {
			timeout = "90s"
		}
	}
	checks := ", timeout: " + timeout
	if s.gate {
		checks += ", healthChecks: [{apiVersion: v1, kind: ConfigMap, name: gate, namespace: " + s.ns + "}]"
	}
	tree := map[string]string{
		"ferry.yaml": fmt.Sprintf("apiVersion: ferry.dev/v1\nkind: Bundle\nmetadata: {name: %s}\nspec:\n  version: 1.0.%d\n  components:\n"+
			"    - name: app\n      kustomize: {path: ./app, prune: true, wait: true, postBuild: {}%s}\n", s.bundle, rev, checks),
		"app/ns.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: " + s.ns + "}\n",
		"app/cm.yaml": fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: site, namespace: %s}\ndata: {revision: \"%d\", site: \"${SITE_ID}\"}\n", s.ns, rev),
		"app/deploy.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: " + s.ns + "}\nspec:\n  replicas: 1\n" +
			"  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {" + labels + "}}\n    spec: {containers: [{name: web, image: registry.local/web:1}]}\n",
	}
	if s.configMaps > 0 {
		var many strings.Builder
		for i := range s.configMaps {
			fmt.Fprintf(&many, "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra-%d-%d, namespace: %s}\ndata: {revision: \"%d\"}\n", rev, i, s.ns, rev)
		}
		tree["app/extra.yaml"] = many.String()
	}
	return s.signed(t, rev, tree)
}

// signed builds the tree files (ferry.yaml included) at revision rev and signs it with the
// site's key, into a memory store.
func (s *site) signed(t *testing.T, rev uint64, files map[string]string) (*memory.Store, ocispec.Descriptor) {
	t.Helper()
	mem := memory.New()
	res, err := bundler.Build(t.Context(), mem, bundler.Options{Dir: bundlertest.WriteTree(t, files), AllowDirty: true, Revision: rev, Created: time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := bundler.LoadPrivateKey(s.key, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bundler.Sign(t.Context(), mem, res.Descriptor, signer, s.bundle); err != nil {
		t.Fatal(err)
	}
	return mem, res.Descriptor
}

// ship builds revision rev and copies it to an address (a tar path, oci://, s3://).
func (s *site) ship(t *testing.T, rev uint64, fail bool, to string) {
	t.Helper()
	mem, desc := s.build(t, rev, fail)
	dst, err := bundles.ParseAddress(to)
	if err != nil {
		t.Fatal(err)
	}
	o := bundles.Options{S3Endpoint: tb.S3.URL, S3Region: tb.S3.Region, S3AccessKey: tb.S3.AccessKey, S3SecretKey: tb.S3.SecretKey}
	if _, err := bundles.Copy(t.Context(), memSource{mem}, desc, dst, o); err != nil {
		t.Fatal(err)
	}
}

type memSource struct{ *memory.Store }

func (memSource) Close() error { return nil }

// start runs a daemon in this process until the test ends.
func (s *site) start(t *testing.T) *daemon.Client {
	t.Helper()
	cfg, err := daemon.LoadConfig(s.config)
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	d, err := daemon.New(cfg, daemon.Options{Log: testLog(t), Ready: func() { close(ready) },
		Apply:   apply.Options{PollInterval: 200 * time.Millisecond, FailureWindow: time.Second},
		Rollout: rollout.Options{DeadlineMargin: s.margin}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon: %v", err)
		}
		d.Close()
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("daemon stopped: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("daemon not ready in 30s")
	}
	return daemon.NewClient(filepath.Join(s.dir, "run", "ferry.sock"))
}

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// waitStatus polls the daemon until cond holds for the site's bundle, or fails the test.
func (s *site) waitStatus(t *testing.T, c *daemon.Client, what string, timeout time.Duration, cond func(daemon.BundleStatus) bool) daemon.BundleStatus {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last []daemon.BundleStatus
	for time.Now().Before(deadline) {
		last = nil
		if err := c.Do(t.Context(), "GET", "/v1/status", nil, &last); err == nil {
			for _, b := range last {
				if b.Bundle == s.bundle && cond(b) {
					return b
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	s.dump(t)
	t.Fatalf("%s: not within %s; status %+v", what, timeout, last)
	return daemon.BundleStatus{}
}

const childEnv = "FERRY_NODE_TEST_DAEMON"

// runChild is the daemon as a separate process (for SIGKILL): config from the environment.
func runChild() int {
	cfg, err := daemon.LoadConfig(os.Getenv(childEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	d, err := daemon.New(cfg, daemon.Options{Log: slog.New(slog.NewTextHandler(os.Stderr, nil)),
		Apply: apply.Options{PollInterval: 200 * time.Millisecond, FailureWindow: time.Second}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer d.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := d.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// dump logs the site namespace's Deployments, ReplicaSets and Pods (a failed wait).
func (s *site) dump(t *testing.T) {
	cs, err := kubernetes.NewForConfig(tb.REST)
	if err != nil {
		return
	}
	ctx := context.Background()
	if ds, err := cs.AppsV1().Deployments(s.ns).List(ctx, metav1.ListOptions{}); err == nil {
		for _, d := range ds.Items {
			t.Logf("deployment %s gen %d observed %d status %+v template labels %v", d.Name, d.Generation, d.Status.ObservedGeneration, d.Status, d.Spec.Template.Labels)
		}
	}
	if rs, err := cs.AppsV1().ReplicaSets(s.ns).List(ctx, metav1.ListOptions{}); err == nil {
		for _, r := range rs.Items {
			t.Logf("replicaset %s spec %d status %+v", r.Name, *r.Spec.Replicas, r.Status)
		}
	}
	if ps, err := cs.CoreV1().Pods(s.ns).List(ctx, metav1.ListOptions{}); err == nil {
		for _, p := range ps.Items {
			t.Logf("pod %s phase %s deleting %v node %q labels %v conditions %+v", p.Name, p.Status.Phase, p.DeletionTimestamp, p.Spec.NodeName, p.Labels, p.Status.Conditions)
		}
	}
}
