// Command render measures how rendering one component grows with its object count (1k, 4k,
// 16k ConfigMaps in one plain component), in one run on the same tree:
//
//   - ferry node: the node's render of a bundle that carries its rendered layer
//     (apply.RenderComponent from the store: fetch, digest check, gunzip, parse, objects);
//   - ferry node, --rendered=false: the same render of a bundle without it, which builds the
//     component with kustomize again, as nodes did before rendered layers;
//   - kustomize build: the real CLI (the testbed's, v5.8.2, the kustomize/api Ferry links) over
//     the same directory, as its users run it;
//   - ferry bundle build: the CI side, which runs kustomize once to prove the component builds
//     and to make the rendered layer.
//
// Each figure is the median of -runs; a peer still running after -timeout is reported as not
// finished. The growth exponent between two sizes is log(t2/t1)/log(n2/n1): 1 is linear, 2
// quadratic. Peak RSS is the process's own (children measured from /proc).
//
//	go run -tags kustomize_disable_go_plugin_support ./bench/render [-sizes 1000,4000,16000]   (make bench-apply)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"oras.land/oras-go/v2/content/oci"

	"github.com/ferrygitops/ferry/apply"
	"github.com/ferrygitops/ferry/bench/measure"
	"github.com/ferrygitops/ferry/bundler"
	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/integration/testbed"
)

// A child process renders one bundle, so its peak RSS is its own.
const childEnv = "FERRY_BENCH_RENDER_CHILD"

func main() {
	if os.Getenv(childEnv) != "" {
		if err := child(); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		return
	}
	sizes := flag.String("sizes", "1000,4000,16000", "object counts, comma-separated, ascending")
	runs := flag.Int("runs", 1, "runs of each measurement; the median is reported (kustomize alone takes minutes at 16k objects)")
	timeout := flag.Duration("timeout", 10*time.Minute, "give up on one measurement after this long")
	rows := flag.String("rows", strings.Join(columns, ","), "the rows to measure, comma-separated (ferry bundle build always runs: the others need its bundle)")
	flag.Parse()
	only := map[string]bool{"ferry bundle build": true}
	for _, r := range strings.Split(*rows, ",") {
		only[strings.TrimSpace(r)] = true
	}
	var keep []string
	for _, c := range columns {
		if only[c] {
			keep = append(keep, c)
		}
	}
	columns = keep
	var ns []int
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			fmt.Fprintf(os.Stderr, "bench: -sizes: %q is not a positive count\n", s)
			os.Exit(2)
		}
		ns = append(ns, n)
	}
	if err := run(ns, *runs, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// figure is one measurement: seconds and peak RSS, or not finished within the timeout.
type figure struct {
	seconds float64
	rssKiB  int64
	dnf     bool
}

var columns = []string{"ferry node", "ferry node, --rendered=false", "kustomize build", "ferry bundle build"}

func run(sizes []int, runs int, timeout time.Duration) error {
	kustomize, err := testbedBin("kustomize")
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "ferry-bench-render-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	table := map[string][]figure{}
	gaveUp := map[string]bool{}
	for _, n := range sizes {
		dir := filepath.Join(work, strconv.Itoa(n))
		if err := writeTree(dir, n); err != nil {
			return err
		}
		// measureOne runs one measurement runs times; a child that reports its own figure
		// (a render, timed in-process after the bundle is opened) overrides the process's.
		measureOne := func(col string, args ...string) {
			if gaveUp[col] { // a smaller size did not finish: a larger one will not either
				table[col] = append(table[col], figure{dnf: true})
				return
			}
			var fs []figure
			for range runs {
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				c := exec.CommandContext(ctx, args[0], args[1:]...)
				if args[0] == self {
					c.Env = append(os.Environ(), childEnv+"=1")
				}
				var stdout strings.Builder
				c.Stdout = &stdout
				var stderr strings.Builder
				c.Stderr = &stderr
				took, peak, _, err := measure.Run(c)
				expired := ctx.Err() != nil
				cancel()
				if expired {
					fs, gaveUp[col] = []figure{{dnf: true}}, true
					fmt.Fprintf(os.Stderr, "%6d %-30s did not finish in %s\n", n, col, timeout)
					break
				}
				if err != nil {
					fmt.Fprintf(os.Stderr, "%s: %v\n%s", col, err, stderr.String())
					return
				}
				f := figure{seconds: took.Seconds(), rssKiB: peak}
				if own := strings.Fields(stdout.String()); len(own) == 3 {
					f.seconds, _ = strconv.ParseFloat(own[1], 64)
					f.rssKiB, _ = strconv.ParseInt(own[2], 10, 64)
					if got, _ := strconv.Atoi(own[0]); got != n {
						fmt.Fprintf(os.Stderr, "%s rendered %d objects, want %d\n", col, got, n)
						os.Exit(1)
					}
				}
				fs = append(fs, f)
				fmt.Fprintf(os.Stderr, "%6d %-30s %7.2f s  %4d MiB\n", n, col, f.seconds, f.rssKiB/1024)
			}
			table[col] = append(table[col], median(fs))
		}
		rendered, unrendered := filepath.Join(dir, "bundle"), filepath.Join(dir, "bundle-unrendered")
		measureOne("ferry bundle build", self, "build", dir, rendered)
		if slices.Contains(columns, "ferry node") {
			measureOne("ferry node", self, "render", rendered)
		}
		if slices.Contains(columns, "ferry node, --rendered=false") {
			if err := buildLayout(dir, unrendered, true); err != nil {
				return err
			}
			measureOne("ferry node, --rendered=false", self, "render", unrendered)
		}
		if slices.Contains(columns, "kustomize build") {
			measureOne("kustomize build", kustomize, "build", "--load-restrictor", "LoadRestrictionsNone", "-o", os.DevNull, filepath.Join(dir, "cms"))
		}
		for _, col := range columns {
			if len(table[col]) != len(table["ferry bundle build"]) {
				return fmt.Errorf("%d objects: %s failed", n, col)
			}
		}
	}
	report(sizes, table, runs, timeout)
	return nil
}

func median(fs []figure) figure {
	if len(fs) == 1 {
		return fs[0]
	}
	return figure{
		seconds: measure.Median(fs, func(f figure) float64 { return f.seconds }),
		rssKiB:  int64(measure.Median(fs, func(f figure) float64 { return float64(f.rssKiB) })),
	}
}

func report(sizes []int, table map[string][]figure, runs int, timeout time.Duration) {
	fmt.Printf("Render sweep: one plain component of N ConfigMaps, median of %d; %s; load %s\n\n", runs, measure.CPUModel(), measure.LoadAvg())
	fmt.Printf("| | %s |", strings.Join(fmtSizes(sizes, "%d objects"), " | "))
	for i := 1; i < len(sizes); i++ {
		fmt.Printf(" exponent %d→%d |", sizes[i-1], sizes[i])
	}
	fmt.Printf(" peak RSS at %d |\n|---|", sizes[len(sizes)-1])
	for range 2*len(sizes) - 1 + 1 {
		fmt.Print("---|")
	}
	fmt.Println()
	for _, col := range columns {
		fs := table[col]
		fmt.Printf("| %s |", col)
		for _, f := range fs {
			if f.dnf {
				fmt.Printf(" > %s |", timeout)
			} else {
				fmt.Printf(" %.2f s |", f.seconds)
			}
		}
		for i := 1; i < len(fs); i++ {
			if fs[i].dnf || fs[i-1].dnf {
				fmt.Print(" — |")
				continue
			}
			fmt.Printf(" %.2f |", math.Log(fs[i].seconds/fs[i-1].seconds)/math.Log(float64(sizes[i])/float64(sizes[i-1])))
		}
		if last := fs[len(fs)-1]; last.dnf {
			fmt.Println(" — |")
		} else {
			fmt.Printf(" %d MiB |\n", last.rssKiB/1024)
		}
	}
}

func fmtSizes(sizes []int, format string) []string {
	out := make([]string, len(sizes))
	for i, n := range sizes {
		out[i] = fmt.Sprintf(format, n)
	}
	return out
}

// writeTree writes a Git-less tree with one plain component of n ConfigMaps, 250 to a file.
func writeTree(dir string, n int) error {
	if err := os.MkdirAll(filepath.Join(dir, "cms"), 0o755); err != nil {
		return err
	}
	spec := "apiVersion: ferry.dev/v1\nkind: Bundle\nmetadata: {name: sweep}\nspec:\n  version: 1.0.0\n  components: [{name: cms, kustomize: {path: ./cms}}]\n"
	if err := os.WriteFile(filepath.Join(dir, "ferry.yaml"), []byte(spec), 0o644); err != nil {
		return err
	}
	var b strings.Builder
	var parts []string
	for i := range n {
		fmt.Fprintf(&b, "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-%05d\n  namespace: sweep\ndata:\n  index: \"%d\"\n  mode: edge\n  site: north-7\n", i, i)
		if i%250 == 249 || i == n-1 {
			part := fmt.Sprintf("part-%03d.yaml", i/250)
			if err := os.WriteFile(filepath.Join(dir, "cms", part), []byte(b.String()), 0o644); err != nil {
				return err
			}
			parts = append(parts, part)
			b.Reset()
		}
	}
	// A kustomization, so that the kustomize CLI builds the directory as it is.
	return os.WriteFile(filepath.Join(dir, "cms", "kustomization.yaml"), []byte("resources: ["+strings.Join(parts, ", ")+"]\n"), 0o644)
}

// child builds a tree's bundle into an OCI layout (build DIR OUT), or renders a built one
// from its layout as the node does and prints the object count, the seconds the render took
// and its peak RSS in KiB (render OUT).
func child() error {
	switch os.Args[1] {
	case "build":
		return buildLayout(os.Args[2], os.Args[3], false)
	case "render":
		ctx := context.Background()
		store, err := oci.NewWithContext(ctx, os.Args[2])
		if err != nil {
			return err
		}
		desc, err := store.Resolve(ctx, "1.0.0")
		if err != nil {
			return err
		}
		b, err := bundles.Open(ctx, store, desc)
		if err != nil {
			return err
		}
		begin := time.Now()
		objs, err := apply.RenderComponent(ctx, store, b, 0, apply.Env{})
		if err != nil {
			return err
		}
		fmt.Printf("%d %.4f %d\n", len(objs), time.Since(begin).Seconds(), measure.PeakRSS())
		return nil
	}
	return fmt.Errorf("unknown child %q", os.Args[1])
}

// buildLayout builds the tree in dir into a new OCI layout at out, with or without rendered
// layers.
func buildLayout(dir, out string, noRendered bool) error {
	ctx := context.Background()
	store, err := oci.NewWithContext(ctx, out)
	if err != nil {
		return err
	}
	_, err = bundler.Build(ctx, store, bundler.Options{Dir: dir, AllowDirty: true, Revision: 1, Created: time.Unix(1_700_000_000, 0).UTC(), NoRendered: noRendered})
	return err
}

func testbedBin(name string) (string, error) {
	dir, err := testbed.BinDir(context.Background(), slog.New(slog.DiscardHandler))
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		return "", errors.New("testbed: " + name + " not built (make testbed)")
	}
	return p, nil
}
