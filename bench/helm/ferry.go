package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/ferrygitops/ferry/apply"
	"github.com/ferrygitops/ferry/bench/measure"
	"github.com/ferrygitops/ferry/integration/testbed"
	"github.com/ferrygitops/ferry/rollout"
	"github.com/ferrygitops/ferry/store"
)

// runFerry admits the two revisions into a fresh store and runs the Ferry side in a child
// process, so that its peak RSS and request counts are its own.
func runFerry(ctx context.Context, tb *testbed.Testbed, work, ns string) (result, error) {
	var res result
	state := filepath.Join(work, "state")
	if err := admitRevisions(ctx, work, state, ns); err != nil {
		return res, err
	}
	cmd := exec.CommandContext(ctx, os.Args[0])
	cmd.Env = append(os.Environ(), "FERRY_BENCH_CHILD=ferry", "FERRY_BENCH_NS="+ns,
		"FERRY_BENCH_KUBECONFIG="+tb.Kubeconfig, "FERRY_BENCH_STATE="+state)
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return res, fmt.Errorf("ferry child: %w", err)
	}
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		return res, fmt.Errorf("ferry child output %q: %w", stdout.String(), err)
	}
	return res, nil
}

// ferryChild is the node: an engine over the store the parent filled. It times Rollout of
// revision 1 (install), Rollout of revision 2 (upgrade) and Sync with nothing changed,
// counting every request the engine (and the Helm SDK inside it) sends.
func ferryChild() error {
	start := measure.PeakRSS()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	ns := os.Getenv("FERRY_BENCH_NS")
	cfg, err := clientcmd.BuildConfigFromFlags("", os.Getenv("FERRY_BENCH_KUBECONFIG"))
	if err != nil {
		return err
	}
	// The release Secrets are counted by a client of the bench's own, not counted.
	kc, err := kubernetes.NewForConfig(rest.CopyConfig(cfg))
	if err != nil {
		return err
	}
	cnt := &measure.Counter{}
	cfg.WrapTransport = cnt.Wrap
	st, err := store.Open(os.Getenv("FERRY_BENCH_STATE"), store.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	opts := apply.Options{}
	if os.Getenv("FERRY_BENCH_LOG") != "" {
		opts.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ap, err := apply.New(cfg, opts)
	if err != nil {
		return err
	}
	eng := rollout.New(st, ap, rollout.Options{Log: opts.Log})
	res := result{StartRSSKiB: start}
	cnt.Take() // setup is not counted
	for p := range phases {
		if p == noop {
			if res.RevisionsBefore, err = releaseRevisions(ctx, kc, ns); err != nil {
				return err
			}
		}
		begin := time.Now()
		var rep rollout.Report
		if p == noop {
			rep, err = eng.Sync(ctx, bundleName)
		} else {
			rep, err = eng.Rollout(ctx, bundleName, uint64(p+1))
		}
		res.Seconds[p] = time.Since(begin).Seconds()
		res.Reads[p], res.Writes[p], res.Log[p] = cnt.Take()
		if err != nil {
			return fmt.Errorf("%s (engine report %+v): %w", phaseNames[p], rep, err)
		}
		if p == noop {
			res.NoopApplied = rep.Applied
			if res.RevisionsAfter, err = releaseRevisions(ctx, kc, ns); err != nil {
				return err
			}
		}
	}
	res.RSSKiB = measure.PeakRSS()
	return json.NewEncoder(os.Stdout).Encode(res)
}
