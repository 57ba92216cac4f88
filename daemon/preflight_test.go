package daemon

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"filippo.io/age"
	authzv1 "k8s.io/api/authorization/v1"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/ferrygitops/ferry/daemon/images"
)

// fakeAPI is an API server for the preflight: /version (with the Date header it is told),
// SelfSubjectReview, and SelfSubjectAccessReview decided as RBAC would for rules that allow
// verb impersonate on serviceaccounts by namespace and name. The real API server's answers
// are in integration/node's TestCheck.
type fakeAPI struct {
	*httptest.Server
	mu sync.Mutex
	// date, when set, is the Date header of every answer.
	date time.Time
	// rules are "NS/NAME" (in NS only), "/NAME" (in every namespace) or "*" (any account
	// anywhere) the identity may impersonate.
	rules map[string]bool
	asked []authzv1.ResourceAttributes
}

func newFakeAPI(t *testing.T, rules ...string) *fakeAPI {
	t.Helper()
	f := &fakeAPI{rules: map[string]bool{}}
	for _, r := range rules {
		f.rules[r] = true
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, r *http.Request) {
		f.answer(w, map[string]string{"major": "1", "minor": "37", "gitVersion": "v1.37.0-fake"})
	})
	mux.HandleFunc("POST /apis/authentication.k8s.io/v1/selfsubjectreviews", func(w http.ResponseWriter, r *http.Request) {
		f.answer(w, map[string]any{"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview",
			"status": map[string]any{"userInfo": map[string]any{"username": "fake-admin"}}})
	})
	mux.HandleFunc("POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews", func(w http.ResponseWriter, r *http.Request) {
		// client-go sends protobuf, as to a real API server; the scheme's decoder reads both.
		var rev authzv1.SelfSubjectAccessReview
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err == nil {
			_, _, err = scheme.Codecs.UniversalDeserializer().Decode(body, nil, &rev)
		}
		if err != nil || rev.Spec.ResourceAttributes == nil {
			http.Error(w, fmt.Sprintf("bad review: %v", err), http.StatusBadRequest)
			return
		}
		a := *rev.Spec.ResourceAttributes
		f.mu.Lock()
		f.asked = append(f.asked, a)
		allowed := a.Verb == "impersonate" && a.Group == "" && a.Resource == "serviceaccounts" && a.Subresource == "" &&
			(f.rules["*"] || (a.Name != "" && (f.rules["/"+a.Name] || (a.Namespace != "" && f.rules[a.Namespace+"/"+a.Name]))))
		f.mu.Unlock()
		rev.Status.Allowed = allowed
		rev.APIVersion, rev.Kind = "authorization.k8s.io/v1", "SelfSubjectAccessReview"
		f.answer(w, rev)
	})
	f.Server = httptest.NewServer(mux)
	t.Cleanup(f.Close)
	return f
}

func (f *fakeAPI) answer(w http.ResponseWriter, v any) {
	f.mu.Lock()
	date := f.date
	f.mu.Unlock()
	if !date.IsZero() {
		w.Header().Set("Date", date.UTC().Format(http.TimeFormat))
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// preflightNode is a node's config directory whose every check passes: a trust policy, an
// age key (0600), a kubeconfig for an API server, containerd's mirror as `ferry images
// configure` writes it, a state directory.
type preflightNode struct {
	dir  string
	opts PreflightOptions
	last []Check // what run returned, in order
	// fields of the config
	kubeconfig, trust, ageKey, stateDir, images, margin, defaultSA, socket, namespace, sources string
}

func newPreflightNode(t *testing.T, api string) *preflightNode {
	t.Helper()
	dir := t.TempDir()
	_, pubPEM := quickKey(t)
	os.WriteFile(filepath.Join(dir, "ci.pub"), pubPEM, 0o644)
	n := &preflightNode{dir: dir,
		kubeconfig: filepath.Join(dir, "kubeconfig"), trust: filepath.Join(dir, "trust.yaml"), ageKey: filepath.Join(dir, "age.key"),
		stateDir: filepath.Join(dir, "state"), images: "127.0.0.1:9796", margin: "1MiB", socket: filepath.Join(dir, "run", "ferry.sock"),
		namespace: "default", sources: "[{name: usb, usb: {paths: [/media]}}]",
		opts: PreflightOptions{Registries: filepath.Join(dir, "registries.yaml"), HostsDir: filepath.Join(dir, "certs.d"), Timeout: 5 * time.Second},
	}
	os.WriteFile(n.trust, []byte("apiVersion: ferry.dev/v1\nkind: TrustPolicy\nkeys:\n  - name: ci\n    path: ci.pub\n"), 0o644)
	writeKubeconfig(t, n.kubeconfig, api)
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(n.ageKey, []byte("# created: test\n"+id.String()+"\n"), 0o600)
	changes, err := images.PlanMirror(images.MirrorConfig{Endpoint: n.images, HostsDir: n.opts.HostsDir, Registries: n.opts.Registries, Hosts: images.DefaultRegistries})
	if err != nil {
		t.Fatal(err)
	}
	if err := images.ApplyMirror(changes); err != nil {
		t.Fatal(err)
	}
	return n
}

func writeKubeconfig(t *testing.T, path, server string) {
	t.Helper()
	err := os.WriteFile(path, fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
users: [{name: u, user: {}}]
`, server), 0o600)
	if err != nil {
		t.Fatal(err)
	}
}

// run writes the config and runs the preflight; the checks by name.
func (n *preflightNode) run(t *testing.T) map[string]Check {
	t.Helper()
	age := ""
	if n.ageKey != "" {
		age = "ageKeyFile: " + n.ageKey + "\n"
	}
	sa := ""
	if n.defaultSA != "" {
		sa = "defaultServiceAccount: " + n.defaultSA + "\n"
	}
	cfg := fmt.Sprintf("stateDir: %s\nkubeconfig: %s\ntrust: %s\n%s%ssocket: %s\nmetricsAddress: \"off\"\nimagesAddress: %q\nspaceMargin: %s\nnamespace: %s\nsources: %s\n",
		n.stateDir, n.kubeconfig, n.trust, age, sa, n.socket, n.images, n.margin, n.namespace, n.sources)
	path := filepath.Join(n.dir, "config.yaml")
	os.WriteFile(path, []byte(cfg), 0o600)
	checks := Preflight(t.Context(), path, n.opts)
	n.last = checks
	out := map[string]Check{}
	for _, c := range checks {
		if _, dup := out[c.Name]; dup {
			t.Errorf("check %s appears twice", c.Name)
		}
		out[c.Name] = c
		t.Logf("%s ok=%v warning=%v: %s", c.Name, c.OK, c.Warning, c.Detail)
	}
	return out
}

// want fails the test unless check name has the given outcome ("ok", "warning", "failed")
// and its detail holds each of the strings.
func want(t *testing.T, checks map[string]Check, name, outcome string, holds ...string) {
	t.Helper()
	c, ok := checks[name]
	if !ok {
		t.Fatalf("no check %s", name)
	}
	got := "failed"
	switch {
	case c.OK && c.Warning:
		got = "warning"
	case c.OK:
		got = "ok"
	}
	if got != outcome {
		t.Errorf("%s: %s (%s), want %s", name, got, c.Detail, outcome)
	}
	for _, s := range holds {
		if !strings.Contains(c.Detail, s) {
			t.Errorf("%s: detail %q lacks %q", name, c.Detail, s)
		}
	}
}

// TestPreflightWellConfiguredNode: every check of a node set up as README says passes, in
// the documented order, each saying what it found; the daemon not running is a warning.
func TestPreflightWellConfiguredNode(t *testing.T) {
	api := newFakeAPI(t, "*")
	n := newPreflightNode(t, api.URL)
	checks := n.run(t)
	order := []string{chkConfig, chkSources, chkKubeconfig, chkAPIServer, chkImpersonation, chkTrust, chkAgeKey, chkStateDir, chkImageMirror, chkClock, chkDaemon}
	var got []string
	for _, c := range n.last {
		got = append(got, c.Name)
	}
	if fmt.Sprint(got) != fmt.Sprint(order) {
		t.Fatalf("checks %v, want %v", got, order)
	}
	for _, name := range order[:len(order)-1] {
		want(t, checks, name, "ok")
	}
	want(t, checks, chkAPIServer, "ok", "v1.37.0-fake", api.URL)
	want(t, checks, chkImpersonation, "ok", "fake-admin may impersonate service accounts")
	want(t, checks, chkTrust, "ok", "1 key (0 scoped), threshold 1")
	want(t, checks, chkAgeKey, "ok", "mode 0600", "1 identity (age1")
	want(t, checks, chkStateDir, "ok", "not there yet", "spaceMargin 1.0MiB")
	want(t, checks, chkImageMirror, "ok", `every registry ("*")`, "_default", "http://127.0.0.1:9796")
	want(t, checks, chkClock, "ok", "the API server's")
	want(t, checks, chkDaemon, "warning", "not running", n.socket)
	if _, err := os.Stat(n.stateDir); err == nil {
		t.Error("the preflight created the state directory")
	}
}

// TestPreflightRefusals holds each check to a case that fails it, and to a detail that says
// what is wrong; the other checks still run.
func TestPreflightRefusals(t *testing.T) {
	for _, tc := range []struct {
		name    string
		rules   []string // what the identity may impersonate
		setup   func(t *testing.T, n *preflightNode, api *fakeAPI)
		check   string
		outcome string
		holds   []string
	}{
		{"config invalid", nil, func(t *testing.T, n *preflightNode, _ *fakeAPI) { n.margin = "lots" }, chkConfig, "failed",
			[]string{"spaceMargin", `"lots" is not a size`}},
		{"source file missing", nil, func(t *testing.T, n *preflightNode, _ *fakeAPI) {
			n.sources = "[{name: mirror, registry: {repository: r.local/site, caFile: /nonexistent/ca.pem}}]"
		}, chkSources, "failed", []string{"sources[0].registry.caFile", "/nonexistent/ca.pem"}},
		{"kubeconfig garbage", nil, func(t *testing.T, n *preflightNode, _ *fakeAPI) {
			os.WriteFile(n.kubeconfig, []byte("clusters: {{"), 0o600)
		}, chkKubeconfig, "failed", []string{"kubeconfig"}},
		{"kubeconfig missing", nil, func(t *testing.T, n *preflightNode, _ *fakeAPI) { n.kubeconfig = filepath.Join(n.dir, "absent") }, chkKubeconfig, "failed",
			[]string{"absent"}},
		{"no API server", nil, func(t *testing.T, n *preflightNode, _ *fakeAPI) {
			writeKubeconfig(t, n.kubeconfig, "https://127.0.0.1:1")
		}, chkAPIServer, "failed",
			[]string{"https://127.0.0.1:1", "connection refused", "systemctl status k3s"}},
		{"impersonation not checked without an API server", nil, func(t *testing.T, n *preflightNode, _ *fakeAPI) {
			writeKubeconfig(t, n.kubeconfig, "https://127.0.0.1:1")
		}, chkImpersonation, "failed", []string{"not checked: the API server is not reachable"}},
		{"clock not compared without an API server", nil, func(t *testing.T, n *preflightNode, _ *fakeAPI) {
			writeKubeconfig(t, n.kubeconfig, "https://127.0.0.1:1")
		}, chkClock, "warning", []string{"not compared with the API server"}},
		{"impersonation denied", []string{"other/deployer"}, func(t *testing.T, n *preflightNode, _ *fakeAPI) { n.defaultSA = "deployer" }, chkImpersonation, "failed",
			[]string{"fake-admin may not impersonate system:serviceaccount:default:deployer (defaultServiceAccount)", "impersonate on serviceaccounts"}},
		{"impersonation in the node's namespace only", []string{"default/deployer"}, func(t *testing.T, n *preflightNode, _ *fakeAPI) { n.defaultSA = "deployer" },
			chkImpersonation, "warning", []string{"deployer only in system:serviceaccount:default:deployer, not in every namespace"}},
		{"impersonation of a key scope's account", []string{"/deployer", "team-a/builder"}, func(t *testing.T, n *preflightNode, _ *fakeAPI) {
			n.defaultSA = "deployer"
			os.WriteFile(n.trust, []byte("apiVersion: ferry.dev/v1\nkind: TrustPolicy\nkeys:\n  - name: ci\n    path: ci.pub\n"+
				"    scope: {bundles: [team-*], namespaces: [team-a, team-b], serviceAccount: builder}\n"), 0o644)
		}, chkImpersonation, "failed", []string{"may not impersonate system:serviceaccount:team-b:builder (key ci)"}},
		{"no service account may be impersonated", []string{}, nil, chkImpersonation, "warning",
			[]string{"may not impersonate service accounts: components that name serviceAccountName will fail"}},
		{"policy missing", nil, func(t *testing.T, n *preflightNode, _ *fakeAPI) { os.Remove(n.trust) }, chkTrust, "failed",
			[]string{"trust.yaml", "no such file"}},
		{"policy key missing", nil, func(t *testing.T, n *preflightNode, _ *fakeAPI) { os.Remove(filepath.Join(n.dir, "ci.pub")) }, chkTrust, "failed",
			[]string{"keys[0]", "ci.pub"}},
		{"age key mode 0644", nil, func(t *testing.T, n *preflightNode, _ *fakeAPI) { os.Chmod(n.ageKey, 0o644) }, chkAgeKey, "failed",
			[]string{"mode 0644", "chmod 600"}},
		{"age key not a key", nil, func(t *testing.T, n *preflightNode, _ *fakeAPI) { os.WriteFile(n.ageKey, []byte("hello\n"), 0o600) }, chkAgeKey, "failed",
			[]string{"line 1 is not an age identity"}},
		{"age key missing", nil, func(t *testing.T, n *preflightNode, _ *fakeAPI) { os.Remove(n.ageKey) }, chkAgeKey, "failed",
			[]string{"age.key", "no such file"}},
		{"age key not set", nil, func(t *testing.T, n *preflightNode, _ *fakeAPI) { n.ageKey = "" }, chkAgeKey, "ok",
			[]string{"SOPS-encrypted files cannot be rendered"}},
		{"state dir a file", nil, func(t *testing.T, n *preflightNode, _ *fakeAPI) { os.WriteFile(n.stateDir, nil, 0o600) }, chkStateDir, "failed",
			[]string{"is not a directory"}},
		{"space margin above the free space", nil, func(t *testing.T, n *preflightNode, _ *fakeAPI) { n.margin = "1000000GiB" }, chkStateDir, "failed",
			[]string{"less than spaceMargin 1000000.0GiB", "lower spaceMargin"}},
		{"registries.yaml without the mirror", nil, func(t *testing.T, n *preflightNode, _ *fakeAPI) {
			os.WriteFile(n.opts.Registries, []byte("mirrors:\n  docker.io:\n    endpoint: [\"https://mirror.site.local:5000\"]\n"), 0o644)
			os.RemoveAll(n.opts.HostsDir)
		}, chkImageMirror, "failed", []string{"names the image endpoint http://127.0.0.1:9796", "ferry images configure"}},
		{"endpoint over https", nil, func(t *testing.T, n *preflightNode, _ *fakeAPI) {
			os.WriteFile(n.opts.Registries, []byte("mirrors:\n  \"*\":\n    endpoint: [\"https://127.0.0.1:9796\"]\n"), 0o644)
			os.RemoveAll(n.opts.HostsDir)
		}, chkImageMirror, "failed", []string{"ferry images configure"}},
		{"another endpoint", nil, func(t *testing.T, n *preflightNode, _ *fakeAPI) { n.images = "127.0.0.1:9800" }, chkImageMirror, "failed",
			[]string{"http://127.0.0.1:9800"}},
		{"registries.yaml not read by k3s yet", nil, func(t *testing.T, n *preflightNode, _ *fakeAPI) { os.RemoveAll(n.opts.HostsDir) }, chkImageMirror, "warning",
			[]string{"restart k3s"}},
		{"hosts.toml as k3s writes it", nil, func(t *testing.T, n *preflightNode, _ *fakeAPI) {
			os.Remove(n.opts.Registries)
			os.RemoveAll(n.opts.HostsDir)
			os.MkdirAll(filepath.Join(n.opts.HostsDir, "_default"), 0o755)
			os.WriteFile(filepath.Join(n.opts.HostsDir, "_default", "hosts.toml"), []byte("# File generated by k3s. DO NOT EDIT.\n\n"+
				"[host.\"http://127.0.0.1:9796/v2\"]\n  capabilities = [\"pull\", \"resolve\"]\n  override_path = true\n"), 0o644)
		}, chkImageMirror, "ok", []string{"_default"}},
		{"images off", nil, func(t *testing.T, n *preflightNode, _ *fakeAPI) {
			n.images = "off"
			os.Remove(n.opts.Registries)
			os.RemoveAll(n.opts.HostsDir)
		}, chkImageMirror, "ok", []string{"imagesAddress is off"}},
		{"clock an hour ahead of the API server", nil, func(t *testing.T, n *preflightNode, api *fakeAPI) { api.date = time.Now().Add(-time.Hour) }, chkClock, "failed",
			[]string{"1h0m", "ahead of the API server's", "more than 5m0s"}},
		{"clock an hour behind the API server", nil, func(t *testing.T, n *preflightNode, api *fakeAPI) { api.date = time.Now().Add(time.Hour) }, chkClock, "failed",
			[]string{"behind the API server's"}},
		{"clock a minute off", nil, func(t *testing.T, n *preflightNode, api *fakeAPI) { api.date = time.Now().Add(-time.Minute) }, chkClock, "ok",
			[]string{"1m", "ahead of the API server's"}},
		{"clock before the floor", nil, func(t *testing.T, n *preflightNode, _ *fakeAPI) {
			n.opts.Now = func() time.Time { return time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC) }
		}, chkClock, "failed", []string{"2000-01-01", "before the year 2025"}},
		{"clock before the build", nil, func(t *testing.T, n *preflightNode, _ *fakeAPI) {
			n.opts.BuildTime = time.Now().Add(24 * time.Hour)
		}, chkClock, "failed", []string{"before this binary's build"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rules := tc.rules
			if rules == nil {
				rules = []string{"*"}
			}
			api := newFakeAPI(t, rules...)
			n := newPreflightNode(t, api.URL)
			if tc.setup != nil {
				tc.setup(t, n, api)
			}
			checks := n.run(t)
			want(t, checks, tc.check, tc.outcome, tc.holds...)
			// One refusal stops nothing: every check is there unless the config is invalid.
			if tc.check != chkConfig && len(checks) != 11 {
				t.Errorf("%d checks, want all 11", len(checks))
			}
		})
	}
}

// TestPreflightAsksForImpersonation: the reviews ask what the API server checks when the
// engine impersonates system:serviceaccount:NS:NAME (apply/tenancy.go): verb impersonate on
// serviceaccounts NAME in NS, group "" — first in every namespace, then, refused, in each
// namespace the account must work in.
func TestPreflightAsksForImpersonation(t *testing.T) {
	api := newFakeAPI(t, "default/deployer")
	n := newPreflightNode(t, api.URL)
	n.defaultSA = "deployer"
	n.run(t)
	got := fmt.Sprint(api.asked)
	wantAsked := fmt.Sprint([]authzv1.ResourceAttributes{
		{Verb: "impersonate", Resource: "serviceaccounts", Name: "deployer"},
		{Verb: "impersonate", Resource: "serviceaccounts", Namespace: "default", Name: "deployer"},
	})
	if got != wantAsked {
		t.Fatalf("asked %s, want %s", got, wantAsked)
	}
}

// TestPreflightBesideARunningDaemon: the preflight does not open the store, whose lock the
// daemon holds, and reports the daemon answering on its socket.
func TestPreflightBesideARunningDaemon(t *testing.T) {
	api := newFakeAPI(t, "*")
	n := newPreflightNode(t, api.URL)
	d := testDaemon(t, n.trust) // holds its state directory's lock
	n.stateDir = d.cfg.StateDir
	os.MkdirAll(filepath.Dir(n.socket), 0o700)
	ln, err := net.Listen("unix", n.socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: d.apiHandler()}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	begin := time.Now()
	checks := n.run(t)
	if took := time.Since(begin); took > 3*time.Second {
		t.Fatalf("the preflight took %s: it must not wait for the store's lock", took)
	}
	want(t, checks, chkDaemon, "ok", "running, answers on "+n.socket, "0 bundles")
	want(t, checks, chkStateDir, "ok", d.cfg.StateDir)
	for name, c := range checks {
		if !c.OK || c.Warning {
			t.Errorf("%s: %+v", name, c)
		}
	}
}
