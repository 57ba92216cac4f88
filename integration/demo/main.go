// Command demo is what `make demo` runs: it starts the testbed (a real kube-apiserver, etcd,
// controller manager, scheduler and kwok nodes), applies a Deployment with kubectl's
// server-side apply, waits for its rollout and shows the result, then stops everything.
//
// With -keep it leaves the testbed up until Ctrl-C and prints the KUBECONFIG to use.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/ferrygitops/ferry/integration/testbed"
)

const manifest = `apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: hello
  namespace: demo
spec:
  replicas: 3
  selector:
    matchLabels: {app: hello}
  template:
    metadata:
      labels: {app: hello}
    spec:
      containers:
      - name: hello
        image: registry.local/hello:1.0
`

func main() {
	keep := flag.Bool("keep", false, "leave the testbed running until Ctrl-C")
	flag.Parse()
	if err := run(*keep); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(keep bool) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	step("Starting the testbed: etcd, kube-apiserver, controller manager, scheduler, kwok node")
	begin := time.Now()
	tb, err := testbed.Start(ctx, testbed.Options{Services: testbed.Kube, Log: log})
	if err != nil {
		return err
	}
	defer func() {
		step("Stopping the testbed")
		if err := tb.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "demo: stop:", err)
		}
	}()
	fmt.Printf("testbed up in %s, kubeconfig %s\n", time.Since(begin).Round(time.Millisecond), tb.Kubeconfig)

	file := filepath.Join(tb.Dir, "hello.yaml")
	if err := os.WriteFile(file, []byte(manifest), 0o600); err != nil {
		return err
	}
	kubectl := func(args ...string) error {
		fmt.Printf("$ kubectl %s\n", strings.Join(args, " "))
		cmd := exec.CommandContext(ctx, tb.Bin("kubectl"), append([]string{"--kubeconfig", tb.Kubeconfig}, args...)...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		return cmd.Run()
	}
	step("Applying a Deployment (server-side apply)")
	if err := kubectl("apply", "--server-side", "--field-manager=ferry-demo", "-f", file); err != nil {
		return err
	}
	step("Waiting for the rollout")
	if err := kubectl("-n", "demo", "rollout", "status", "deployment/hello", "--timeout=120s"); err != nil {
		return err
	}
	if err := kubectl("-n", "demo", "get", "deployments,pods", "-o", "wide"); err != nil {
		return err
	}
	if keep {
		step("Testbed left running; press Ctrl-C to stop it")
		fmt.Printf("export KUBECONFIG=%s\nexport PATH=%s:$PATH\n", tb.Kubeconfig, filepath.Dir(tb.Bin("kubectl")))
		<-ctx.Done()
	}
	return nil
}

func step(s string) { fmt.Printf("\n==> %s\n", s) }
