package testbed

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

func (tb *Testbed) startRegistry(ctx context.Context) error {
	ports, err := freePorts(1)
	if err != nil {
		return err
	}
	tb.Registry = hostPort(ports[0])
	cfg := filepath.Join(tb.Dir, "registry.yaml")
	// Deletes enabled so tests can exercise a registry that garbage-collects; no auth, plain
	// HTTP on loopback, which oras and cosign accept for localhost.
	conf := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
  secret: ferry-testbed
`, filepath.Join(tb.Dir, "registry"), tb.Registry)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		return err
	}
	p, err := tb.run("registry", []string{"serve", cfg}, "OTEL_TRACES_EXPORTER=none")
	if err != nil {
		return err
	}
	return p.waitReady(ctx, httpOK(http.DefaultClient, "http://"+tb.Registry+"/v2/"))
}

func (tb *Testbed) startS3(ctx context.Context) error {
	ports, err := freePorts(1)
	if err != nil {
		return err
	}
	tb.S3 = S3Endpoint{
		URL:       "http://" + hostPort(ports[0]),
		Region:    "us-east-1",
		AccessKey: "ferrytestbed",
		SecretKey: "ferry-testbed-secret-key",
		Bucket:    "ferry",
	}
	// versitygw compares paths as strings: the sidecar must not share the root's prefix.
	data, meta := filepath.Join(tb.Dir, "s3"), filepath.Join(tb.Dir, "sidecar-s3")
	for _, d := range []string{data, meta} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}
	p, err := tb.run("versitygw", []string{
		"--port", hostPort(ports[0]),
		"--region", tb.S3.Region,
		"--health", "/health",
		"posix",
		// Object metadata in a sidecar directory: works on filesystems without user xattrs.
		"--sidecar", meta,
		data,
	}, "ROOT_ACCESS_KEY_ID="+tb.S3.AccessKey, "ROOT_SECRET_ACCESS_KEY="+tb.S3.SecretKey)
	if err != nil {
		return err
	}
	if err := p.waitReady(ctx, httpOK(http.DefaultClient, tb.S3.URL+"/health")); err != nil {
		return err
	}
	c, err := tb.S3Client()
	if err != nil {
		return err
	}
	if err := c.MakeBucket(ctx, tb.S3.Bucket, minio.MakeBucketOptions{Region: tb.S3.Region}); err != nil {
		return fmt.Errorf("s3: create bucket %s: %w", tb.S3.Bucket, err)
	}
	return nil
}

// S3Client returns a client for the testbed's S3 server with its root credentials.
func (tb *Testbed) S3Client() (*minio.Client, error) {
	return minio.New(hostOf(tb.S3.URL), &minio.Options{
		Creds:  credentialsFor(tb.S3.AccessKey, tb.S3.SecretKey),
		Secure: false,
		Region: tb.S3.Region,
	})
}

func hostOf(url string) string {
	const p = "http://"
	if len(url) > len(p) && url[:len(p)] == p {
		return url[len(p):]
	}
	return url
}

func credentialsFor(access, secret string) *credentials.Credentials {
	return credentials.NewStaticV4(access, secret, "")
}

// startContainerd runs Debian's containerd with everything under the testbed's directory. The
// CRI plugin is off (no kubelet here); image pulls go through ctr and containerd's own
// resolver, which reads a hosts directory as k3s's containerd does.
func (tb *Testbed) startContainerd(ctx context.Context) error {
	bin, err := exec.LookPath("containerd")
	if err != nil {
		return fmt.Errorf("containerd: %w (tools/packages.sh installs Debian's package)", err)
	}
	dir := filepath.Join(tb.Dir, "containerd")
	tb.Containerd = filepath.Join(dir, "containerd.sock")
	conf := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  address = ""
[metrics]
  address = ""
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), tb.Containerd, tb.Containerd+".ttrpc")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		return err
	}
	p, err := tb.runBin("containerd", bin, []string{"--config", cfg})
	if err != nil {
		return err
	}
	return p.waitReady(ctx, func(ctx context.Context) error {
		return exec.CommandContext(ctx, "ctr", "--address", tb.Containerd, "version").Run()
	})
}

// Ctr returns a ctr command against the testbed's containerd, in namespace "ferry-test".
func (tb *Testbed) Ctr(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ctr", append([]string{"--address", tb.Containerd, "--namespace", "ferry-test"}, args...)...)
}
