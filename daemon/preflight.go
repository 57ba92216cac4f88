package daemon

// The node's preflight, `ferry check` (issue #21), as `flux check --pre` is for Flux: each
// check runs on its own and says ✔ or ✖ with a detail, so one run shows everything that
// keeps the node from working. Nothing here writes: the store is not opened (the running
// daemon holds its lock), no directory is created, the cluster is only asked questions
// (version, SelfSubjectAccessReview, SelfSubjectReview), and the daemon only GET /v1/status.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"
	"golang.org/x/sys/unix"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/client-go/discovery"
	authnclient "k8s.io/client-go/kubernetes/typed/authentication/v1"
	authzclient "k8s.io/client-go/kubernetes/typed/authorization/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/ferrygitops/ferry/apply/decrypt"
	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/daemon/images"
	"github.com/ferrygitops/ferry/verify"
)

// Limits of the preflight.
const (
	// MaxClockSkew is how far the local clock may be from the API server's before the clock
	// check fails: beyond it, certificates and tokens start to look not yet valid or expired,
	// and times in the node's history disagree with the cluster's.
	MaxClockSkew = 5 * time.Minute
	// maxMirrorFileBytes bounds registries.yaml and each hosts.toml read.
	maxMirrorFileBytes = 1 << 20
	// defaultSpaceMargin is the store's margin when spaceMargin is not set (store.Options).
	defaultSpaceMargin = 64 << 20
)

// ClockFloor is a time every sane clock is past: a node whose clock reads earlier (a dead
// RTC battery boots at 1970 or 2000) has not been set.
var ClockFloor = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// Check is the result of one preflight check.
type Check struct {
	// Name is short and stable, for scripts: config, kubeconfig, api-server, …
	Name string `json:"name"`
	// OK is false when the check failed: the node will not work as configured.
	OK bool `json:"ok"`
	// Warning marks a check that passed with a caveat the detail states (the daemon not
	// running, a mirror k3s has not read yet).
	Warning bool `json:"warning,omitempty"`
	// Detail is one line: what was found, and for a failure what to do.
	Detail string `json:"detail"`
}

// PreflightOptions are what a preflight adds to the config.
type PreflightOptions struct {
	// Timeout bounds each request to the API server and the daemon (0 means 10s).
	Timeout time.Duration
	// Registries is k3s's registries.yaml (empty means images.K3sRegistries).
	Registries string
	// HostsDir is containerd's registry config_path, one <registry>/hosts.toml each (empty
	// means images.K3sHostsDir).
	HostsDir string
	// BuildTime is when the binary was built (its commit's time); a clock before it is
	// wrong. Zero checks against ClockFloor only.
	BuildTime time.Time
	// Now is the local clock (nil means time.Now).
	Now func() time.Time
}

// The names of the checks, in the order Preflight returns them.
const (
	chkConfig        = "config"
	chkSources       = "sources"
	chkKubeconfig    = "kubeconfig"
	chkAPIServer     = "api-server"
	chkImpersonation = "impersonation"
	chkTrust         = "trust-policy"
	chkAgeKey        = "age-key"
	chkStateDir      = "state-dir"
	chkImageMirror   = "image-mirror"
	chkClock         = "clock"
	chkDaemon        = "daemon"
)

// Preflight loads the config at path and checks, each on its own, what the node needs: the
// config and the files its sources name, the kubeconfig, the API server and its version,
// the right to impersonate the service accounts components will run as, the trust policy,
// the age key and its mode, the state directory and its free space, containerd's mirror of
// the image endpoint, the clock, and whether the daemon answers. A config that does not load
// is the only check returned. It writes nothing, and is safe beside a running daemon.
func Preflight(ctx context.Context, path string, opts PreflightOptions) []Check {
	cfg, err := LoadConfig(path)
	if err != nil {
		return []Check{failed(chkConfig, "%s", oneLine(err.Error()))}
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.Registries == "" {
		opts.Registries = images.K3sRegistries
	}
	if opts.HostsDir == "" {
		opts.HostsDir = images.K3sHostsDir
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	p := &preflight{cfg: cfg, opts: opts}
	out := []Check{passed(chkConfig, "%s: valid", path), p.sources(), p.kubeconfig()}
	out = append(out, p.apiServer(ctx))
	out = append(out, p.impersonation(ctx))
	out = append(out, p.trust(), p.ageKey(), p.stateDir(), p.imageMirror(), p.clock(), p.daemon(ctx))
	return out
}

// preflight is one run: the config and what earlier checks found that later ones use.
type preflight struct {
	cfg  *Config
	opts PreflightOptions
	// rest is the kubeconfig's connection, nil when it does not load.
	rest *rest.Config
	// apiErr says why the API server was not reached ("" when it was).
	apiErr string
	// serverDate is the Date header of the API server's answer, and local the local clock
	// when it came.
	serverDate, local time.Time
}

func passed(name, format string, a ...any) Check {
	return Check{Name: name, OK: true, Detail: fmt.Sprintf(format, a...)}
}

func warned(name, format string, a ...any) Check {
	return Check{Name: name, OK: true, Warning: true, Detail: fmt.Sprintf(format, a...)}
}

func failed(name, format string, a ...any) Check {
	return Check{Name: name, Detail: fmt.Sprintf(format, a...)}
}

// oneLine joins the lines of a multi-line message (errors.Join, a config's problems).
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ; ")), " ")
}

// sources checks that the files the sources name can be read (as ferry daemon
// --check-config does).
func (p *preflight) sources() Check {
	var names, problems []string
	readable := func(field, path string) {
		if path == "" {
			return
		}
		f, err := os.Open(path)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", field, err))
			return
		}
		f.Close()
	}
	for i, s := range p.cfg.Sources {
		field := fmt.Sprintf("sources[%d]", i)
		kind := "usb"
		if r := s.Registry; r != nil {
			kind = "registry " + r.Repository
			readable(field+".registry.caFile", r.CAFile)
			readable(field+".registry.dockerConfig", r.DockerConfig)
		}
		if s3 := s.S3; s3 != nil {
			kind = "s3 " + s3.Bucket
			readable(field+".s3.credentialsFile", s3.CredentialsFile)
		}
		names = append(names, s.Name+" ("+kind+")")
	}
	if len(problems) > 0 {
		return failed(chkSources, "%s", strings.Join(problems, "; "))
	}
	return passed(chkSources, "%s", strings.Join(names, ", "))
}

func (p *preflight) kubeconfig() Check {
	path := p.cfg.Kubeconfig
	rc, err := clientcmd.BuildConfigFromFlags("", path) // as the daemon loads it
	if err != nil {
		p.apiErr = "the kubeconfig does not load"
		return failed(chkKubeconfig, "%s: %s", path, oneLine(err.Error()))
	}
	p.rest = rc
	detail := fmt.Sprintf("%s: server %s", path, rc.Host)
	if raw, err := clientcmd.LoadFromFile(path); err == nil && raw.CurrentContext != "" {
		detail += ", context " + raw.CurrentContext
	}
	return passed(chkKubeconfig, "%s", detail)
}

// client returns the kubeconfig's connection with the preflight's timeout, and wrap, if not
// nil, around its transport.
func (p *preflight) client(wrap func(http.RoundTripper) http.RoundTripper) *rest.Config {
	rc := rest.CopyConfig(p.rest)
	rc.Timeout = p.opts.Timeout
	if wrap != nil {
		rc.Wrap(wrap)
	}
	return rc
}

// dateRecorder keeps the Date header of the answers it passes on, and the local time each
// arrived, for the clock check.
type dateRecorder struct {
	next http.RoundTripper
	p    *preflight
}

func (d dateRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := d.next.RoundTrip(req)
	if err == nil {
		if t, perr := http.ParseTime(resp.Header.Get("Date")); perr == nil {
			d.p.serverDate, d.p.local = t, d.p.opts.Now()
		}
	}
	return resp, err
}

// apiServer asks the API server for its version (discovery's ServerVersion).
func (p *preflight) apiServer(ctx context.Context) Check {
	if p.rest == nil {
		return failed(chkAPIServer, "not checked: %s", p.apiErr)
	}
	rc := p.client(func(rt http.RoundTripper) http.RoundTripper { return dateRecorder{rt, p} })
	dc, err := discovery.NewDiscoveryClientForConfig(rc)
	if err == nil {
		ctx, cancel := context.WithTimeout(ctx, p.opts.Timeout)
		defer cancel()
		var info *version.Info
		if info, err = dc.ServerVersionWithContext(ctx); err == nil {
			return passed(chkAPIServer, "%s: Kubernetes %s", rc.Host, info.GitVersion)
		}
	}
	p.apiErr = "the API server is not reachable"
	return failed(chkAPIServer, "%s: %s (is k3s running? systemctl status k3s)", p.rest.Host, oneLine(err.Error()))
}

// impersonated is one service account the applier will impersonate, and where.
type impersonated struct {
	name string
	// in are the namespaces it will surely be used in (the node's namespace, a key scope's
	// literal namespaces): not being allowed there fails the check.
	in map[string]bool
	// elsewhere says it may also be used in namespaces that cannot be listed here (a
	// component's own namespace, a scope's pattern like team-*), shown in patterns.
	elsewhere bool
	patterns  []string
	why       []string
}

// accounts lists the service accounts the applier impersonates without a bundle asking:
// defaultServiceAccount, in each component's namespace (the node's namespace when the
// component names none), and each key scope's serviceAccount, in the scope's namespaces.
// A component's own serviceAccountName is only known from its bundle.
func (p *preflight) accounts(policy verify.Policy) []*impersonated {
	by := map[string]*impersonated{}
	get := func(name, why string) *impersonated {
		a := by[name]
		if a == nil {
			a = &impersonated{name: name, in: map[string]bool{}}
			by[name] = a
		}
		a.why = append(a.why, why)
		return a
	}
	if sa := p.cfg.DefaultServiceAccount; sa != "" {
		a := get(sa, "defaultServiceAccount")
		a.in[p.cfg.Namespace], a.elsewhere = true, true
	}
	var scopes []*bundles.Scope
	var owners []string
	for _, k := range policy.Keys {
		scopes, owners = append(scopes, k.Scope), append(owners, "key "+k.Source)
	}
	if kl := policy.Keyless; kl != nil {
		for _, id := range kl.Identities {
			subject := id.Subject
			if id.SubjectRE != nil {
				subject = id.SubjectRE.String()
			}
			scopes, owners = append(scopes, id.Scope), append(owners, "keyless identity "+subject)
		}
	}
	for i, sc := range scopes {
		if sc == nil || sc.ServiceAccount == "" {
			continue
		}
		a := get(sc.ServiceAccount, owners[i])
		if len(sc.Namespaces) == 0 {
			a.in[p.cfg.Namespace], a.elsewhere = true, true
		}
		for _, ns := range sc.Namespaces {
			if strings.ContainsAny(ns, `*?[\`) {
				a.elsewhere, a.patterns = true, append(a.patterns, ns)
			} else {
				a.in[ns] = true
			}
		}
	}
	out := make([]*impersonated, 0, len(by))
	for _, a := range by {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// impersonation asks, with SelfSubjectAccessReviews, whether Ferry's identity may
// impersonate each service account the applier will run components as. The applier sets only
// the user name (apply/tenancy.go), system:serviceaccount:NS:NAME, which the API server
// authorizes as verb impersonate on serviceaccounts NAME in NS (group ""); it then adds the
// service account's groups itself, unchecked.
func (p *preflight) impersonation(ctx context.Context) Check {
	if p.rest == nil || p.apiErr != "" {
		return failed(chkImpersonation, "not checked: %s", p.apiErr)
	}
	policy, _ := verify.LoadPolicy(p.cfg.Trust) // a policy that does not load fails its own check
	ctx, cancel := context.WithTimeout(ctx, p.opts.Timeout)
	defer cancel()
	rc := p.client(nil)
	az, err := authzclient.NewForConfig(rc)
	if err != nil {
		return failed(chkImpersonation, "%v", err)
	}
	who := "Ferry's identity"
	if an, err := authnclient.NewForConfig(rc); err == nil {
		// SelfSubjectReview is Kubernetes 1.28+; without it the identity stays unnamed.
		if r, err := an.SelfSubjectReviews().Create(ctx, &authnv1.SelfSubjectReview{}, metav1.CreateOptions{}); err == nil && r.Status.UserInfo.Username != "" {
			who = r.Status.UserInfo.Username
		}
	}
	may := func(ns, name string) (bool, error) {
		r, err := az.SelfSubjectAccessReviews().Create(ctx, &authzv1.SelfSubjectAccessReview{Spec: authzv1.SelfSubjectAccessReviewSpec{
			ResourceAttributes: &authzv1.ResourceAttributes{Verb: "impersonate", Group: "", Resource: "serviceaccounts", Namespace: ns, Name: name},
		}}, metav1.CreateOptions{})
		if err != nil {
			return false, err
		}
		return r.Status.Allowed, nil
	}
	accounts := p.accounts(policy)
	if len(accounts) == 0 {
		// Only components that name serviceAccountName impersonate: any account, anywhere.
		ok, err := may("", "")
		switch {
		case err != nil:
			return failed(chkImpersonation, "SelfSubjectAccessReview: %v", err)
		case !ok:
			return warned(chkImpersonation, "%s may not impersonate service accounts: components that name serviceAccountName will fail (no defaultServiceAccount or key scope names one)", who)
		}
		return passed(chkImpersonation, "%s may impersonate service accounts (no defaultServiceAccount or key scope names one)", who)
	}
	var good, bad, partial []string
	for _, a := range accounts {
		if a.elsewhere {
			ok, err := may("", a.name)
			if err != nil {
				return failed(chkImpersonation, "SelfSubjectAccessReview: %v", err)
			}
			if ok {
				good = append(good, a.name+" in every namespace")
				continue
			}
		}
		var yes, no []string
		for _, ns := range sortedKeys(a.in) {
			ok, err := may(ns, a.name)
			if err != nil {
				return failed(chkImpersonation, "SelfSubjectAccessReview: %v", err)
			}
			sa := "system:serviceaccount:" + ns + ":" + a.name
			if ok {
				yes = append(yes, sa)
			} else {
				no = append(no, sa)
			}
		}
		from := " (" + strings.Join(a.why, ", ") + ")"
		switch {
		case len(no) > 0:
			bad = append(bad, strings.Join(no, ", ")+from)
		case a.elsewhere:
			other := "other namespaces"
			if len(a.patterns) > 0 {
				other = "namespaces matching " + strings.Join(a.patterns, ",")
			}
			partial = append(partial, fmt.Sprintf("%s only in %s, not in every namespace: components in %s may be refused%s",
				a.name, orNone(yes), other, from))
		default:
			good = append(good, strings.Join(yes, ", "))
		}
	}
	if len(bad) > 0 {
		return failed(chkImpersonation, "%s may not impersonate %s: grant it verb impersonate on serviceaccounts (k3s's admin has it)", who, strings.Join(bad, "; "))
	}
	if len(partial) > 0 {
		return warned(chkImpersonation, "%s may impersonate %s", who, strings.Join(append(good, partial...), "; "))
	}
	return passed(chkImpersonation, "%s may impersonate %s", who, strings.Join(good, "; "))
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "no namespace"
	}
	return strings.Join(s, ", ")
}

func (p *preflight) trust() Check {
	pol, err := verify.LoadPolicy(p.cfg.Trust)
	if err != nil {
		return failed(chkTrust, "%s", oneLine(err.Error()))
	}
	scoped := 0
	for _, k := range pol.Keys {
		if k.Scope != nil {
			scoped++
		}
	}
	threshold := max(pol.Threshold, 1)
	detail := fmt.Sprintf("%s: %s (%d scoped)", p.cfg.Trust, plural(len(pol.Keys), "key"), scoped)
	if kl := pol.Keyless; kl != nil {
		detail += ", " + plural(len(kl.Identities), "keyless identity")
	}
	return passed(chkTrust, "%s, threshold %d", detail, threshold)
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	if strings.HasSuffix(what, "y") {
		return fmt.Sprintf("%d %sies", n, strings.TrimSuffix(what, "y"))
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// ageKey checks the age key file: it parses, group and others have no access (the daemon
// refuses it otherwise), and the user who runs the check owns it.
func (p *preflight) ageKey() Check {
	path := p.cfg.AgeKeyFile
	if path == "" {
		return passed(chkAgeKey, "none (ageKeyFile not set): bundles with SOPS-encrypted files cannot be rendered on this node")
	}
	fi, err := os.Stat(path)
	if err != nil {
		return failed(chkAgeKey, "%v", err)
	}
	keys, err := decrypt.LoadKeys(path) // refuses group or others access, parses
	if err != nil {
		return failed(chkAgeKey, "%v", err)
	}
	ids := keys.Recipients()
	detail := fmt.Sprintf("%s: mode %04o, %s (%s)", path, fi.Mode().Perm(), plural(len(ids), "identity"), strings.Join(ids, ", "))
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return warned(chkAgeKey, "%s; owned by uid %d, not by uid %d who runs this (the daemon runs as root): chown it", detail, st.Uid, os.Geteuid())
	}
	return passed(chkAgeKey, "%s", detail)
}

// stateDir checks that stateDir is a directory that can be written, or can be created, and
// that its file system has more free space than spaceMargin.
func (p *preflight) stateDir() Check {
	dir := p.cfg.StateDir
	margin, _ := ParseSize(p.cfg.SpaceMargin) // validated with the config
	if margin <= 0 {
		margin = defaultSpaceMargin
	}
	at, exists := dir, true
	for {
		fi, err := os.Stat(at)
		if err == nil {
			if !fi.IsDir() {
				return failed(chkStateDir, "%s is not a directory", at)
			}
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return failed(chkStateDir, "%v", err)
		}
		parent := filepath.Dir(at)
		if parent == at {
			return failed(chkStateDir, "%v", err)
		}
		at, exists = parent, false
	}
	// access(2) also says EROFS for a read-only file system.
	if err := unix.Access(at, unix.W_OK|unix.X_OK); err != nil {
		what := dir
		if !exists {
			what = fmt.Sprintf("%s does not exist and %s", dir, at)
		}
		return failed(chkStateDir, "%s cannot be written: %v", what, err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(at, &st); err != nil {
		return failed(chkStateDir, "statfs %s: %v", at, err)
	}
	free := int64(st.Bavail) * int64(st.Bsize) // Bsize is int32 on some platforms
	where := dir
	if !exists {
		where = fmt.Sprintf("%s (not there yet; the daemon creates it in %s)", dir, at)
	}
	if free < margin {
		return failed(chkStateDir, "%s: %s free, less than spaceMargin %s: nothing can be admitted; free space, or lower spaceMargin",
			where, sizeString(free), sizeString(margin))
	}
	return passed(chkStateDir, "%s: %s free, spaceMargin %s", where, sizeString(free), sizeString(margin))
}

// sizeString writes n with the largest binary unit ParseSize reads that keeps it at 1 or
// more, one decimal.
func sizeString(n int64) string {
	for _, u := range []struct {
		name string
		size int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.size {
			return fmt.Sprintf("%.1f%s", float64(n)/float64(u.size), u.name)
		}
	}
	return fmt.Sprintf("%dB", n)
}

// imageMirror checks that containerd reaches the image endpoint as a mirror, as `ferry
// images configure` sets it up: k3s's registries.yaml names http://<imagesAddress> as an
// endpoint of "*" (or of some registries), and containerd's hosts.toml files (which k3s
// writes from registries.yaml when it starts, or configure writes itself) name it as a host.
func (p *preflight) imageMirror() Check {
	addr := p.cfg.ImagesAddress
	if addr == "off" {
		return passed(chkImageMirror, "imagesAddress is off: the node serves no images, containerd's mirrors are not checked")
	}
	want := "http://" + addr
	fix := "run ferry images configure, then systemctl restart k3s"

	yamlNames, yamlAll, yamlErr := registriesYAML(p.opts.Registries, addr)
	hosts, hostsErr := hostsTOML(p.opts.HostsDir, addr)
	var notes []string
	if yamlErr != nil && !errors.Is(yamlErr, fs.ErrNotExist) {
		notes = append(notes, yamlErr.Error())
	}
	if hostsErr != nil && !errors.Is(hostsErr, fs.ErrNotExist) {
		notes = append(notes, hostsErr.Error())
	}
	var parts []string
	if len(yamlNames) > 0 {
		what := strings.Join(yamlNames, ", ")
		if yamlAll {
			what = `every registry ("*")`
		}
		parts = append(parts, fmt.Sprintf("%s mirrors %s", p.opts.Registries, what))
	}
	if len(hosts) > 0 {
		parts = append(parts, fmt.Sprintf("%s/{%s}/hosts.toml", p.opts.HostsDir, strings.Join(hosts, ",")))
	}
	switch {
	case len(yamlNames) == 0 && len(hosts) == 0:
		return failed(chkImageMirror, "neither %s nor %s/*/hosts.toml names the image endpoint %s as a mirror%s: %s",
			p.opts.Registries, p.opts.HostsDir, want, noteList(notes), fix)
	case len(hosts) == 0:
		// k3s writes the hosts.toml files from registries.yaml only when it starts.
		return warned(chkImageMirror, "%s through %s, but no hosts.toml under %s names it yet%s: restart k3s (systemctl restart k3s)",
			strings.Join(parts, "; "), want, p.opts.HostsDir, noteList(notes))
	case yamlErr == nil && len(yamlNames) == 0:
		// k3s rewrites its hosts.toml files from registries.yaml at its next start.
		return warned(chkImageMirror, "%s name %s, but %s does not: k3s may replace them when it restarts; %s",
			strings.Join(parts, "; "), want, p.opts.Registries, fix)
	case !yamlAll && len(yamlNames) > 0 && !contains(hosts, "_default"):
		return warned(chkImageMirror, "%s through %s; images of other registries are not mirrored: add \"*\" (ferry images configure writes it)",
			strings.Join(parts, "; "), want)
	}
	return passed(chkImageMirror, "%s through %s%s", strings.Join(parts, "; "), want, noteList(notes))
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func noteList(notes []string) string {
	if len(notes) == 0 {
		return ""
	}
	return " (" + strings.Join(notes, "; ") + ")"
}

// isEndpoint reports whether u, from a mirror configuration, is the image endpoint addr
// over plain HTTP (any path: k3s writes http://HOST:PORT/v2 with override_path).
func isEndpoint(u, addr string) bool {
	pu, err := url.Parse(strings.TrimSpace(u))
	return err == nil && pu.Scheme == "http" && pu.Host == addr
}

// registriesYAML returns the registries whose mirror endpoints in k3s's registries.yaml
// at path include the endpoint, and whether "*" is one of them.
func registriesYAML(path, addr string) (names []string, all bool, err error) {
	b, err := bundles.ReadFileLimited(path, maxMirrorFileBytes)
	if err != nil {
		return nil, false, err
	}
	// Not strict: the file is k3s's, with fields (configs, auth, rewrite) Ferry does not read.
	var doc struct {
		Mirrors map[string]struct {
			Endpoint []string `yaml:"endpoint"`
		} `yaml:"mirrors"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, false, fmt.Errorf("%s: %v", path, err)
	}
	for reg, m := range doc.Mirrors {
		for _, e := range m.Endpoint {
			if isEndpoint(e, addr) {
				names = append(names, reg)
				all = all || reg == "*"
				break
			}
		}
	}
	sort.Strings(names)
	return names, all, nil
}

// hostsLine matches the two lines of a hosts.toml that name where containerd pulls from:
// server = "URL" and a [host."URL"] table.
var hostsLine = regexp.MustCompile(`^\s*(?:server\s*=\s*"([^"]*)"|\[\s*host\s*\.\s*"([^"]*)"\s*\])`)

// hostsTOML returns the registry directories under dir whose hosts.toml names the endpoint
// as its server or one of its hosts. Only those two keys are read, line by line: Ferry
// links no TOML parser, and they are all a mirror needs.
func hostsTOML(dir, addr string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		b, err := bundles.ReadFileLimited(filepath.Join(dir, e.Name(), "hosts.toml"), maxMirrorFileBytes)
		if err != nil {
			continue // a directory of certificates only, or unreadable: it mirrors nothing
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			m := hostsLine.FindStringSubmatch(sc.Text())
			if m != nil && (isEndpoint(m[1], addr) || isEndpoint(m[2], addr)) {
				out = append(out, e.Name())
				break
			}
		}
	}
	return out, nil
}

// clock checks the local clock against a floor (ClockFloor, the binary's build) and, when
// the API server answered, against its Date header.
func (p *preflight) clock() Check {
	now := p.opts.Now()
	floor, what := ClockFloor, "the year "+ClockFloor.Format("2006")
	if p.opts.BuildTime.After(floor) {
		floor, what = p.opts.BuildTime, "this binary's build ("+p.opts.BuildTime.UTC().Format(time.RFC3339)+")"
	}
	if now.Before(floor) {
		return failed(chkClock, "the local clock says %s, before %s: set it (timedatectl set-time, or an NTP server on the site)", now.UTC().Format(time.RFC3339), what)
	}
	if p.serverDate.IsZero() {
		why := p.apiErr
		if why == "" {
			why = "the API server sent no Date header"
		}
		return warned(chkClock, "local %s, after %s; not compared with the API server: %s", now.UTC().Format(time.RFC3339), what, why)
	}
	// Date has whole seconds, cut off: the server's clock read up to a second later than
	// it says, half a second on average.
	skew := (p.local.Sub(p.serverDate) - time.Second/2).Round(time.Second)
	dir := "ahead of"
	if skew < 0 {
		skew, dir = -skew, "behind"
	}
	if skew > MaxClockSkew {
		return failed(chkClock, "the local clock is %s %s the API server's (%s), more than %s: set the clock of this node or of the server",
			skew, dir, p.serverDate.UTC().Format(time.RFC3339), MaxClockSkew)
	}
	return passed(chkClock, "local %s, %s %s the API server's", now.UTC().Format(time.RFC3339), skew, dir)
}

// daemon asks the daemon for its status over its socket: not running is a warning (a
// preflight often runs before the first start), an answer with an error a failure.
func (p *preflight) daemon(ctx context.Context) Check {
	ctx, cancel := context.WithTimeout(ctx, p.opts.Timeout)
	defer cancel()
	var st []BundleStatus
	err := NewClient(p.cfg.Socket).Do(ctx, http.MethodGet, "/v1/status", nil, &st)
	switch {
	case err == nil:
		return passed(chkDaemon, "running, answers on %s: %s", p.cfg.Socket, plural(len(st), "bundle"))
	case errors.Is(err, ErrUnreachable) && errors.Is(err, fs.ErrPermission):
		return warned(chkDaemon, "%s cannot be reached: permission denied (the socket is root's: run ferry check as root)", p.cfg.Socket)
	case errors.Is(err, ErrUnreachable):
		return warned(chkDaemon, "not running: nothing answers on %s (ferry service start starts it)", p.cfg.Socket)
	}
	return failed(chkDaemon, "answers on %s with an error: %s", p.cfg.Socket, oneLine(err.Error()))
}
