package daemon

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/Masterminds/semver/v3"
	"go.yaml.in/yaml/v3"

	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/internal/strictyaml"
	"github.com/ferrygitops/ferry/receipt"
)

// Defaults of an edge node.
const (
	DefaultConfigPath = "/etc/ferry/config.yaml"
	DefaultKubeconfig = "/etc/rancher/k3s/k3s.yaml" // where k3s writes it
	DefaultSocket     = "/run/ferry/ferry.sock"
	DefaultMetrics    = "127.0.0.1:9795"
	DefaultImages     = "127.0.0.1:9796"
	// MaxConfigBytes bounds the config file.
	MaxConfigBytes = 1 << 20
)

// Config is /etc/ferry/config.yaml. Durations are Go durations ("30s", "5m").
type Config struct {
	// StateDir holds the store (default /var/lib/ferry).
	StateDir string `yaml:"stateDir"`
	// Kubeconfig reaches the local cluster (default k3s's).
	Kubeconfig string `yaml:"kubeconfig"`
	// Trust is the trust policy file (verify.LoadPolicy): keys, threshold, keyless identities.
	Trust string `yaml:"trust"`
	// AgeKeyFile holds the node's age identities for SOPS files (mode 0600); optional.
	AgeKeyFile string `yaml:"ageKeyFile"`
	// Variables are the node's postBuild variables (site id, node name…).
	Variables map[string]string `yaml:"variables"`
	// Namespace is where components without targetNamespace read substituteFrom and put
	// namespaced objects that name none (default "default").
	Namespace string `yaml:"namespace"`
	// DefaultServiceAccount is the service account (in each component's namespace) that
	// components without serviceAccountName impersonate, like kustomize-controller's
	// --default-service-account; empty runs them with Ferry's own credentials.
	DefaultServiceAccount string `yaml:"defaultServiceAccount"`
	// NoCrossNamespaceRefs refuses substituteFrom, valuesFrom, healthChecks and dependsOn
	// that name a namespace other than the component's (--no-cross-namespace-refs).
	NoCrossNamespaceRefs bool `yaml:"noCrossNamespaceRefs"`
	// Socket is the local API's unix socket (default /run/ferry/ferry.sock, mode 0600).
	Socket string `yaml:"socket"`
	// MetricsAddress serves /metrics, /healthz and /readyz; loopback only (default
	// 127.0.0.1:9795); "off" disables it.
	MetricsAddress string `yaml:"metricsAddress"`
	// ImagesAddress serves the images of every kept revision as a read-only OCI registry
	// that containerd uses as a mirror (ferry images configure); loopback only (default
	// 127.0.0.1:9796); "off" disables it.
	ImagesAddress string `yaml:"imagesAddress"`
	// SpaceMargin is the free space an admission must leave in stateDir, as a size with a
	// unit ("64MiB", "1GiB", "512KiB"; default 64MiB).
	SpaceMargin string `yaml:"spaceMargin"`
	// Retention is how many revisions of each bundle are kept (default 10, plus the current
	// and last good ones).
	Retention int `yaml:"retention"`
	// DriftInterval is how often the current revision is checked for drift (default 5m).
	DriftInterval Duration `yaml:"driftInterval"`
	// Sources are where bundles come from.
	Sources []SourceConfig `yaml:"sources"`
	// Webhook receives every event; optional.
	Webhook *WebhookConfig `yaml:"webhook"`
	// NodeName names the node in its receipts (default: the hostname).
	NodeName string `yaml:"nodeName"`
	// NodeKey is the cosign-format private key (empty password) that signs the node's
	// receipts, its public key beside it with .pub for .key (default stateDir/node.key,
	// made on first start when absent).
	NodeKey string `yaml:"nodeKey"`
}

// SourceConfig is one source: exactly one of Registry, USB, S3.
type SourceConfig struct {
	Name     string          `yaml:"name"`
	Registry *RegistrySource `yaml:"registry"`
	USB      *USBSource      `yaml:"usb"`
	S3       *S3Source       `yaml:"s3"`
}

// RegistrySource polls a repository of a (mirrored) registry.
type RegistrySource struct {
	// Repository is host[:port]/path, without a tag.
	Repository string `yaml:"repository"`
	// Tag to follow, or SemVer, a range whose highest matching tag is taken (default: the
	// highest stable version).
	Tag    string `yaml:"tag"`
	SemVer string `yaml:"semver"`
	// Interval between polls (default 1m).
	Interval Duration `yaml:"interval"`
	// CAFile adds certificate authorities for the registry's TLS; PlainHTTP talks HTTP
	// (loopback registries always do); DockerConfig holds credentials.
	CAFile       string `yaml:"caFile"`
	PlainHTTP    bool   `yaml:"plainHTTP"`
	DockerConfig string `yaml:"dockerConfig"`
}

// USBSource watches mount points for bundle archives (.tar) and OCI layouts.
type USBSource struct {
	// Paths to watch (default /media, /run/media, /mnt), searched three levels deep.
	Paths []string `yaml:"paths"`
	// Interval between scans (default 2s); a file is read only once its size and time have
	// not changed for one interval.
	Interval Duration `yaml:"interval"`
	// ReceiptDir, relative to the stick's root or absolute, is where the node's signed
	// receipt is written after it read a bundle from the stick, and again while the stick is
	// in when what the receipt says changes; empty (the default) never writes to a stick.
	ReceiptDir string `yaml:"receiptDir"`
	// StallTimeout is how long one call on a stick (a listing, a stat, an open, a read of up
	// to 1 MiB) may go unanswered before the stick is taken as stuck (default 60s, at least
	// 1s): the scan leaves it out, and its bundle is refused until the stuck call returns.
	StallTimeout Duration `yaml:"stallTimeout"`
}

// minStallTimeout keeps a typo ("60ms") from refusing every healthy but slow stick.
const minStallTimeout = time.Second

// S3Source polls a bucket for bundle archives.
type S3Source struct {
	Endpoint        string   `yaml:"endpoint"`
	Region          string   `yaml:"region"`
	Bucket          string   `yaml:"bucket"`
	Prefix          string   `yaml:"prefix"`
	CredentialsFile string   `yaml:"credentialsFile"`
	Interval        Duration `yaml:"interval"` // default 5m
	// ReceiptPrefix, when set, is where the node puts its signed receipt in the bucket
	// (PREFIX/NODE.receipt.json and .sig), whenever what it says changes; the credentials
	// must then allow PutObject there.
	ReceiptPrefix string `yaml:"receiptPrefix"`
}

// Duration is a time.Duration written as a Go duration string.
type Duration struct{ time.Duration }

// UnmarshalYAML reads "30s", "5m".
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil || v <= 0 {
		// A TypeError, so the decoder goes on and reports it with the others, at its line.
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %q is not a positive duration (like 30s or 5m)", n.Line, s)}}
	}
	d.Duration = v
	return nil
}

func (d Duration) or(def time.Duration) time.Duration {
	if d.Duration <= 0 {
		return def
	}
	return d.Duration
}

var (
	sourceName         = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	namespaceName      = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	serviceAccountName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

// LoadConfig reads and validates a config file; every problem is reported, each naming the
// file and the field.
func LoadConfig(path string) (*Config, error) {
	b, err := bundles.ReadFileLimited(path, MaxConfigBytes)
	if err != nil {
		return nil, err
	}
	return ParseConfig(path, b)
}

// ParseConfig decodes a config strictly (unknown fields are errors), fills defaults and
// validates it. path is used in messages only.
func ParseConfig(path string, b []byte) (*Config, error) {
	var c Config
	root, err := strictyaml.Decode(path, b, &c)
	if root == nil {
		return nil, err
	}
	errs := []error{err}
	if strictyaml.Has(root, "retention") && c.Retention < 1 {
		errs = append(errs, &strictyaml.Error{File: path, Line: strictyaml.Line(root, "retention"), Field: "retention",
			Msg: fmt.Sprintf("is %d, want at least 1 (the newest revisions kept per bundle; leave it out for 10)", c.Retention)})
	}
	c.defaults()
	for _, e := range c.validate() {
		at, _, _ := strings.Cut(e.field, `["`) // headers["X-Name"] is on the line of headers
		errs = append(errs, &strictyaml.Error{File: path, Line: strictyaml.Line(root, at), Field: e.field, Msg: e.msg})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &c, nil
}

func (c *Config) defaults() {
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	def(&c.StateDir, "/var/lib/ferry")
	def(&c.Kubeconfig, DefaultKubeconfig)
	def(&c.Socket, DefaultSocket)
	def(&c.MetricsAddress, DefaultMetrics)
	def(&c.ImagesAddress, DefaultImages)
	def(&c.Namespace, "default")
	if c.NodeName == "" {
		c.NodeName, _ = os.Hostname()
	}
	def(&c.NodeKey, filepath.Join(c.StateDir, "node.key"))
	if c.Retention == 0 {
		c.Retention = 10
	}
	for i := range c.Sources {
		if u := c.Sources[i].USB; u != nil && len(u.Paths) == 0 {
			u.Paths = []string{"/media", "/run/media", "/mnt"}
		}
	}
}

// fieldProblem is one problem validate finds, by field path.
type fieldProblem struct{ field, msg string }

func (c *Config) validate() []fieldProblem {
	var errs []fieldProblem
	bad := func(field, format string, a ...any) {
		errs = append(errs, fieldProblem{field, fmt.Sprintf(format, a...)})
	}
	abs := func(field, p string, required bool) {
		switch {
		case p == "" && required:
			bad(field, "is required")
		case p != "" && !filepath.IsAbs(p):
			bad(field, "%q must be an absolute path", p)
		}
	}
	abs("stateDir", c.StateDir, true)
	abs("kubeconfig", c.Kubeconfig, true)
	abs("trust", c.Trust, true)
	abs("ageKeyFile", c.AgeKeyFile, false)
	abs("socket", c.Socket, true)
	abs("nodeKey", c.NodeKey, true)
	if err := receipt.ValidNode(c.NodeName); err != nil {
		bad("nodeName", "%v", err)
	}
	loopback := func(field, addr string) {
		if addr == "off" {
			return
		}
		host, _, err := net.SplitHostPort(addr)
		if ip := net.ParseIP(host); err != nil || ((ip == nil || !ip.IsLoopback()) && host != "localhost") {
			bad(field, "%q must be a loopback host:port (or off)", addr)
		}
	}
	loopback("metricsAddress", c.MetricsAddress)
	loopback("imagesAddress", c.ImagesAddress)
	if c.ImagesAddress != "off" && c.ImagesAddress == c.MetricsAddress {
		bad("imagesAddress", "%q is also metricsAddress", c.ImagesAddress)
	}
	if c.Retention < 1 {
		bad("retention", "must be at least 1")
	}
	if c.SpaceMargin != "" {
		if _, err := ParseSize(c.SpaceMargin); err != nil {
			bad("spaceMargin", "%v", err)
		}
	}
	if !namespaceName.MatchString(c.Namespace) {
		bad("namespace", "%q is not a valid namespace name", c.Namespace)
	}
	if sa := c.DefaultServiceAccount; sa != "" && (len(sa) > 253 || !serviceAccountName.MatchString(sa)) {
		bad("defaultServiceAccount", "%q is not a valid service account name", sa)
	}
	for k := range c.Variables {
		if !regexp.MustCompile(`^[_[:alpha:]][_[:alpha:][:digit:]]*$`).MatchString(k) {
			bad("variables."+k, "is not a valid variable name")
		}
	}
	if len(c.Sources) == 0 {
		bad("sources", "name at least one source (registry, usb or s3); `ferry import` works without one")
	}
	seen := map[string]bool{}
	for i, s := range c.Sources {
		f := fmt.Sprintf("sources[%d]", i)
		if !sourceName.MatchString(s.Name) {
			bad(f+".name", "%q is not a DNS label", s.Name)
		} else if seen[s.Name] {
			bad(f+".name", "%q appears twice", s.Name)
		}
		seen[s.Name] = true
		n := 0
		if r := s.Registry; r != nil {
			n++
			if r.Repository == "" || !strings.Contains(r.Repository, "/") || strings.Contains(r.Repository, "://") || strings.ContainsAny(r.Repository, "@ ") {
				bad(f+".registry.repository", "%q: want host[:port]/path without scheme, tag or digest", r.Repository)
			}
			if r.Tag != "" && r.SemVer != "" {
				bad(f+".registry", "set tag or semver, not both")
			}
			if r.SemVer != "" {
				if _, err := semver.NewConstraint(r.SemVer); err != nil {
					bad(f+".registry.semver", "%q: %v", r.SemVer, err)
				}
			}
			abs(f+".registry.caFile", r.CAFile, false)
			abs(f+".registry.dockerConfig", r.DockerConfig, false)
		}
		if u := s.USB; u != nil {
			n++
			for j, p := range u.Paths {
				abs(fmt.Sprintf("%s.usb.paths[%d]", f, j), p, true)
			}
			if d := u.StallTimeout.Duration; d != 0 && d < minStallTimeout {
				bad(f+".usb.stallTimeout", "%s is under %s: a healthy stick may take that long", d, minStallTimeout)
			}
		}
		if s3 := s.S3; s3 != nil {
			n++
			if s3.Bucket == "" {
				bad(f+".s3.bucket", "is required")
			}
			if s3.Endpoint != "" && !strings.HasPrefix(s3.Endpoint, "http://") && !strings.HasPrefix(s3.Endpoint, "https://") {
				bad(f+".s3.endpoint", "%q must start with http:// or https://", s3.Endpoint)
			}
			abs(f+".s3.credentialsFile", s3.CredentialsFile, false)
		}
		if n != 1 {
			bad(f, "needs exactly one of registry, usb, s3")
		}
	}
	if c.Webhook != nil {
		for _, p := range c.Webhook.problems() {
			bad("webhook."+p.field, "%s", p.msg)
		}
	}
	return errs
}

// ParseSize reads a size with a binary unit: "64MiB", "1GiB", "512KiB", or plain bytes.
func ParseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}, {"", 1}}
	for _, u := range units {
		v, ok := strings.CutSuffix(s, u.suffix)
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil || n < 0 || n > (1<<62)/u.mult {
			break
		}
		return n * u.mult, nil
	}
	return 0, fmt.Errorf("%q is not a size (like 64MiB or 1GiB)", s)
}
