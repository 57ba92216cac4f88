package daemon

import (
	"strings"
	"testing"
)

// TestConfigRefusals: each bad field is an error naming it; nothing is half-accepted.
func TestConfigRefusals(t *testing.T) {
	base := "stateDir: /var/lib/ferry\ntrust: /etc/ferry/trust.yaml\n"
	cases := map[string]struct{ yaml, want string }{
		"unknown field":     {base + "sources: [{name: a, usb: {}}]\nbogus: 1\n", "field bogus not found"},
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
		"images exposed":    {base + "imagesAddress: \"[::]:9796\"\nsources: [{name: a, usb: {}}]\n", "imagesAddress"},
		"images on metrics": {base + "imagesAddress: 127.0.0.1:9795\nsources: [{name: a, usb: {}}]\n", "is also metricsAddress"},
		"bad interval":      {base + "sources: [{name: a, usb: {interval: soon}}]\n", "positive duration"},
		"bad variable":      {base + "variables: {1X: a}\nsources: [{name: a, usb: {}}]\n", "variables.1X"},
		"webhook scheme":    {base + "sources: [{name: a, usb: {}}]\nwebhook: {url: \"ftp://x\"}\n", "webhook"},
		"empty":             {"", "empty config"},
		"bad namespace":     {base + "namespace: Team_A\nsources: [{name: a, usb: {}}]\n", "namespace"},
		"bad default sa":    {base + "defaultServiceAccount: \"a b\"\nsources: [{name: a, usb: {}}]\n", "defaultServiceAccount"},
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
		c.MetricsAddress != DefaultMetrics || c.ImagesAddress != DefaultImages || c.Retention != 10 || len(c.Sources[0].USB.Paths) != 3 {
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
