package cluster

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"oras.land/oras-go/v2/content/memory"

	"github.com/ferrygitops/ferry/apply"
	"github.com/ferrygitops/ferry/bundler"
	"github.com/ferrygitops/ferry/bundler/bundlertest"
	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/rollout"
	"github.com/ferrygitops/ferry/store"
	"github.com/ferrygitops/ferry/verify"
)

// node is one edge node under test: a store and an engine over the testbed's cluster, with
// every request the engine sends counted.
type node struct {
	st     *store.Store
	eng    *rollout.Manager
	reqs   *counter
	dyn    dynamic.Interface
	bundle string
}

// counter counts requests by verb class, and the users writes impersonated.
type counter struct {
	mu            sync.Mutex
	reads, writes int
	log           []string
	writers       map[string]int // Impersonate-User of each write ("" for none)
}

func (c *counter) RoundTrip(rt http.RoundTripper) http.RoundTripper {
	return roundTripper(func(r *http.Request) (*http.Response, error) {
		c.mu.Lock()
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			c.reads++
		} else {
			c.writes++
			c.log = append(c.log, r.Method+" "+r.URL.Path)
			if c.writers == nil {
				c.writers = map[string]int{}
			}
			c.writers[r.Header.Get("Impersonate-User")]++
		}
		c.mu.Unlock()
		return rt.RoundTrip(r)
	})
}

func (c *counter) reset() (reads, writes int, log []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	reads, writes, log = c.reads, c.writes, c.log
	c.reads, c.writes, c.log, c.writers = 0, 0, nil, nil
	return
}

// writersSince returns the users the writes since the last reset impersonated.
func (c *counter) writersSince() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.writers)
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func newNode(t *testing.T, bundle string, opts apply.Options) *node {
	t.Helper()
	return newNodeAt(t, filepath.Join(t.TempDir(), "state"), bundle, opts)
}

// newNodeAt is newNode with its state directory at stateDir.
func newNodeAt(t *testing.T, stateDir, bundle string, opts apply.Options) *node {
	t.Helper()
	st, err := store.Open(stateDir, store.Options{SpaceMargin: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c := &counter{}
	cfg := rest.CopyConfig(tb.REST)
	cfg.WrapTransport = c.RoundTrip
	if opts.PollInterval == 0 {
		opts.PollInterval = 200 * time.Millisecond
	}
	if opts.FailureWindow == 0 {
		opts.FailureWindow = time.Second
	}
	ap, err := apply.New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	eng := rollout.New(st, ap, rollout.Options{Log: opts.Log})
	dyn, err := dynamic.NewForConfig(tb.REST)
	if err != nil {
		t.Fatal(err)
	}
	return &node{st: st, eng: eng, reqs: c, dyn: dyn, bundle: bundle}
}

// admit builds a bundle named n.bundle from files (ferry.yaml is generated from spec, the
// components part of a Bundle) at revision rev and admits it into the node's store.
func (n *node) admit(t *testing.T, rev uint64, components string, files map[string]string) {
	t.Helper()
	if err := admitTree(t.Context(), n.st, t.TempDir(), n.bundle, rev, components, files, nil); err != nil {
		t.Fatal(err)
	}
}

// admitSigned is admit for a bundle whose signers' keys have scopes: the verification
// record is what daemon.Ingest stores after verify.Result.Scoped.
func (n *node) admitSigned(t *testing.T, rev uint64, components string, files map[string]string, scopes ...bundles.Scope) {
	t.Helper()
	res := verify.Result{Threshold: len(scopes)}
	for i := range scopes {
		res.Signers = append(res.Signers, verify.Signer{KeyID: "sha256:test", KeySource: "team-key", Scope: &scopes[i]})
	}
	record, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	if err := admitTree(t.Context(), n.st, t.TempDir(), n.bundle, rev, components, files, record); err != nil {
		t.Fatal(err)
	}
}

// admitTree is admit for a caller without a testing.T (a child process): the tree is
// written under dir.
func admitTree(ctx context.Context, st *store.Store, dir, bundle string, rev uint64, components string, files map[string]string, verification json.RawMessage) error {
	all := map[string]string{"ferry.yaml": "apiVersion: ferry.dev/v1\nkind: Bundle\nmetadata:\n  name: " + bundle +
		"\nspec:\n  version: 1.0." + itoa(rev) + "\n  components:\n" + indent(components, "    ")}
	maps.Copy(all, files)
	for name, data := range all {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			return err
		}
	}
	mem := memory.New()
	res, err := bundler.Build(ctx, mem, bundler.Options{Dir: dir, AllowDirty: true, Revision: rev, Created: time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC)})
	if err != nil {
		return err
	}
	b, err := bundles.Open(ctx, mem, res.Descriptor)
	if err != nil {
		return err
	}
	_, err = st.Admit(ctx, mem, store.Admission{
		Name: bundle, Revision: rev, Version: b.Metadata.Version, Manifest: res.Descriptor,
		Blobs: append([]ocispec.Descriptor{b.Manifest.Config}, b.Manifest.Layers...), Verification: verification,
	})
	return err
}

// runHelmChild is the child process of a test: a store and engine of its own roll out one
// revision of bundle hp to the cluster kubeconfig reaches.
func runHelmChild(kubeconfig, components string, files map[string]string) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "ferry-child-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	st, err := store.Open(filepath.Join(dir, "state"), store.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	if err := admitTree(ctx, st, filepath.Join(dir, "src"), "hp", 1, components, files, nil); err != nil {
		return err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	ap, err := apply.New(cfg, apply.Options{})
	if err != nil {
		return err
	}
	eng := rollout.New(st, ap, rollout.Options{})
	_, err = eng.Rollout(ctx, "hp", 1)
	return err
}

// createNamespace creates namespace ns for a test.
func (n *node) createNamespace(t *testing.T, ns string) {
	t.Helper()
	n.createObject(t, namespaces, "", map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}})
}

// createObject creates an object the test needs that no bundle owns.
func (n *node) createObject(t *testing.T, gvr schema.GroupVersionResource, ns string, obj map[string]any) {
	t.Helper()
	var ri dynamic.ResourceInterface = n.dyn.Resource(gvr)
	if ns != "" {
		ri = n.dyn.Resource(gvr).Namespace(ns)
	}
	if _, err := ri.Create(t.Context(), &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }

func indent(s, pre string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = pre + l
	}
	return strings.Join(lines, "\n") + "\n"
}

var (
	configMaps  = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	secrets     = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}
	deployments = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	namespaces  = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
)

// get returns the live object or nil when it does not exist.
func (n *node) get(t *testing.T, gvr schema.GroupVersionResource, ns, name string) *unstructured.Unstructured {
	t.Helper()
	var ri dynamic.ResourceInterface = n.dyn.Resource(gvr)
	if ns != "" {
		ri = n.dyn.Resource(gvr).Namespace(ns)
	}
	u, err := ri.Get(t.Context(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	if u.GetDeletionTimestamp() != nil {
		return nil // going away
	}
	return u
}

func (n *node) state(t *testing.T, rev uint64) store.State {
	t.Helper()
	r, err := n.st.GetRevision(n.bundle, rev)
	if err != nil {
		t.Fatal(err)
	}
	return r.State
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// admitRaw packs a bundle by hand (no bundler checks) from the given components and one
// file map per component, and admits it: what a hostile or buggy bundler could produce.
func (n *node) admitRaw(t *testing.T, rev uint64, comps []bundles.Component, dirs []map[string]string) {
	t.Helper()
	m := &bundles.Metadata{SchemaVersion: bundles.SchemaVersion, Name: n.bundle, Version: "1.0." + itoa(rev), Revision: rev,
		Created: time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC), Components: comps}
	var layers [][]byte
	for _, files := range dirs {
		var buf bytes.Buffer
		if err := bundles.PackDir(bundlertest.WriteTree(t, files), &buf); err != nil {
			t.Fatal(err)
		}
		layers = append(layers, buf.Bytes())
	}
	mem := memory.New()
	desc, err := bundles.Pack(t.Context(), mem, m, layers)
	if err != nil {
		t.Fatal(err)
	}
	b, err := bundles.Open(t.Context(), mem, desc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.st.Admit(t.Context(), mem, store.Admission{
		Name: n.bundle, Revision: rev, Version: m.Version, Manifest: desc,
		Blobs: append([]ocispec.Descriptor{b.Manifest.Config}, b.Manifest.Layers...),
	}); err != nil {
		t.Fatal(err)
	}
}

func gvr(group, version, resource string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: group, Version: version, Resource: resource}
}

// secretData decodes a Secret's data.
func secretData(t *testing.T, u *unstructured.Unstructured) map[string]string {
	t.Helper()
	raw, _, _ := unstructured.NestedStringMap(u.Object, "data")
	out := map[string]string{}
	for k, v := range raw {
		b, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			t.Fatal(err)
		}
		out[k] = string(b)
	}
	return out
}
