package daemon

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"oras.land/oras-go/v2/content/memory"

	"github.com/ferrygitops/ferry/store"
)

// TestConfigRefusals: each bad field is an error naming it; nothing is half-accepted.
func TestConfigRefusals(t *testing.T) {
	base := "stateDir: /var/lib/ferry\ntrust: /etc/ferry/trust.yaml\n"
	cases := map[string]struct{ yaml, want string }{
		"unknown field":     {base + "sources: [{name: a, usb: {}}]\nbogus: 1\n", "config.yaml:4: bogus: unknown field"},
		"no sources":        {base, "sources"},
		"relative trust":    {"trust: trust.yaml\nsources: [{name: a, usb: {}}]\n", "trust"},
		"two kinds":         {base + "sources: [{name: a, usb: {}, s3: {bucket: b}}]\n", "exactly one of"},
		"bad name":          {base + "sources: [{name: A_B, usb: {}}]\n", "sources[0].name"},
		"duplicate name":    {base + "sources: [{name: a, usb: {}}, {name: a, usb: {}}]\n", "appears twice"},
		"repo with tag":     {base + "sources: [{name: a, registry: {repository: \"r.local/x@sha256:00\"}}]\n", "sources[0].registry.repository"},
		"repo without path": {base + "sources: [{name: a, registry: {repository: r.local}}]\n", "sources[0].registry.repository"},
		"tag and semver":    {base + "sources: [{name: a, registry: {repository: r.local/x, tag: v1, semver: \">=1\"}}]\n", "not both"},
		"bad semver":        {base + "sources: [{name: a, registry: {repository: r.local/x, semver: \"not a range\"}}]\n", "semver"},
		"s3 no bucket":      {base + "sources: [{name: a, s3: {}}]\n", "s3.bucket"},
		"s3 bad endpoint":   {base + "sources: [{name: a, s3: {bucket: b, endpoint: \"ftp://x\"}}]\n", "s3.endpoint"},
		"metrics exposed":   {base + "metricsAddress: 0.0.0.0:9795\nsources: [{name: a, usb: {}}]\n", "metricsAddress"},
		"bad margin":        {base + "spaceMargin: lots\nsources: [{name: a, usb: {}}]\n", "spaceMargin"},
		"images exposed":    {base + "imagesAddress: \"[::]:9796\"\nsources: [{name: a, usb: {}}]\n", "imagesAddress"},
		"images on metrics": {base + "imagesAddress: 127.0.0.1:9795\nsources: [{name: a, usb: {}}]\n", "is also metricsAddress"},
		"bad interval":      {base + "sources: [{name: a, usb: {interval: soon}}]\n", "positive duration"},
		"short stall":       {base + "sources: [{name: a, usb: {stallTimeout: 60ms}}]\n", "sources[0].usb.stallTimeout: 60ms is under 1s"},
		"bad variable":      {base + "variables: {1X: a}\nsources: [{name: a, usb: {}}]\n", "variables.1X"},
		"webhook scheme":    {base + "sources: [{name: a, usb: {}}]\nwebhook: {url: \"ftp://x\"}\n", "webhook"},
		"empty":             {"", "empty document"},
		"bad namespace":     {base + "namespace: Team_A\nsources: [{name: a, usb: {}}]\n", "namespace"},
		"bad default sa":    {base + "defaultServiceAccount: \"a b\"\nsources: [{name: a, usb: {}}]\n", "defaultServiceAccount"},
		"node name a path":  {base + "nodeName: ../etc\nsources: [{name: a, usb: {}}]\n", "nodeName"},
		"relative node key": {base + "nodeKey: node.key\nsources: [{name: a, usb: {}}]\n", "nodeKey"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := ParseConfig("/etc/ferry/config.yaml", []byte(c.yaml))
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "/etc/ferry/config.yaml") {
				t.Fatalf("want an error naming %q and the file, got %v", c.want, err)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	c, err := ParseConfig("c.yaml", []byte("trust: /etc/ferry/trust.yaml\nsources: [{name: usb, usb: {}}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.StateDir != "/var/lib/ferry" || c.Kubeconfig != DefaultKubeconfig || c.Socket != DefaultSocket ||
		c.MetricsAddress != DefaultMetrics || c.ImagesAddress != DefaultImages || c.Retention != 10 || len(c.Sources[0].USB.Paths) != 3 ||
		c.NodeKey != "/var/lib/ferry/node.key" || c.NodeName == "" {
		t.Fatalf("defaults: %+v", c)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("trust: /t\nsources: [{name: a, usb: {}}]\n"))
	f.Add([]byte("trust: /t\nsources: [{name: a, registry: {repository: r/x, semver: \">=1\"}}]\nwebhook: {url: \"https://h\"}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig("c.yaml", b)
		if err == nil && (c.Trust == "" || len(c.Sources) == 0) {
			t.Fatalf("accepted a config without trust or sources: %+v", c)
		}
	})
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"64MiB": 64 << 20, "1GiB": 1 << 30, "512KiB": 512 << 10, "100": 100, "7B": 7} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "lots", "-1MiB", "1.5GiB", "99999999999999GiB"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
}

// A state dir smaller than the default margin admits bundles once spaceMargin is lowered;
// a margin it cannot meet refuses, naming the field.
func TestSpaceMarginFromConfig(t *testing.T) {
	k := newKey(t)
	src := memory.New()
	d := makeBundle(t, src, "site", 1, "x")
	sign(t, src, d, k)
	st, err := store.Open(t.TempDir(), store.Options{SpaceMargin: 1 << 60})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := Ingest(t.Context(), st, memSource{src}, d, k.policy, "test"); !errors.Is(err, store.ErrNoSpace) || !strings.Contains(err.Error(), "spaceMargin") {
		t.Fatalf("want ErrNoSpace naming spaceMargin, got %v", err)
	}
}

// TestCheckConfigBesideARunningDaemon: what README says of --check-config. It loads every
// file the config names, caFile, dockerConfig and credentialsFile included, naming the field
// of one it cannot read, and it does not open the store, so it answers at once beside a
// daemon that holds it.
func TestCheckConfigBesideARunningDaemon(t *testing.T) {
	_, policy := writeTrust(t)
	d := testDaemon(t, policy) // holds the state directory's lock from here on
	cfg := *d.cfg
	begin := time.Now()
	if err := CheckConfig(&cfg); err != nil {
		t.Fatalf("check beside a running daemon: %v", err)
	}
	if took := time.Since(begin); took > 3*time.Second {
		t.Fatalf("the check waited %s: it must not wait for the store's lock", took)
	}
	missing := filepath.Join(t.TempDir(), "absent")
	cfg.Sources = []SourceConfig{
		{Name: "mirror", Registry: &RegistrySource{Repository: "registry.local/site", CAFile: missing, DockerConfig: missing}},
		{Name: "bucket", S3: &S3Source{Endpoint: "https://s3.local", Bucket: "b", CredentialsFile: missing}},
	}
	err := CheckConfig(&cfg)
	for _, field := range []string{"sources[0].registry.caFile", "sources[0].registry.dockerConfig", "sources[1].s3.credentialsFile"} {
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("check with an unreadable %s: %v, want it named", field, err)
		}
	}
}

// TestConfigErrorsAllAtOnce: a config with several mistakes reports each, FILE:LINE: field:
// what is wrong, with "did you mean" for a misspelt field and no Go type names; retention: 0
// is refused rather than taken as the default.
func TestConfigErrorsAllAtOnce(t *testing.T) {
	src := `stateDir: /var/lib/ferry
trust: /etc/ferry/trust.yaml
retension: 3
retention: 0
driftInterval: 5 minutes
sources:
  - name: usb
    usb: {paths: [/media], interval: often}
webhook: {url: "ftp://ops.example.com/hook"}
`
	_, err := ParseConfig("/etc/ferry/config.yaml", []byte(src))
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		"/etc/ferry/config.yaml:3: retension: unknown field (did you mean retention?)",
		"/etc/ferry/config.yaml:4: retention: is 0, want at least 1",
		`/etc/ferry/config.yaml:5: driftInterval: "5 minutes" is not a positive duration`,
		`/etc/ferry/config.yaml:8: sources[0].usb.interval: "often" is not a positive duration`,
		"/etc/ferry/config.yaml:9: webhook.url: scheme \"ftp\"",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "daemon.") || strings.Contains(err.Error(), "not found in type") {
		t.Errorf("a Go type name in:\n%v", err)
	}
}
