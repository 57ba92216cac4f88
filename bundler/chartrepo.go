package bundler

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/Masterminds/semver/v3"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"helm.sh/helm/v3/pkg/chart/loader"
	"sigs.k8s.io/yaml"

	"github.com/ferrygitops/ferry/bundles"
)

// Limits on what a chart repository may send.
const (
	maxIndexBytes = 32 << 20
	maxChartBytes = 64 << 20
)

// fetchChart resolves name and a semver range in a Helm chart repository (its index.yaml),
// downloads the chart archive, checks it against the digest the index gives, and writes its
// files under dst. It returns the resolved version. This is the only network access of a
// build, and it happens in CI: the bundle carries the chart.
func fetchChart(ctx context.Context, repoURL, name, versionRange, dst string) (string, error) {
	repo, err := url.Parse(repoURL)
	if err != nil {
		return "", err
	}
	// A repository's index may name charts anywhere; follow neither it nor a redirect to
	// another host unless the index gives a digest to check the chart against.
	client := &http.Client{Timeout: 2 * time.Minute, CheckRedirect: func(req *http.Request, _ []*http.Request) error {
		if req.URL.Host != repo.Host {
			return fmt.Errorf("redirect to %s leaves the chart repository %s", req.URL.Host, repo.Host)
		}
		return nil
	}}
	indexURL := strings.TrimSuffix(repoURL, "/") + "/index.yaml"
	raw, err := httpGet(ctx, client, indexURL, maxIndexBytes)
	if err != nil {
		return "", err
	}
	cv, err := resolveChart(raw, name, versionRange)
	if err != nil {
		return "", fmt.Errorf("%s: %w", indexURL, err)
	}
	base, err := url.Parse(strings.TrimSuffix(repoURL, "/") + "/")
	if err != nil {
		return "", err
	}
	ref, err := url.Parse(cv.URLs[0])
	if err != nil {
		return "", fmt.Errorf("%s: chart URL %q: %w", indexURL, cv.URLs[0], err)
	}
	resolved := base.ResolveReference(ref)
	if (resolved.Host != repo.Host || resolved.Scheme != repo.Scheme) && cv.Digest == "" {
		return "", fmt.Errorf("%s: chart %s %s is at %s, another host, and the index gives no digest to check it", indexURL, name, cv.Version, resolved.Redacted())
	}
	chartURL := resolved.String()
	archive, err := httpGet(ctx, client, chartURL, maxChartBytes)
	if err != nil {
		return "", err
	}
	if cv.Digest != "" {
		sum := sha256.Sum256(archive)
		if got := hex.EncodeToString(sum[:]); got != strings.TrimPrefix(cv.Digest, "sha256:") {
			return "", fmt.Errorf("%s: digest %s, the repository index says %s", chartURL, got, cv.Digest)
		}
	}
	if err := writeChartArchive(archive, dst, chartURL); err != nil {
		return "", err
	}
	return cv.Version, nil
}

// writeChartArchive writes the files of a chart .tgz under dst.
func writeChartArchive(archive []byte, dst, from string) error {
	files, err := loader.LoadArchiveFiles(bytes.NewReader(archive))
	if err != nil {
		return fmt.Errorf("%s: %w", from, err)
	}
	for _, f := range files {
		// LoadArchiveFiles has already refused names that leave the archive; check again
		// before anything is written.
		p := filepath.Join(dst, filepath.FromSlash(f.Name))
		if rel, err := filepath.Rel(dst, p); err != nil || strings.HasPrefix(rel, "..") {
			return fmt.Errorf("%s: entry %q: %w", from, f.Name, bundles.ErrUnsafePath)
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, f.Data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func httpGet(ctx context.Context, c *http.Client, url string, limit int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("GET %s: over the %d-byte limit", url, limit)
	}
	return b, nil
}

// chartVersion is one entry of a chart repository's index.yaml.
type chartVersion struct {
	Version string   `json:"version"`
	URLs    []string `json:"urls"`
	Digest  string   `json:"digest"`
}

// resolveChart picks, from a repository index, the highest version of name that satisfies
// versionRange (empty: the highest stable version), as helm does. The index is read with
// its own small type rather than helm's repo package, which would link the Kubernetes client.
func resolveChart(indexYAML []byte, name, versionRange string) (*chartVersion, error) {
	var index struct {
		Entries map[string][]chartVersion `json:"entries"`
	}
	if err := yaml.Unmarshal(indexYAML, &index); err != nil {
		return nil, err
	}
	constraint := "*"
	if versionRange != "" {
		constraint = versionRange
	}
	c, err := semver.NewConstraint(constraint)
	if err != nil {
		return nil, fmt.Errorf("version %q: %w", versionRange, err)
	}
	var best *chartVersion
	var bestV *semver.Version
	for i, cv := range index.Entries[name] {
		v, err := semver.NewVersion(cv.Version)
		if err != nil || !c.Check(v) || len(cv.URLs) == 0 {
			continue
		}
		if bestV == nil || v.GreaterThan(bestV) {
			best, bestV = &index.Entries[name][i], v
		}
	}
	if best == nil {
		return nil, fmt.Errorf("no version of chart %q matches %q", name, constraint)
	}
	return best, nil
}

// Media type of the chart archive layer in an OCI chart (helm push).
const helmChartLayerType = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"

// fetchOCIChart resolves an OCI chart (as `helm push` stores it: repository/name, tagged with
// the chart version) whose tag satisfies versionRange, fetches its chart layer digest- and
// size-checked, and writes its files under dst. It returns the resolved version.
func fetchOCIChart(ctx context.Context, o bundles.Options, repository, name, versionRange, dst string) (string, error) {
	addr, err := bundles.ParseAddress(strings.TrimSuffix(repository, "/") + "/" + name)
	if err != nil {
		return "", err
	}
	repo, err := o.Repository(addr)
	if err != nil {
		return "", err
	}
	bestTag, err := bundles.HighestTag(ctx, repo, versionRange)
	if err != nil {
		return "", fmt.Errorf("%s: %w", addr, err)
	}
	desc, err := repo.Resolve(ctx, bestTag)
	if err != nil {
		return "", fmt.Errorf("%s:%s: %w", addr, bestTag, err)
	}
	raw, err := bundles.FetchLimited(ctx, repo, desc, bundles.MaxManifestBytes)
	if err != nil {
		return "", err
	}
	var man ocispec.Manifest
	if err := json.Unmarshal(raw, &man); err != nil {
		return "", fmt.Errorf("%s:%s: %w", addr, bestTag, err)
	}
	for _, l := range man.Layers {
		if l.MediaType != helmChartLayerType {
			continue
		}
		archive, err := bundles.FetchLimited(ctx, repo, l, maxChartBytes)
		if err != nil {
			return "", err
		}
		if err := writeChartArchive(archive, dst, addr.String()); err != nil {
			return "", err
		}
		return strings.ReplaceAll(bestTag, "_", "+"), nil
	}
	return "", fmt.Errorf("%s:%s: no Helm chart layer (%s)", addr, bestTag, helmChartLayerType)
}
