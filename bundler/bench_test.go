package bundler

import (
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"oras.land/oras-go/v2/content/memory"

	"github.com/ferrygitops/ferry/bundles"
)

// BenchmarkBuildExample builds each example in bundles/examples — read ferry.yaml, pack,
// render every component, pack the manifest — and, in the same iteration, packs the same
// directory with `tar czf` (the peer: what a bundle costs over a plain archive of its tree).
// It reports both times and the bundle's size (manifest, config and layers).
func BenchmarkBuildExample(b *testing.B) {
	examples, err := filepath.Glob("../bundles/examples/*/ferry.yaml")
	if err != nil || len(examples) == 0 {
		b.Fatalf("no examples: %v", err)
	}
	for _, spec := range examples {
		dir := filepath.Dir(spec)
		b.Run(filepath.Base(dir), func(b *testing.B) {
			var buildT, tarT time.Duration
			var size int64
			for b.Loop() {
				store := memory.New()
				start := time.Now()
				res, err := Build(b.Context(), store, Options{Dir: dir, AllowDirty: true, Revision: 1, Created: time.Unix(1_700_000_000, 0)})
				if err != nil {
					b.Fatal(err)
				}
				buildT += time.Since(start)
				o, err := bundles.Open(b.Context(), store, res.Descriptor)
				if err != nil {
					b.Fatal(err)
				}
				size = res.Descriptor.Size + o.Manifest.Config.Size
				for _, l := range o.Manifest.Layers {
					size += l.Size
				}

				start = time.Now()
				if out, err := exec.Command("tar", "-C", dir, "-czf", filepath.Join(b.TempDir(), "x.tgz"), ".").CombinedOutput(); err != nil {
					b.Fatalf("tar: %v\n%s", err, out)
				}
				tarT += time.Since(start)
			}
			n := float64(b.N)
			b.ReportMetric(float64(buildT.Microseconds())/n/1000, "build-ms/op")
			b.ReportMetric(float64(tarT.Microseconds())/n/1000, "tar-czf-ms/op")
			b.ReportMetric(float64(size), "bundle-bytes")
		})
	}
}
