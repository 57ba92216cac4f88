// Command apply compares Ferry's apply engine with kubectl, fluxcd/pkg/ssa and a raw
// client-go loop on the same etcd and kube-apiserver, in one run (issue: apply engine,
// Benchmarks; docs/BENCHMARKS.md has the results).
//
// Each run applies 1,001 objects (1 Namespace, 900 ConfigMaps of 10 keys, 100 Deployments;
// -objects N makes it N with N−101 ConfigMaps) into a fresh namespace per client: cold, then
// again with nothing changed, then with every ConfigMap and Deployment changed. kubectl runs as the CLI; the others each run in a child process so their
// peak RSS and request counts are their own. Ferry's cold time includes rendering the bundle
// from its node store. Then a failed-health rollback is timed on a testbed with controllers.
//
//	go run -tags kustomize_disable_go_plugin_support ./bench/apply [-runs 3] [-objects 1001]   (make bench-apply)
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/polling"
	"github.com/fluxcd/pkg/ssa"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"oras.land/oras-go/v2/content/memory"
	ctrlclient "sigs.k8s.io/controller-runtime/pkg/client"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/ferrygitops/ferry/apply"
	"github.com/ferrygitops/ferry/bench/measure"
	"github.com/ferrygitops/ferry/bundler"
	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/integration/testbed"
	"github.com/ferrygitops/ferry/rollout"
	"github.com/ferrygitops/ferry/store"
)

const (
	deployments = 100
	phases      = 3 // cold, no-op, changed
)

// configMaps is the number of ConfigMaps (-objects minus the Namespace and the Deployments),
// handed to the child processes in FERRY_BENCH_CONFIGMAPS.
var configMaps = 900

var phaseNames = [phases]string{"cold", "nothing changed", "all changed"}

// result is one client's figures for one run.
type result struct {
	Seconds [phases]float64 `json:"seconds"`
	Reads   [phases]int     `json:"reads"`
	Writes  [phases]int     `json:"writes"`
	RSSKiB  int64           `json:"rssKiB"`
	// Render is the time Ferry takes to render revision 1 from its store alone (measured
	// once, before the phases): the part of its cold time that is not the apply.
	Render float64 `json:"render"`
}

func main() {
	if os.Getenv("FERRY_BENCH_CHILD") != "" {
		if _, err := fmt.Sscan(os.Getenv("FERRY_BENCH_CONFIGMAPS"), &configMaps); err != nil {
			fmt.Fprintln(os.Stderr, "child: FERRY_BENCH_CONFIGMAPS:", err)
			os.Exit(1)
		}
		if err := child(); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		return
	}
	runs := flag.Int("runs", 3, "fresh runs; the median is reported")
	objects := flag.Int("objects", 1001, "objects per run: 1 Namespace, 100 Deployments, the rest ConfigMaps (at least 102)")
	flag.Parse()
	if *objects < 102 {
		fmt.Fprintln(os.Stderr, "bench: -objects must be at least 102")
		os.Exit(2)
	}
	configMaps = *objects - 1 - deployments
	if err := run(*runs); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

var clients = []string{"kubectl", "ssa", "ssa32", "raw", "ferry"}

func init() {
	// FERRY_BENCH_CLIENTS=raw,ferry limits a run to some clients (profiling); the report
	// needs them all.
	if c := os.Getenv("FERRY_BENCH_CLIENTS"); c != "" {
		clients = strings.Split(c, ",")
	}
}

func run(runs int) error {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	tb, err := testbed.Start(ctx, testbed.Options{Services: testbed.APIServer, Fsync: true, Log: log})
	if err != nil {
		return err
	}
	defer tb.Stop()
	all := map[string][]result{}
	for r := 1; r <= runs; r++ {
		for _, c := range clients {
			ns := fmt.Sprintf("bench-%s-%d", c, r)
			var res result
			if c == "kubectl" {
				res, err = runKubectl(ctx, tb, ns)
			} else {
				res, err = runChild(ctx, tb, c, ns)
			}
			if err != nil {
				return fmt.Errorf("run %d %s: %w", r, c, err)
			}
			fmt.Fprintf(os.Stderr, "run %d %-8s cold %.2fs  no-op %.2fs (%d reads, %d writes)  changed %.2fs  rss %d MiB\n",
				r, c, res.Seconds[0], res.Seconds[1], res.Reads[1], res.Writes[1], res.Seconds[2], res.RSSKiB/1024)
			all[c] = append(all[c], res)
		}
	}
	if len(clients) < 5 {
		return nil
	}
	rollback, err := timeRollback(ctx, log)
	if err != nil {
		return fmt.Errorf("rollback: %w", err)
	}
	report(all, rollback)
	return nil
}

// report prints the markdown tables of docs/BENCHMARKS.md: medians of times and, for each
// figure, the median over runs of Ferry's ratio to each peer in the same run.
func report(all map[string][]result, rollback time.Duration) {
	n := 1 + configMaps + deployments
	fmt.Printf("%d objects per run.\n\n| client | cold | nothing changed | requests per no-op (reads/writes) | %d changed | peak RSS |\n|---|---|---|---|---|---|\n", n, n-1)
	for _, c := range clients {
		rs := all[c]
		med := func(f func(result) float64) float64 { return measure.Median(rs, f) }
		req := fmt.Sprintf("%.0f / %.0f", med(func(r result) float64 { return float64(r.Reads[1]) }), med(func(r result) float64 { return float64(r.Writes[1]) }))
		rss := "—"
		if c != "kubectl" {
			rss = fmt.Sprintf("%.0f MiB", med(func(r result) float64 { return float64(r.RSSKiB) / 1024 }))
		} else {
			req = fmt.Sprintf("%d (one apply per object)", n)
		}
		fmt.Printf("| %s | %.2f s | %.3f s | %s | %.2f s | %s |\n", c,
			med(func(r result) float64 { return r.Seconds[0] }), med(func(r result) float64 { return r.Seconds[1] }), req,
			med(func(r result) float64 { return r.Seconds[2] }), rss)
	}
	fmt.Printf("\nFerry's time as a fraction of each peer's, same run, median of %d runs:\n\n| vs | cold | nothing changed | %d changed |\n|---|---|---|---|\n", len(all["ferry"]), n-1)
	for _, peer := range []string{"raw", "kubectl", "ssa", "ssa32"} {
		var cells [phases]string
		for p := range phases {
			ratios := make([]float64, len(all["ferry"]))
			for i := range ratios {
				ratios[i] = all["ferry"][i].Seconds[p] / all[peer][i].Seconds[p]
			}
			slices.Sort(ratios)
			cells[p] = fmt.Sprintf("%.2f×", ratios[len(ratios)/2])
		}
		fmt.Printf("| %s | %s | %s | %s |\n", peer, cells[0], cells[1], cells[2])
	}
	fmt.Printf("\nOf Ferry's cold time, rendering the %d objects from the store alone takes %.2f s (median).\n", n, measure.Median(all["ferry"], func(r result) float64 { return r.Render }))
	fmt.Printf("\nFailed health → previous revision healthy again: %.1f s beyond the 10 s health timeout.\n", rollback.Seconds())
}

// objects returns the objects of generation gen in namespace ns. Generation 2 changes
// every ConfigMap and Deployment and keeps the Namespace.
func objects(ns string, gen int) []*unstructured.Unstructured {
	out := []*unstructured.Unstructured{{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}}}}
	for i := range configMaps {
		data := map[string]any{}
		for k := range 10 {
			data[fmt.Sprintf("key%d", k)] = fmt.Sprintf("value %d of object %d, generation %d", k, i, gen)
		}
		out = append(out, &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "ConfigMap",
			"metadata": map[string]any{"name": fmt.Sprintf("cm-%03d", i), "namespace": ns}, "data": data}})
	}
	for i := range deployments {
		name := fmt.Sprintf("app-%03d", i)
		out = append(out, &unstructured.Unstructured{Object: map[string]any{"apiVersion": "apps/v1", "kind": "Deployment",
			"metadata": map[string]any{"name": name, "namespace": ns},
			"spec": map[string]any{
				"replicas": int64(1),
				"selector": map[string]any{"matchLabels": map[string]any{"app": name}},
				"template": map[string]any{
					"metadata": map[string]any{"labels": map[string]any{"app": name}},
					"spec": map[string]any{"containers": []any{map[string]any{
						"name": "app", "image": "registry.local/app:1",
						"env": []any{map[string]any{"name": "GENERATION", "value": fmt.Sprint(gen)}},
					}}},
				},
			}}})
	}
	return out
}

func yamlOf(objs []*unstructured.Unstructured) ([]byte, error) {
	var buf bytes.Buffer
	for _, o := range objs {
		b, err := sigsyaml.Marshal(o.Object)
		if err != nil {
			return nil, err
		}
		buf.WriteString("---\n")
		buf.Write(b)
	}
	return buf.Bytes(), nil
}

func runKubectl(ctx context.Context, tb *testbed.Testbed, ns string) (result, error) {
	var res result
	dir, err := os.MkdirTemp("", "bench-kubectl-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	for p, gen := range []int{1, 1, 2} {
		y, err := yamlOf(objects(ns, gen))
		if err != nil {
			return res, err
		}
		file := filepath.Join(dir, fmt.Sprintf("gen%d.yaml", gen))
		if err := os.WriteFile(file, y, 0o600); err != nil {
			return res, err
		}
		begin := time.Now()
		cmd := exec.CommandContext(ctx, tb.Bin("kubectl"), "--kubeconfig", tb.Kubeconfig, "apply", "--server-side", "--field-manager=bench-kubectl", "-f", file)
		if out, err := cmd.CombinedOutput(); err != nil {
			return res, fmt.Errorf("kubectl: %v\n%s", err, out)
		}
		res.Seconds[p] = time.Since(begin).Seconds()
	}
	return res, nil
}

func runChild(ctx context.Context, tb *testbed.Testbed, client, ns string) (result, error) {
	var res result
	cmd := exec.CommandContext(ctx, os.Args[0])
	cmd.Env = append(os.Environ(), "FERRY_BENCH_CHILD="+client, "FERRY_BENCH_NS="+ns, "FERRY_BENCH_KUBECONFIG="+tb.Kubeconfig, fmt.Sprintf("FERRY_BENCH_CONFIGMAPS=%d", configMaps))
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return res, err
	}
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		return res, fmt.Errorf("child output %q: %w", stdout.String(), err)
	}
	return res, nil
}

func child() error {
	ctx := context.Background()
	client, ns := os.Getenv("FERRY_BENCH_CHILD"), os.Getenv("FERRY_BENCH_NS")
	cfg, err := clientcmd.BuildConfigFromFlags("", os.Getenv("FERRY_BENCH_KUBECONFIG"))
	if err != nil {
		return err
	}
	cnt := &measure.Counter{}
	cfg.WrapTransport = cnt.Wrap
	var step func(p, gen int) error
	var res result
	switch client {
	case "raw":
		step, err = rawStep(cfg, ns)
	case "ssa":
		step, err = ssaStep(cfg, ns, 4)
	case "ssa32":
		step, err = ssaStep(cfg, ns, 32)
	case "ferry":
		step, err = ferryStep(ctx, cfg, ns, &res.Render)
	default:
		err = fmt.Errorf("unknown client %q", client)
	}
	if err != nil {
		return err
	}
	cnt.Take() // setup requests (discovery, store) are not counted
	// Nor is setup's memory: Ferry's builds its two bundles with kustomize, CI's work.
	if err := measure.ResetPeakRSS(); err != nil {
		return err
	}
	for p, gen := range []int{1, 1, 2} {
		if prof := os.Getenv("FERRY_BENCH_CPUPROFILE"); prof != "" && client == "ferry" {
			f, err := os.Create(fmt.Sprintf("%s.%d", prof, p))
			if err != nil {
				return err
			}
			pprof.StartCPUProfile(f)
		}
		begin := time.Now()
		if err := step(p, gen); err != nil {
			return fmt.Errorf("%s: %w", phaseNames[p], err)
		}
		res.Seconds[p] = time.Since(begin).Seconds()
		pprof.StopCPUProfile()
		if prof := os.Getenv("FERRY_BENCH_MEMPROFILE"); prof != "" && client == "ferry" {
			// What the phase allocated (alloc_space) and what it keeps (inuse_space).
			f, err := os.Create(fmt.Sprintf("%s.%d", prof, p))
			if err != nil {
				return err
			}
			runtime.GC()
			err = pprof.Lookup("allocs").WriteTo(f, 0)
			f.Close()
			if err != nil {
				return err
			}
		}
		res.Reads[p], res.Writes[p], _ = cnt.Take()
	}
	// The child's own peak since its setup: getrusage's maxrss of a child starts from its
	// parent's at fork, so it would report the bench's memory, not the client's.
	res.RSSKiB = measure.PeakRSS()
	return json.NewEncoder(os.Stdout).Encode(res)
}

// rawStep is the raw client limit: hard-coded resources, 32 server-side applies in flight.
func rawStep(cfg *rest.Config, ns string) (func(int, int) error, error) {
	cfg.QPS = -1
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	gvr := map[string]schema.GroupVersionResource{
		"Namespace":  {Version: "v1", Resource: "namespaces"},
		"ConfigMap":  {Version: "v1", Resource: "configmaps"},
		"Deployment": {Group: "apps", Version: "v1", Resource: "deployments"},
	}
	return func(_, gen int) error {
		objs := objects(ns, gen)
		if err := rawApply(dyn, gvr, objs[:1]); err != nil {
			return err
		}
		return rawApply(dyn, gvr, objs[1:])
	}, nil
}

func rawApply(dyn dynamic.Interface, gvr map[string]schema.GroupVersionResource, objs []*unstructured.Unstructured) error {
	sem := make(chan struct{}, 32)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	force := true
	for _, o := range objs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			data, _ := json.Marshal(o.Object)
			var ri dynamic.ResourceInterface = dyn.Resource(gvr[o.GetKind()])
			if o.GetNamespace() != "" {
				ri = dyn.Resource(gvr[o.GetKind()]).Namespace(o.GetNamespace())
			}
			_, err := ri.Patch(context.Background(), o.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{FieldManager: "bench-raw", Force: &force})
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// ssaStep is fluxcd/pkg/ssa as kustomize-controller uses it: ApplyAllStaged at concurrency
// conc (kustomize-controller's default is 4; 32 is the like-for-like of Ferry's and the raw
// loop's parallelism), with no client-side rate limit. kustomize-controller gets its
// rest.Config from fluxcd/pkg/runtime's client.GetConfigOrDie, which sets QPS and Burst to -1
// when the API server has Priority and Fairness on (client/client.go, v0.123.0), as
// kube-apiserver does by default since 1.20 and the testbed's does; its --kube-api-qps 50 and
// --kube-api-burst 300 apply only without it. (With 50/300, the "nothing changed" figure was
// that token bucket: (2,003 − 300) / 50 = 34 s.)
func ssaStep(cfg *rest.Config, ns string, conc int) (func(int, int) error, error) {
	cfg.QPS, cfg.Burst = -1, -1
	c, err := ctrlclient.New(cfg, ctrlclient.Options{})
	if err != nil {
		return nil, err
	}
	rm := ssa.NewResourceManager(c, polling.NewStatusPoller(c, c.RESTMapper(), polling.Options{}), ssa.Owner{Field: "bench-ssa", Group: "bench.ferry.dev"})
	rm.SetConcurrency(conc)
	return func(_, gen int) error {
		_, err := rm.ApplyAllStaged(context.Background(), objects(ns, gen), ssa.DefaultApplyOptions())
		return err
	}, nil
}

// ferryStep admits both generations as bundle revisions 1 and 2 of a node store, then times
// Rollout(1) (render included), Sync (nothing changed) and Rollout(2).
func ferryStep(ctx context.Context, cfg *rest.Config, ns string, render *float64) (func(int, int) error, error) {
	dir, err := os.MkdirTemp("", "bench-ferry-")
	if err != nil {
		return nil, err
	}
	st, err := store.Open(filepath.Join(dir, "state"), store.Options{})
	if err != nil {
		return nil, err
	}
	for gen := 1; gen <= 2; gen++ {
		if err := admit(ctx, st, dir, ns, gen); err != nil {
			return nil, err
		}
	}
	r, err := st.GetRevision("bench", 1)
	if err != nil {
		return nil, err
	}
	b, err := bundles.Open(ctx, st, r.Manifest)
	if err != nil {
		return nil, err
	}
	begin := time.Now()
	if _, err := apply.RenderComponent(ctx, st, b, 0, apply.Env{}); err != nil {
		return nil, err
	}
	*render = time.Since(begin).Seconds()
	opts := apply.Options{}
	if os.Getenv("FERRY_BENCH_LOG") != "" {
		opts.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	ap, err := apply.New(cfg, opts)
	if err != nil {
		return nil, err
	}
	eng := rollout.New(st, ap, rollout.Options{Log: opts.Log})
	return func(p, gen int) error {
		if p == 1 {
			_, err := eng.Sync(ctx, "bench")
			return err
		}
		_, err := eng.Rollout(ctx, "bench", uint64(gen))
		return err
	}, nil
}

func admit(ctx context.Context, st *store.Store, work, ns string, gen int) error {
	y, err := yamlOf(objects(ns, gen))
	if err != nil {
		return err
	}
	return admitTree(ctx, st, filepath.Join(work, fmt.Sprintf("tree%d", gen)), gen, "{path: ./app, prune: true}", y)
}

// admitTree writes a one-component bundle "bench" (the component's kustomize spec in flow
// style, its objects in one file) under tree, builds revision gen and admits it into st.
func admitTree(ctx context.Context, st *store.Store, tree string, gen int, kustomize string, objs []byte) error {
	if err := os.MkdirAll(filepath.Join(tree, "app"), 0o755); err != nil {
		return err
	}
	spec := "apiVersion: ferry.dev/v1\nkind: Bundle\nmetadata: {name: bench}\nspec:\n  version: 1.0.0\n  components:\n    - name: app\n      kustomize: " + kustomize + "\n"
	if err := os.WriteFile(filepath.Join(tree, "ferry.yaml"), []byte(spec), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tree, "app", "objects.yaml"), objs, 0o644); err != nil {
		return err
	}
	mem := memory.New()
	res, err := bundler.Build(ctx, mem, bundler.Options{Dir: tree, AllowDirty: true, Revision: uint64(gen), Created: time.Unix(1764057600, 0).UTC()})
	if err != nil {
		return err
	}
	b, err := bundles.Open(ctx, mem, res.Descriptor)
	if err != nil {
		return err
	}
	_, err = st.Admit(ctx, mem, store.Admission{Name: "bench", Revision: uint64(gen), Version: b.Metadata.Version,
		Manifest: res.Descriptor, Blobs: append([]ocispec.Descriptor{b.Manifest.Config}, b.Manifest.Layers...)})
	return err
}

// timeRollback measures, on a testbed with controllers and a kwok node, how long after the
// health timeout the previous revision is healthy again.
func timeRollback(ctx context.Context, log *slog.Logger) (time.Duration, error) {
	tb, err := testbed.Start(ctx, testbed.Options{Services: testbed.Kube, Log: log})
	if err != nil {
		return 0, err
	}
	defer tb.Stop()
	dir, err := os.MkdirTemp("", "bench-rollback-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	st, err := store.Open(filepath.Join(dir, "state"), store.Options{})
	if err != nil {
		return 0, err
	}
	defer st.Close()
	for gen := 1; gen <= 2; gen++ {
		labels := "app: web"
		if gen == 2 {
			labels += ", " + testbed.FailLabel + ": \"true\""
		}
		objs := "apiVersion: v1\nkind: Namespace\nmetadata: {name: rollback}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: rollback}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {" + labels + "}}\n    spec: {containers: [{name: web, image: registry.local/web:1}]}\n"
		tree := filepath.Join(dir, fmt.Sprintf("tree%d", gen))
		if err := admitTree(ctx, st, tree, gen, "{path: ./app, prune: true, wait: true, timeout: 10s}", []byte(objs)); err != nil {
			return 0, err
		}
	}
	ap, err := apply.New(tb.REST, apply.Options{PollInterval: 500 * time.Millisecond, FailureWindow: 2 * time.Second})
	if err != nil {
		return 0, err
	}
	eng := rollout.New(st, ap, rollout.Options{})
	if _, err := eng.Rollout(ctx, "bench", 1); err != nil {
		return 0, err
	}
	begin := time.Now()
	_, err = eng.Rollout(ctx, "bench", 2)
	if !errors.Is(err, rollout.ErrRolledBack) {
		return 0, fmt.Errorf("want a rollback, got %v", err)
	}
	if !strings.Contains(err.Error(), "not healthy") {
		return 0, err
	}
	return time.Since(begin) - 10*time.Second, nil
}
