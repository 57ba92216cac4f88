package images

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/ferrygitops/ferry/store"
)

// Where k3s keeps containerd's registry configuration.
const (
	// K3sHostsDir is the config_path k3s gives its containerd: one <host>/hosts.toml per
	// registry, read at every pull, so a change needs no restart.
	K3sHostsDir = "/var/lib/rancher/k3s/agent/etc/containerd/certs.d"
	// K3sRegistries is k3s's registries.yaml, from which k3s writes K3sHostsDir when it
	// starts (so a change needs a k3s restart, and survives one).
	K3sRegistries = "/etc/rancher/k3s/registries.yaml"
)

// DefaultRegistries are mirrored even before any image of theirs is held, so a bundle that
// brings the first image of one works without configuring again.
var DefaultRegistries = []string{"docker.io", "ghcr.io", "quay.io", "registry.k8s.io", "gcr.io", "mcr.microsoft.com", "public.ecr.aws"}

// marker begins every file Ferry writes; a file without it is never overwritten.
const marker = "# Written by ferry (ferry images configure): the node's image endpoint mirrors this registry."

// MirrorConfig says which containerd configuration to write.
type MirrorConfig struct {
	// Endpoint is the image endpoint's host:port (the daemon's images.address).
	Endpoint string
	// HostsDir is containerd's registry config_path (K3sHostsDir for k3s); empty writes none.
	HostsDir string
	// Registries is k3s's registries.yaml (K3sRegistries); empty writes none.
	Registries string
	// Hosts are the upstream registries to mirror; each gets a hosts.toml, and "_default"
	// (every other registry, containerd 1.7+ and k3s) is always written too.
	Hosts []string
}

// FileChange is one file Configure writes or would write.
type FileChange struct {
	Path    string `json:"path"`
	Action  string `json:"action"` // create | update | unchanged
	Content string `json:"content"`
}

// PlanMirror computes the files MirrorConfig asks for, refusing (all at once) files that exist
// and were not written by Ferry.
func PlanMirror(cfg MirrorConfig) ([]FileChange, error) {
	if !hostPattern.MatchString(cfg.Endpoint) {
		return nil, fmt.Errorf("endpoint %q is not host:port", cfg.Endpoint)
	}
	hosts := map[string]bool{}
	for _, h := range cfg.Hosts {
		if h == "index.docker.io" || h == "registry-1.docker.io" {
			h = "docker.io"
		}
		if !hostPattern.MatchString(h) {
			return nil, fmt.Errorf("registry %q is not a host name", h)
		}
		hosts[h] = true
	}
	names := make([]string, 0, len(hosts))
	for h := range hosts {
		names = append(names, h)
	}
	sort.Strings(names)
	url := "http://" + cfg.Endpoint
	var out []FileChange
	var errs []error
	add := func(path, content string) {
		c, err := plan(path, content)
		if err != nil {
			errs = append(errs, err)
			return
		}
		out = append(out, c)
	}
	if cfg.HostsDir != "" {
		for _, h := range append(names, "_default") {
			// server is the endpoint too: containerd falls back to server when every host
			// fails, and on an air-gapped node the upstream must never be tried.
			add(filepath.Join(cfg.HostsDir, h, "hosts.toml"), fmt.Sprintf(
				"%s\n# Remove this line to keep edits of your own; ferry will then leave the file alone.\n"+
					"server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", marker, url, url))
		}
	}
	if cfg.Registries != "" {
		type mirror struct {
			Endpoint []string `yaml:"endpoint"`
		}
		doc := struct {
			Mirrors map[string]mirror `yaml:"mirrors"`
		}{Mirrors: map[string]mirror{"*": {Endpoint: []string{url}}}}
		for _, h := range names {
			doc.Mirrors[h] = mirror{Endpoint: []string{url}}
		}
		b, err := yaml.Marshal(doc)
		if err != nil {
			return nil, err
		}
		add(cfg.Registries, marker+"\n# k3s reads this file when it starts: restart k3s (systemctl restart k3s) after a change.\n"+
			"# Remove this line to keep edits of your own; ferry will then leave the file alone.\n"+string(b))
	}
	return out, errors.Join(errs...)
}

func plan(path, content string) (FileChange, error) {
	c := FileChange{Path: path, Action: "create", Content: content}
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return c, nil
	case err != nil:
		return c, err
	case !fi.Mode().IsRegular():
		return c, fmt.Errorf("%s: not a regular file; ferry leaves it alone", path)
	}
	old, err := os.ReadFile(path)
	if err != nil {
		return c, err
	}
	if !bytes.HasPrefix(old, []byte(marker)) {
		return c, fmt.Errorf("%s exists and was not written by ferry; it is left alone. Add the endpoint yourself, or move the file away and configure again:\n%s",
			path, indent(content))
	}
	c.Action = "update"
	if string(old) == content {
		c.Action = "unchanged"
	}
	return c, nil
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ")
}

// ApplyMirror writes the planned files atomically (mode 0644, as containerd and k3s expect
// configuration to be world-readable).
func ApplyMirror(changes []FileChange) error {
	for _, c := range changes {
		if c.Action == "unchanged" {
			continue
		}
		// Checked again just before writing: a file put there since the plan is not ours.
		if _, err := plan(c.Path, c.Content); err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(c.Path), 0o755); err != nil {
			return err
		}
		if err := store.WriteFileAtomic(c.Path, []byte(c.Content), 0o644); err != nil {
			return fmt.Errorf("%s: %w", c.Path, err)
		}
	}
	return nil
}

// Registries returns the registry hosts of held images, sorted, each once.
func Registries(held []Held) []string {
	seen := map[string]bool{}
	var out []string
	for _, h := range held {
		host, _, _ := strings.Cut(h.Name, "/")
		if !seen[host] {
			seen[host] = true
			out = append(out, host)
		}
	}
	sort.Strings(out)
	return out
}
