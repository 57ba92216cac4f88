package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// ferry images configure: --dry-run writes nothing; the endpoint comes from the config;
// a file Ferry did not write is named and left as it was.
func TestImagesConfigure(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "config.yaml")
	os.WriteFile(config, []byte("trust: /etc/ferry/trust.yaml\nimagesAddress: 127.0.0.1:5999\nsources: [{name: usb, usb: {}}]\n"), 0o600)
	hosts, reg := filepath.Join(dir, "certs.d"), filepath.Join(dir, "registries.yaml")
	args := []string{"images", "configure", "--config", config, "--hosts-dir", hosts, "--k3s-registries", reg, "--socket", filepath.Join(dir, "none.sock"), "--registry", "registry.site:5000"}

	out, err := runFerry(t, append(args, "--dry-run")...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(hosts); !os.IsNotExist(err) {
		t.Fatalf("--dry-run wrote %s", hosts)
	}
	for _, want := range []string{"registry.site:5000/hosts.toml: would be created", `server = "http://127.0.0.1:5999"`, "registries.yaml: would be created", "restart", "the daemon was not asked"} {
		if !strings.Contains(out, want) {
			t.Errorf("--dry-run output lacks %q:\n%s", want, out)
		}
	}

	out, err = runFerry(t, append(args, "-o", "json")...)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		DryRun bool
		Files  []struct{ Path, Action string }
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.DryRun || len(rep.Files) < 3 {
		t.Fatalf("-o json: %v %s", err, out)
	}
	if b, err := os.ReadFile(filepath.Join(hosts, "registry.site:5000", "hosts.toml")); err != nil || !strings.Contains(string(b), "127.0.0.1:5999") {
		t.Fatalf("hosts.toml: %v %s", err, b)
	}

	// A registries.yaml of the site's own is refused, and unchanged.
	own := "configs: {registry.site: {auth: {username: u}}}\n"
	os.WriteFile(reg, []byte(own), 0o600)
	if out, err = runFerry(t, args...); err == nil || !strings.Contains(err.Error(), "registries.yaml exists and was not written by ferry") {
		t.Fatalf("a foreign registries.yaml: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(reg); string(b) != own {
		t.Errorf("registries.yaml changed:\n%s", b)
	}
	// imagesAddress off: nothing to point containerd at.
	os.WriteFile(config, []byte("trust: /etc/ferry/trust.yaml\nimagesAddress: \"off\"\nsources: [{name: usb, usb: {}}]\n"), 0o600)
	if _, err = runFerry(t, append(args, "--dry-run")...); err == nil || !strings.Contains(err.Error(), "imagesAddress is off") {
		t.Fatalf("imagesAddress off: %v", err)
	}
}

// A mistyped subcommand fails with "did you mean", for every command group, instead of
// printing help and exiting 0.
func TestUnknownSubcommandFails(t *testing.T) {
	for args, want := range map[string]string{"images lst": "did you mean list?", "bundle biuld": "did you mean build?",
		"keys genrate": "did you mean generate?", "service strat": "did you mean start"} {
		_, err := runFerry(t, strings.Fields(args)...)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ferry %s: %v, want an error with %q", args, err, want)
		}
	}
	if _, err := runFerry(t, "images"); err != nil {
		t.Errorf("ferry images (help): %v", err)
	}
}
