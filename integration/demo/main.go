// Command demo is what `make demo` runs: the path of one bundle, end to end, on the testbed.
//
//	CI side:   build bundles/examples/edge-site, sign it, push it to the registry, export it
//	           to a tar (the USB stick)
//	edge side: verify the stick's copy against the node's trust policy, admit it into the
//	           node's store, refuse a tampered copy and a replay, render each component from
//	           the store (kustomize, ${VAR} substitution), apply with server-side apply, wait
//	           for the rollout, record the revision healthy
//
// The control plane is real (etcd, kube-apiserver, controller manager, scheduler, kwok nodes);
// so are the registry and every check. Until the daemon lands, this program plays its part
// with the same packages; kubectl does the apply.
//
// With -keep the testbed stays up until Ctrl-C and the KUBECONFIG to use is printed.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"oras.land/oras-go/v2/content/memory"

	"github.com/ferrygitops/ferry/apply/render"
	"github.com/ferrygitops/ferry/bundler"
	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/daemon"
	"github.com/ferrygitops/ferry/integration/testbed"
	"github.com/ferrygitops/ferry/store"
	"github.com/ferrygitops/ferry/verify"
)

func main() {
	keep := flag.Bool("keep", false, "leave the testbed running until Ctrl-C")
	flag.Parse()
	if err := run(*keep); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func step(format string, a ...any) { fmt.Printf("\n==> "+format+"\n", a...) }

func run(keep bool) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	_, self, _, _ := runtime.Caller(0)
	example := filepath.Join(filepath.Dir(self), "..", "..", "bundles", "examples", "edge-site")

	step("Starting the testbed: etcd, kube-apiserver, controller manager, scheduler, a kwok node, a registry")
	begin := time.Now()
	tb, err := testbed.Start(ctx, testbed.Options{Services: testbed.Kube | testbed.Registry,
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		return err
	}
	defer func() {
		step("Stopping the testbed")
		if err := tb.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "demo: stop:", err)
		}
	}()
	fmt.Printf("up in %s\n", time.Since(begin).Round(time.Millisecond))
	work := filepath.Join(tb.Dir, "demo")
	os.MkdirAll(work, 0o700)

	// ---- CI side ----
	step("CI: generating a signing key (cosign format)")
	privPEM, pubPEM, err := bundler.GenerateKeyPair([]byte("demo"))
	if err != nil {
		return err
	}
	keyFile, pubFile := filepath.Join(work, "ci.key"), filepath.Join(work, "ci.pub")
	os.WriteFile(keyFile, privPEM, 0o600)
	os.WriteFile(pubFile, pubPEM, 0o644)

	step("CI: building %s", "bundles/examples/edge-site")
	built := memory.New()
	res, err := bundler.Build(ctx, built, bundler.Options{Dir: example, AllowDirty: true, Revision: 1,
		Created: time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)})
	if err != nil {
		return err
	}
	m := res.Metadata
	fmt.Printf("%s %s revision %d, %d components, digest %s\n", m.Name, m.Version, m.Revision, len(m.Components), res.Descriptor.Digest)

	step("CI: signing, pushing to the registry, exporting to a USB stick")
	signer, err := bundler.LoadPrivateKey(keyFile, []byte("demo"))
	if err != nil {
		return err
	}
	if _, err := bundler.Sign(ctx, built, res.Descriptor, signer, m.Name); err != nil {
		return err
	}
	src := memSource{built}
	for _, to := range []string{"oci://" + tb.Registry + "/site/" + m.Name + ":" + m.Version, filepath.Join(work, "usb", m.Name+".tar")} {
		os.MkdirAll(filepath.Join(work, "usb"), 0o700)
		dst, err := bundles.ParseAddress(to)
		if err != nil {
			return err
		}
		where, err := bundles.Copy(ctx, src, res.Descriptor, dst, bundles.Options{})
		if err != nil {
			return err
		}
		fmt.Println("  ->", where)
	}

	// ---- Edge side ----
	stick := filepath.Join(work, "usb", m.Name+".tar")
	policyFile := filepath.Join(work, "trust-policy.yaml")
	os.WriteFile(policyFile, []byte("apiVersion: ferry.dev/v1\nkind: TrustPolicy\nkeys:\n  - name: ci\n    path: ci.pub\n"), 0o644)
	policy, err := verify.LoadPolicy(policyFile)
	if err != nil {
		return err
	}
	st, err := store.Open(filepath.Join(work, "state"), store.Options{})
	if err != nil {
		return err
	}
	defer st.Close()

	step("Edge: a tampered copy of the stick is refused, and leaves nothing behind")
	tampered := filepath.Join(work, "usb", "tampered.tar")
	if err := tamper(stick, tampered); err != nil {
		return err
	}
	if _, err := ingest(ctx, st, tampered, policy); err == nil {
		return errors.New("a tampered bundle was admitted")
	} else {
		fmt.Println("  refused:", shorten(err.Error()))
	}

	step("Edge: verifying and admitting the stick's bundle")
	rev, err := ingest(ctx, st, stick, policy)
	if err != nil {
		return err
	}
	fmt.Printf("  admitted %s revision %d (%s), signed by key %s\n", rev.Name, rev.Revision, rev.Manifest.Digest, policy.Keys[0].ID[:19]+"…")

	step("Edge: the same stick again is a replay, not an update")
	if _, err := ingest(ctx, st, stick, policy); errors.Is(err, store.ErrDowngrade) {
		fmt.Println("  refused:", shorten(err.Error()))
	} else {
		return fmt.Errorf("replay: %v", err)
	}

	step("Edge: rendering from the node's store and applying with server-side apply, component by component")
	if err := st.SetState(rev.Name, rev.Revision, store.StateApplying, "demo apply"); err != nil {
		return err
	}
	b, err := bundles.Open(ctx, st, rev.Manifest)
	if err != nil {
		return err
	}
	nodeVars := map[string]string{"SITE_ID": "north-7"}
	for i, c := range b.Metadata.Components {
		objs, err := render.FromBundle(ctx, st, b, i)
		if err != nil {
			return err
		}
		vars := map[string]string{}
		for k, v := range nodeVars {
			vars[k] = v
		}
		if c.Kustomize != nil && c.Kustomize.PostBuild != nil {
			for k, v := range c.Kustomize.PostBuild.Substitute {
				vars[k] = v
			}
		}
		if err := render.Substitute(objs, vars, true); err != nil {
			return fmt.Errorf("component %s: %w", c.Name, err)
		}
		y, err := objs.AsYaml()
		if err != nil {
			return err
		}
		fmt.Printf("  component %s: %d objects\n", c.Name, objs.Size())
		if err := kubectl(ctx, tb, bytes.NewReader(y), "apply", "--server-side", "--field-manager=ferry", "-f", "-"); err != nil {
			return err
		}
	}
	step("Edge: waiting for health")
	if err := kubectl(ctx, tb, nil, "-n", "web", "rollout", "status", "deployment/web", "--timeout=120s"); err != nil {
		return err
	}
	if err := st.SetState(rev.Name, rev.Revision, store.StateHealthy, "rollout complete"); err != nil {
		return err
	}
	if err := kubectl(ctx, tb, nil, "-n", "web", "get", "deployments,pods,configmaps", "-o", "wide"); err != nil {
		return err
	}
	step("Edge: the node's record")
	events, _ := st.Events(0, 20)
	for _, e := range events {
		fmt.Printf("  %s  %s r%d  %-9s %s\n", e.Time.Format("15:04:05"), e.Bundle, e.Revision, e.Reason, e.Message)
	}
	if keep {
		step("Testbed left running; press Ctrl-C to stop it")
		fmt.Printf("export KUBECONFIG=%s\nexport PATH=%s:$PATH\n", tb.Kubeconfig, filepath.Dir(tb.Bin("kubectl")))
		<-ctx.Done()
	}
	return nil
}

type memSource struct{ *memory.Store }

func (memSource) Close() error { return nil }

func ingest(ctx context.Context, st *store.Store, path string, policy verify.Policy) (*store.Revision, error) {
	addr, err := bundles.ParseAddress(path)
	if err != nil {
		return nil, err
	}
	src, desc, err := bundles.OpenSource(ctx, addr, bundles.Options{})
	if err != nil {
		return nil, err
	}
	defer src.Close()
	return daemon.Ingest(ctx, st, src, desc, policy, path)
}

// tamper copies a bundle archive with one byte of its first gzip blob (a component) changed.
func tamper(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	i := bytes.Index(b, []byte{0x1f, 0x8b, 0x08})
	if i < 0 {
		return errors.New("no component layer found to tamper with")
	}
	b[i+100] ^= 0xff
	return os.WriteFile(to, b, 0o600)
}

func kubectl(ctx context.Context, tb *testbed.Testbed, stdin *bytes.Reader, args ...string) error {
	fmt.Printf("  $ kubectl %s\n", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, tb.Bin("kubectl"), append([]string{"--kubeconfig", tb.Kubeconfig}, args...)...)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	return cmd.Run()
}

func shorten(s string) string {
	if len(s) > 160 {
		return s[:157] + "..."
	}
	return s
}
