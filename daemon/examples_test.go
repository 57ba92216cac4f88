package daemon_test

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/ferrygitops/ferry/daemon"
)

// TestExampleConfig holds examples/config.yaml to the code: it parses, it names every field
// the config has, and it shows each kind of source and the webhook.
func TestExampleConfig(t *testing.T) {
	const path = "examples/config.yaml"
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := daemon.ParseConfig(path, b)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]bool{}
	for _, s := range cfg.Sources {
		switch {
		case s.Registry != nil:
			kinds["registry"] = true
		case s.USB != nil:
			kinds["usb"] = true
		case s.S3 != nil:
			kinds["s3"] = true
		}
	}
	if len(kinds) != 3 || cfg.Webhook == nil {
		t.Errorf("the example shows sources %v and webhook %v; want registry, usb, s3 and a webhook", kinds, cfg.Webhook != nil)
	}

	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	var walk func(*yaml.Node)
	walk = func(n *yaml.Node) {
		for i, c := range n.Content {
			if n.Kind == yaml.MappingNode && i%2 == 0 {
				keys[c.Value] = true
			}
			walk(c)
		}
	}
	walk(&doc)
	for _, typ := range []any{daemon.Config{}, daemon.SourceConfig{}, daemon.RegistrySource{}, daemon.USBSource{}, daemon.S3Source{}, daemon.WebhookConfig{}} {
		rt := reflect.TypeOf(typ)
		for i := range rt.NumField() {
			name, _, _ := strings.Cut(rt.Field(i).Tag.Get("yaml"), ",")
			if name != "" && !keys[name] {
				t.Errorf("%s.%s: field %q is not in %s", rt.Name(), rt.Field(i).Name, name, path)
			}
		}
	}
}

// TestMinimalConfig is the smallest config README.md shows, and the defaults it relies on.
func TestMinimalConfig(t *testing.T) {
	const minimal = `trust: /etc/ferry/trust-policy.yaml
ageKeyFile: /etc/ferry/age.key
variables: {SITE_ID: north-7}
sources:
  - name: usb
    usb: {}
`
	cfg, err := daemon.ParseConfig("minimal.yaml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	got := []any{cfg.StateDir, cfg.Kubeconfig, cfg.Socket, cfg.MetricsAddress, cfg.Namespace, cfg.Retention, cfg.Sources[0].USB.Paths}
	want := []any{"/var/lib/ferry", daemon.DefaultKubeconfig, daemon.DefaultSocket, daemon.DefaultMetrics, "default", 10, []string{"/media", "/run/media", "/mnt"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("defaults: got %v, want %v", got, want)
	}
}
