// Command helm compares Ferry's Helm releases with the helm CLI on the same etcd,
// kube-apiserver, controllers and kwok node, in one run (docs/BENCHMARKS.md, "Helm
// releases", has the results).
//
// The chart is generated: 45 ConfigMaps of 10 keys and 5 Deployments whose pods kwok makes
// Ready; every object carries the value generation. Each run, in a fresh namespace per
// client, release "bench" is installed (generation 1), upgraded (generation 2: all 50
// objects change) and reconciled once more with nothing changed:
//
//   - Ferry: a bundle whose one component is the chart as a Helm component, admitted into a
//     node store as revisions 1 and 2; Engine.Rollout(1), Rollout(2), then Engine.Sync. It
//     runs in a child process, so its request counts and peak RSS (VmHWM) are its own.
//   - helm: `helm upgrade --install --wait --timeout 5m` three times (generation 1, 2, 2),
//     peak RSS from /proc while it runs; then the no-op once more through a counting
//     proxy, for its requests.
//
// Both wait for the Deployments to be Ready. The release Secrets (owner=helm) are counted
// around the no-op: helm always records a new revision, Ferry must not.
//
//	go run -tags kustomize_disable_go_plugin_support ./bench/helm [-runs 3]   (make bench-helm)
package main

import (
	"context"
	"flag"
	"fmt"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ferrygitops/ferry/bench/measure"
	"github.com/ferrygitops/ferry/integration/testbed"
)

const (
	phases = 3 // install, upgrade, nothing changed
	noop   = 2
)

var phaseNames = [phases]string{"install", "upgrade", "nothing changed"}

// result is one client's figures for one run.
type result struct {
	Seconds [phases]float64 `json:"seconds"`
	Reads   [phases]int     `json:"reads"`
	Writes  [phases]int     `json:"writes"`
	// Log has every request as "METHOD path".
	Log [phases][]string `json:"log"`
	// RSSKiB is the peak RSS: Ferry's child's VmHWM over all phases; the highest of helm's
	// three processes.
	RSSKiB      int64         `json:"rssKiB"`
	PhaseRSSKiB [phases]int64 `json:"phaseRSSKiB,omitempty"` // helm: each process's peak
	// RevisionsBefore and RevisionsAfter count the release's Secrets around the no-op.
	RevisionsBefore int `json:"revisionsBefore"`
	RevisionsAfter  int `json:"revisionsAfter"`
	// StartRSSKiB is Ferry's child's VmHWM before it does anything: the Go runtime and the
	// package initialisation of a binary that also links the bundler and the testbed.
	StartRSSKiB int64 `json:"startRSSKiB,omitempty"`
	// NoopApplied is what Ferry's Sync reported applying (0 when nothing changed).
	NoopApplied int `json:"noopApplied"`
	// CountedSeconds is helm's no-op again through the counting proxy.
	CountedSeconds float64 `json:"countedSeconds,omitempty"`
}

func main() {
	if os.Getenv("FERRY_BENCH_CHILD") == "ferry" {
		if err := ferryChild(); err != nil {
			fmt.Fprintln(os.Stderr, "ferry child:", err)
			os.Exit(1)
		}
		return
	}
	runs := flag.Int("runs", 3, "fresh runs; the median is reported")
	flag.Parse()
	if err := run(*runs); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

var clients = []string{"helm", "ferry"}

func run(runs int) error {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	tb, err := testbed.Start(ctx, testbed.Options{Services: testbed.Kube, Fsync: true, Log: log})
	if err != nil {
		return err
	}
	defer tb.Stop()
	work, err := os.MkdirTemp("", "bench-helm-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	h := &helmCLI{bin: tb.Bin("helm"), home: filepath.Join(work, "home"), chart: filepath.Join(work, "chart")}
	if err := writeChart(h.chart); err != nil {
		return err
	}
	px, err := startProxy(tb, work)
	if err != nil {
		return err
	}
	defer px.Close()
	for _, kubeconfig := range []string{tb.Kubeconfig, px.kubeconfig} {
		if err := h.warm(ctx, tb.Bin("kubectl"), kubeconfig); err != nil {
			return err
		}
	}
	kc, err := kubernetes.NewForConfig(tb.REST)
	if err != nil {
		return err
	}
	all := map[string][]result{}
	for r := 1; r <= runs; r++ {
		// Alternate who goes first, so that neither always meets a fresher API server.
		order := clients
		if r%2 == 0 {
			order = []string{clients[1], clients[0]}
		}
		for _, c := range order {
			ns := fmt.Sprintf("bench-%s-%d", c, r)
			var res result
			if c == "ferry" {
				res, err = runFerry(ctx, tb, filepath.Join(work, ns), ns)
			} else {
				res, err = runHelm(ctx, tb, h, px, kc, ns)
			}
			if err != nil {
				return fmt.Errorf("run %d %s: %w", r, c, err)
			}
			if err := verify(ctx, kc, ns); err != nil {
				return fmt.Errorf("run %d %s: %w", r, c, err)
			}
			fmt.Fprintf(os.Stderr, "run %d %-5s install %.2fs  upgrade %.2fs  no-op %.3fs (%d reads, %d writes, release Secrets %d → %d)  rss %d MiB\n",
				r, c, res.Seconds[0], res.Seconds[1], res.Seconds[noop], res.Reads[noop], res.Writes[noop],
				res.RevisionsBefore, res.RevisionsAfter, res.RSSKiB/1024)
			all[c] = append(all[c], res)
		}
	}
	report(all)
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Printf("\nLoad average at the end: %s\n", strings.Join(strings.Fields(string(b))[:3], " "))
	}
	return nil
}

// verify checks what both clients must leave behind: generation 2 in every ConfigMap, every
// Deployment rolled out to generation 2 and Ready.
func verify(ctx context.Context, kc kubernetes.Interface, ns string) error {
	cms, err := kc.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=" + release})
	if err != nil {
		return err
	}
	if len(cms.Items) != configMaps {
		return fmt.Errorf("%d ConfigMaps, want %d", len(cms.Items), configMaps)
	}
	for _, cm := range cms.Items {
		if !strings.HasSuffix(cm.Data["key0"], "generation 2") {
			return fmt.Errorf("configmap %s not upgraded: %q", cm.Name, cm.Data["key0"])
		}
	}
	ds, err := kc.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=" + release})
	if err != nil {
		return err
	}
	if len(ds.Items) != deployments {
		return fmt.Errorf("%d Deployments, want %d", len(ds.Items), deployments)
	}
	for _, d := range ds.Items {
		if !ready(&d) || d.Spec.Template.Spec.Containers[0].Env[0].Value != "2" {
			return fmt.Errorf("deployment %s not upgraded and Ready: %+v", d.Name, d.Status)
		}
	}
	return nil
}

func ready(d *appsv1.Deployment) bool {
	s := d.Status
	return s.ObservedGeneration >= d.Generation && s.UpdatedReplicas == *d.Spec.Replicas && s.ReadyReplicas == *d.Spec.Replicas
}

// releaseRevisions counts the Secrets in which Helm stores the release's revisions.
func releaseRevisions(ctx context.Context, kc kubernetes.Interface, ns string) (int, error) {
	l, err := kc.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{LabelSelector: "owner=helm,name=" + release})
	if err != nil {
		return 0, fmt.Errorf("release Secrets: %w", err)
	}
	return len(l.Items), nil
}

// report prints the markdown tables of docs/BENCHMARKS.md: medians of the runs, and the
// median over runs of Ferry's time as a fraction of helm's in the same run.
func report(all map[string][]result) {
	n := len(all["ferry"])
	fmt.Printf("| client | install | upgrade (50 changed) | nothing changed | requests when nothing changed (reads / writes) | release Secrets around it | peak RSS |\n|---|---|---|---|---|---|---|\n")
	for _, c := range clients {
		rs := all[c]
		med := func(f func(result) float64) float64 { return measure.Median(rs, f) }
		name := "helm CLI (`helm upgrade --install --wait`)"
		if c == "ferry" {
			name = "**Ferry** (`Engine.Rollout`, `Engine.Sync`)"
		}
		fmt.Printf("| %s | %.2f s | %.2f s | %.3f s | %.0f / %.0f | %.0f → %.0f | %.0f MiB |\n", name,
			med(func(r result) float64 { return r.Seconds[0] }), med(func(r result) float64 { return r.Seconds[1] }),
			med(func(r result) float64 { return r.Seconds[noop] }),
			med(func(r result) float64 { return float64(r.Reads[noop]) }), med(func(r result) float64 { return float64(r.Writes[noop]) }),
			med(func(r result) float64 { return float64(r.RevisionsBefore) }), med(func(r result) float64 { return float64(r.RevisionsAfter) }),
			med(func(r result) float64 { return float64(r.RSSKiB) / 1024 }))
	}
	fmt.Printf("\nFerry's time as a fraction of helm's, same run, median of %d runs:\n\n| install | upgrade | nothing changed |\n|---|---|---|\n", n)
	var cells [phases]string
	for p := range phases {
		ratios := make([]float64, n)
		for i := range ratios {
			ratios[i] = all["ferry"][i].Seconds[p] / all["helm"][i].Seconds[p]
		}
		slices.Sort(ratios)
		cells[p] = fmt.Sprintf("%.2f×", ratios[n/2])
	}
	fmt.Printf("| %s | %s | %s |\n", cells[0], cells[1], cells[2])

	hs := all["helm"]
	fmt.Printf("\nhelm's peak RSS per command (median): install %.0f MiB, upgrade %.0f MiB, nothing changed %.0f MiB; the counted no-op (through the proxy) took %.2f s.\n",
		measure.Median(hs, func(r result) float64 { return float64(r.PhaseRSSKiB[0]) / 1024 }),
		measure.Median(hs, func(r result) float64 { return float64(r.PhaseRSSKiB[1]) / 1024 }),
		measure.Median(hs, func(r result) float64 { return float64(r.PhaseRSSKiB[noop]) / 1024 }),
		measure.Median(hs, func(r result) float64 { return r.CountedSeconds }))
	fs := all["ferry"]
	fmt.Printf("Ferry's requests (median reads / writes): install %.0f / %.0f, upgrade %.0f / %.0f, nothing changed %.0f / %.0f (Sync reported %.0f applied).\n",
		measure.Median(fs, func(r result) float64 { return float64(r.Reads[0]) }), measure.Median(fs, func(r result) float64 { return float64(r.Writes[0]) }),
		measure.Median(fs, func(r result) float64 { return float64(r.Reads[1]) }), measure.Median(fs, func(r result) float64 { return float64(r.Writes[1]) }),
		measure.Median(fs, func(r result) float64 { return float64(r.Reads[noop]) }), measure.Median(fs, func(r result) float64 { return float64(r.Writes[noop]) }),
		measure.Median(fs, func(r result) float64 { return float64(r.NoopApplied) }))
	fmt.Printf("Ferry's child started at %.0f MiB (median VmHWM before its first request).\n", measure.Median(fs, func(r result) float64 { return float64(r.StartRSSKiB) / 1024 }))
	last := fs[len(fs)-1]
	fmt.Printf("Ferry's requests, last run: install %s; upgrade %s.\n", summarize(last.Log[0]), summarize(last.Log[1]))
	fmt.Printf("Requests when nothing changed, last run: helm %s; Ferry %s.\n", summarize(hs[len(hs)-1].Log[noop]), summarize(last.Log[noop]))
}

// summarize counts requests by method and resource ("PUT secrets ×1").
func summarize(log []string) string {
	if len(log) == 0 {
		return "none"
	}
	counts := map[string]int{}
	for _, l := range log {
		method, path, _ := strings.Cut(l, " ")
		parts := strings.Split(strings.Trim(path, "/"), "/")
		res := parts[len(parts)-1]
		if i := slices.Index(parts, "namespaces"); i >= 0 && len(parts) > i+2 {
			res = parts[i+2]
		}
		counts[method+" "+res]++
	}
	var out []string
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		out = append(out, fmt.Sprintf("%s ×%d", k, counts[k]))
	}
	return strings.Join(out, ", ")
}
