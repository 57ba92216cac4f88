package testbed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/rest"
)

// Service selects what a testbed runs.
type Service uint

const (
	// Kube is etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok.
	Kube Service = 1 << iota
	// Registry is an OCI registry on plain HTTP.
	Registry
	// S3 is an S3 server with one bucket ready.
	S3
	// APIServer is etcd and kube-apiserver alone, no controllers or nodes: what apply
	// benchmarks measure against. Kube includes it.
	APIServer
	// Containerd is a real containerd (Debian's package, tools/packages.sh) with its root,
	// state and socket in the testbed's directory; ctr pulls through it.
	Containerd

	// All is every service.
	All = Kube | Registry | S3 | Containerd
)

// Options configure Start. The zero value starts everything with one fake node.
type Options struct {
	// Services to run; 0 means All.
	Services Service
	// Nodes is the number of kwok fake nodes; 0 means 1.
	Nodes int
	// Dir holds data, certificates and logs; "" means a new temporary directory that Stop
	// removes.
	Dir string
	// Timeout bounds the whole start; 0 means 3 minutes.
	Timeout time.Duration
	// Log receives progress; nil discards it.
	Log *slog.Logger
	// Fsync makes etcd sync its writes to disk as a real node's does (benchmarks); by
	// default the testbed's etcd skips fsync, since its data dies with it.
	Fsync bool
}

// S3Endpoint is how to reach the testbed's S3 server.
type S3Endpoint struct {
	URL       string // http://127.0.0.1:port
	Region    string
	AccessKey string
	SecretKey string
	Bucket    string // created at start
}

// Testbed is a running set of services. Fields are valid for the services that were started.
type Testbed struct {
	// Dir holds everything the testbed writes: data, certificates, logs (Dir/logs).
	Dir string
	// Kubeconfig is a kubeconfig file for an admin (system:masters) client certificate.
	Kubeconfig string
	// REST is the same admin access for client-go.
	REST *rest.Config
	// Nodes are the names of the kwok fake nodes, Ready and schedulable.
	Nodes []string
	// Registry is the OCI registry's host:port (plain HTTP on loopback).
	Registry string
	// S3 is the S3 server.
	S3 S3Endpoint
	// Containerd is containerd's socket, for ctr --address (see Ctr).
	Containerd string

	binDir string
	ownDir bool
	// control is the control plane, in start order (StopControlPlane, StartControlPlane).
	control  []*restartable
	log      *slog.Logger
	mu       sync.Mutex
	procs    []*process
	stopOnce sync.Once
	stopErr  error
}

// Bin returns the path of a testbed binary (cosign, sops, oras, helm, age, age-keygen,
// kubectl, …).
func (tb *Testbed) Bin(name string) string { return filepath.Join(tb.binDir, name) }

// Env returns PATH with the testbed's binaries first and KUBECONFIG, for running CLIs.
func (tb *Testbed) Env() []string {
	env := []string{"PATH=" + tb.binDir + string(os.PathListSeparator) + os.Getenv("PATH")}
	if tb.Kubeconfig != "" {
		env = append(env, "KUBECONFIG="+tb.Kubeconfig)
	}
	return env
}

// PIDs returns the process IDs of every service the testbed started.
func (tb *Testbed) PIDs() []int {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	pids := make([]int, 0, len(tb.procs))
	for _, p := range tb.procs {
		pids = append(pids, p.pid())
	}
	return pids
}

// Alive reports which started services are no longer running, as an error, or nil when all are.
func (tb *Testbed) Alive() error {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	var errs []error
	for _, p := range tb.procs {
		if p.exited() {
			errs = append(errs, fmt.Errorf("%s exited (%v); log %s:\n%s", p.name, p.err, p.log, p.tail()))
		}
	}
	return errors.Join(errs...)
}

// Start builds (or finds cached) binaries and starts the selected services. On error,
// everything already started is stopped.
func Start(ctx context.Context, opts Options) (*Testbed, error) {
	if opts.Services == 0 {
		opts.Services = All
	}
	if opts.Nodes <= 0 {
		opts.Nodes = 1
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 3 * time.Minute
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	binDir, err := BinDir(ctx, opts.Log)
	if err != nil {
		return nil, err
	}
	tb := &Testbed{Dir: opts.Dir, binDir: binDir, log: opts.Log}
	if tb.Dir == "" {
		if tb.Dir, err = os.MkdirTemp("", "ferry-testbed-"); err != nil {
			return nil, err
		}
		tb.ownDir = true
	}
	if err := os.MkdirAll(filepath.Join(tb.Dir, "logs"), 0o700); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	if err := tb.start(ctx, opts); err != nil {
		return nil, errors.Join(fmt.Errorf("testbed: %w", err), tb.Stop())
	}
	return tb, nil
}

func (tb *Testbed) start(ctx context.Context, opts Options) error {
	begin := time.Now()
	if opts.Services&Registry != 0 {
		if err := tb.startRegistry(ctx); err != nil {
			return err
		}
	}
	if opts.Services&S3 != 0 {
		if err := tb.startS3(ctx); err != nil {
			return err
		}
	}
	if opts.Services&Containerd != 0 {
		if err := tb.startContainerd(ctx); err != nil {
			return err
		}
	}
	if opts.Services&(Kube|APIServer) != 0 {
		if err := tb.startKube(ctx, opts.Nodes, opts.Services&Kube != 0, opts.Fsync); err != nil {
			return err
		}
	}
	tb.log.Info("testbed ready", "dir", tb.Dir, "took", time.Since(begin).Round(time.Millisecond))
	return nil
}

// run starts a service and records it so Stop finds it.
func (tb *Testbed) run(name string, args []string, env ...string) (*process, error) {
	return tb.runBin(name, tb.Bin(name), args, env...)
}

func (tb *Testbed) runBin(name, bin string, args []string, env ...string) (*process, error) {
	p, err := startProcess(name, bin, filepath.Join(tb.Dir, "logs"), args, env...)
	if err != nil {
		return nil, err
	}
	tb.mu.Lock()
	tb.procs = append(tb.procs, p)
	tb.mu.Unlock()
	tb.log.Info("started", "service", name, "pid", p.pid())
	return p, nil
}

// Stop stops every service, in reverse order of start, and removes the testbed's directory
// when Start made it. It is safe to call more than once.
func (tb *Testbed) Stop() error {
	tb.stopOnce.Do(func() {
		tb.mu.Lock()
		procs := tb.procs
		tb.mu.Unlock()
		var errs []error
		for i := len(procs) - 1; i >= 0; i-- {
			if err := procs[i].stop(15 * time.Second); err != nil {
				errs = append(errs, err)
			}
		}
		if tb.ownDir && os.Getenv("FERRY_TESTBED_KEEP") == "" {
			errs = append(errs, os.RemoveAll(tb.Dir))
		}
		tb.stopErr = errors.Join(errs...)
	})
	return tb.stopErr
}

// BinDir runs tools/build.sh, which builds the testbed's binaries on first use, and returns
// the directory holding them.
func BinDir(ctx context.Context, log *slog.Logger) (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("testbed: cannot find tools/build.sh: no caller information")
	}
	// The Debian packages first (containerd, skopeo), then the binaries built from source.
	pkgs := exec.CommandContext(ctx, filepath.Join(filepath.Dir(file), "tools", "packages.sh"))
	if out, err := pkgs.CombinedOutput(); err != nil {
		return "", fmt.Errorf("testbed: install packages with %s: %w\n%s", pkgs.Path, err, lastLines(string(out), 30))
	}
	script := filepath.Join(filepath.Dir(file), "tools", "build.sh")
	cmd := exec.CommandContext(ctx, script)
	var stderr strings.Builder
	cmd.Stderr = io.MultiWriter(&stderr, logWriter{log})
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("testbed: build binaries with %s: %w\n%s", script, err, lastLines(stderr.String(), 30))
	}
	dir := strings.TrimSpace(string(out))
	return filepath.Join(dir, "bin"), nil
}

// stageDir is where tools/build.sh put kwok's upstream Stages.
func (tb *Testbed) stageDir() string { return filepath.Join(filepath.Dir(tb.binDir), "stages") }

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// logWriter forwards the build script's progress lines to the testbed's logger.
type logWriter struct{ log *slog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		if line != "" {
			w.log.Info(line)
		}
	}
	return len(p), nil
}
