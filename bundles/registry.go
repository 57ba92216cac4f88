package bundles

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/Masterminds/semver/v3"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	orascreds "oras.land/oras-go/v2/registry/remote/credentials"
	"oras.land/oras-go/v2/registry/remote/retry"
)

// registryBackend is a repository of an OCI registry (oci://host/repo[:tag|@digest]). It
// is read and written in place: every blob pushed is there at once, so a copy that stops
// is resumed by copying again (what the registry has is not sent).
type registryBackend struct{ onePlace }

func (registryBackend) open(_ context.Context, a Address, o Options) (Source, error) {
	repo, err := o.Repository(a)
	if err != nil {
		return nil, err
	}
	return nopCloser{repo}, nil
}

func (registryBackend) create(_ context.Context, a Address, o Options) (Sink, error) {
	repo, err := o.Repository(a)
	if err != nil {
		return nil, err
	}
	return &registrySink{Repository: repo, base: a.Ref.Registry + "/" + a.Ref.Repository}, nil
}

func (registryBackend) target(_ context.Context, a Address, o Options) (Target, error) {
	return o.Repository(a)
}

type registrySink struct {
	*remote.Repository
	placedList
	base string
}

func (s *registrySink) Commit(context.Context) ([]Placed, error) {
	for i := range s.placed {
		s.placed[i].Where = s.base + ":" + s.placed[i].Tag
	}
	return s.placed, nil
}

func (s *registrySink) Close() error { return nil }

// Repository returns a client for the registry repository of a, with o's credentials and
// plain-HTTP rule.
func (o Options) Repository(a Address) (*remote.Repository, error) {
	repo, err := remote.NewRepository(a.Ref.Registry + "/" + a.Ref.Repository)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", a, err)
	}
	repo.PlainHTTP = o.PlainHTTP || isLoopback(a.Ref.Registry)
	var store orascreds.Store
	if o.DockerConfig != "" {
		store, err = orascreds.NewStore(o.DockerConfig, orascreds.StoreOptions{})
	} else {
		store, err = orascreds.NewStoreFromDocker(orascreds.StoreOptions{})
	}
	if err != nil {
		return nil, fmt.Errorf("registry credentials: %w", err)
	}
	client := retry.DefaultClient
	if o.CAFile != "" {
		if client, err = clientWithCA(o.CAFile); err != nil {
			return nil, err
		}
	}
	repo.Client = &auth.Client{Client: client, Cache: auth.NewCache(), Credential: orascreds.Credential(store)}
	return repo, nil
}

// clientWithCA is oras's retrying client trusting the system roots and the CAs in file.
func clientWithCA(file string) (*http.Client, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("registry CA: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("registry CA %s: no PEM certificate in it", file)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: retry.NewTransport(tr)}, nil
}

// HighestTag returns the repository's tag with the highest semver version that satisfies
// versionRange (empty: the highest stable), reading "_" in tags as "+" as helm push writes them.
func HighestTag(ctx context.Context, repo registry.TagLister, versionRange string) (string, error) {
	var tags []string
	if err := repo.Tags(ctx, "", func(ts []string) error { tags = append(tags, ts...); return nil }); err != nil {
		return "", fmt.Errorf("list tags: %w", err)
	}
	constraint := firstNonEmpty(versionRange, "*")
	c, err := semver.NewConstraint(constraint)
	if err != nil {
		return "", fmt.Errorf("version %q: %w", versionRange, err)
	}
	var best *semver.Version
	var bestTag string
	for _, t := range tags {
		v, err := semver.NewVersion(strings.ReplaceAll(t, "_", "+"))
		if err != nil || !c.Check(v) {
			continue
		}
		if best == nil || v.GreaterThan(best) {
			best, bestTag = v, t
		}
	}
	if best == nil {
		return "", fmt.Errorf("no tag matches %q", constraint)
	}
	return bestTag, nil
}

func isLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}
