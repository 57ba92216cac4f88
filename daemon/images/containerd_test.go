package images

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
	"go.yaml.in/yaml/v3"
)

func TestMirrorFiles(t *testing.T) {
	dir := t.TempDir()
	cfg := MirrorConfig{Endpoint: "127.0.0.1:9796", HostsDir: filepath.Join(dir, "certs.d"), Registries: filepath.Join(dir, "registries.yaml"),
		Hosts: []string{"ghcr.io", "index.docker.io", "localhost:5000"}}
	changes, err := PlanMirror(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// A plan writes nothing (--dry-run).
	if _, err := os.Stat(cfg.HostsDir); !os.IsNotExist(err) {
		t.Fatalf("PlanMirror wrote %s", cfg.HostsDir)
	}
	var paths []string
	for _, c := range changes {
		if c.Action != "create" {
			t.Errorf("%s: %s, want create", c.Path, c.Action)
		}
		paths = append(paths, strings.TrimPrefix(c.Path, dir+"/"))
	}
	want := "certs.d/docker.io/hosts.toml certs.d/ghcr.io/hosts.toml certs.d/localhost:5000/hosts.toml certs.d/_default/hosts.toml registries.yaml"
	if strings.Join(paths, " ") != want {
		t.Fatalf("files %v, want %s", paths, want)
	}
	if err := ApplyMirror(changes); err != nil {
		t.Fatal(err)
	}
	// hosts.toml as containerd reads it: the endpoint as the only host and as the server.
	var h struct {
		Server string
		Host   map[string]struct{ Capabilities []string }
	}
	if _, err := toml.DecodeFile(filepath.Join(cfg.HostsDir, "docker.io", "hosts.toml"), &h); err != nil {
		t.Fatal(err)
	}
	if h.Server != "http://127.0.0.1:9796" || len(h.Host) != 1 || strings.Join(h.Host["http://127.0.0.1:9796"].Capabilities, ",") != "pull,resolve" {
		t.Errorf("hosts.toml decoded as %+v", h)
	}
	var r struct {
		Mirrors map[string]struct{ Endpoint []string }
	}
	b, _ := os.ReadFile(cfg.Registries)
	if err := yaml.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Mirrors) != 4 || r.Mirrors["*"].Endpoint[0] != "http://127.0.0.1:9796" || r.Mirrors["ghcr.io"].Endpoint[0] != "http://127.0.0.1:9796" {
		t.Errorf("registries.yaml: %+v", r)
	}
	if !strings.Contains(string(b), "restart k3s") {
		t.Errorf("registries.yaml does not say k3s must restart:\n%s", b)
	}
	// Again: unchanged; with another endpoint: update.
	changes, _ = PlanMirror(cfg)
	for _, c := range changes {
		if c.Action != "unchanged" {
			t.Errorf("second plan: %s %s", c.Path, c.Action)
		}
	}
	cfg.Endpoint = "127.0.0.1:9797"
	changes, _ = PlanMirror(cfg)
	for _, c := range changes {
		if c.Action != "update" {
			t.Errorf("new endpoint: %s %s", c.Path, c.Action)
		}
	}
}

// A file Ferry did not write is never overwritten; every such file is named at once.
func TestMirrorLeavesForeignFiles(t *testing.T) {
	dir := t.TempDir()
	cfg := MirrorConfig{Endpoint: "127.0.0.1:9796", HostsDir: filepath.Join(dir, "certs.d"), Registries: filepath.Join(dir, "registries.yaml"), Hosts: []string{"docker.io"}}
	own := "configs:\n  registry.site:\n    auth: {username: u, password: p}\n"
	os.WriteFile(cfg.Registries, []byte(own), 0o600)
	os.MkdirAll(filepath.Join(cfg.HostsDir, "docker.io"), 0o755)
	os.WriteFile(filepath.Join(cfg.HostsDir, "docker.io", "hosts.toml"), []byte("server = \"https://mirror.site\"\n"), 0o644)
	os.MkdirAll(filepath.Join(cfg.HostsDir, "_default"), 0o755)
	os.Symlink("/etc/passwd", filepath.Join(cfg.HostsDir, "_default", "hosts.toml"))
	_, err := PlanMirror(cfg)
	if err == nil {
		t.Fatal("foreign files accepted")
	}
	for _, name := range []string{"registries.yaml exists and was not written by ferry", "docker.io/hosts.toml exists", "_default/hosts.toml: not a regular file", "http://127.0.0.1:9796"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error does not say %q:\n%v", name, err)
		}
	}
	if b, _ := os.ReadFile(cfg.Registries); string(b) != own {
		t.Errorf("registries.yaml changed")
	}
	// A foreign file appearing between plan and apply is not overwritten either.
	cfg2 := MirrorConfig{Endpoint: "127.0.0.1:9796", HostsDir: filepath.Join(dir, "other"), Hosts: []string{"quay.io"}}
	changes, err := PlanMirror(cfg2)
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(cfg2.HostsDir, "quay.io"), 0o755)
	os.WriteFile(filepath.Join(cfg2.HostsDir, "quay.io", "hosts.toml"), []byte("# mine\n"), 0o644)
	if err := ApplyMirror(changes); err == nil {
		t.Fatal("a file created after the plan was overwritten")
	}
	if b, _ := os.ReadFile(filepath.Join(cfg2.HostsDir, "quay.io", "hosts.toml")); string(b) != "# mine\n" {
		t.Errorf("quay.io/hosts.toml changed to %q", b)
	}
}

func TestMirrorRefusesBadNames(t *testing.T) {
	for _, cfg := range []MirrorConfig{
		{Endpoint: "127.0.0.1:9796", HostsDir: "/x", Hosts: []string{"../../etc"}},
		{Endpoint: "127.0.0.1:9796", HostsDir: "/x", Hosts: []string{"a/b"}},
		{Endpoint: "http://127.0.0.1:9796", HostsDir: "/x"},
	} {
		if _, err := PlanMirror(cfg); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
}
