package daemon

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/oci"

	"github.com/ferrygitops/ferry/bench/measure"
	"github.com/ferrygitops/ferry/bundler"
	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/store"
	"github.com/ferrygitops/ferry/verify"
)

// benchLayout writes a signed bundle of `layers` layers holding `size` random bytes each into
// an OCI layout.
func benchLayout(b *testing.B, layers int, size int64) (dir, pub string, blobFiles []string) {
	b.Helper()
	root := b.TempDir()
	dir, pub = filepath.Join(root, "layout"), filepath.Join(root, "k.pub")
	layout, err := oci.New(dir)
	if err != nil {
		b.Fatal(err)
	}
	privPEM, pubPEM, _ := bundler.GenerateKeyPair(nil)
	os.WriteFile(filepath.Join(root, "k.key"), privPEM, 0o600)
	os.WriteFile(pub, pubPEM, 0o644)
	signer, err := bundler.LoadPrivateKey(filepath.Join(root, "k.key"), nil)
	if err != nil {
		b.Fatal(err)
	}
	m := &bundles.Metadata{SchemaVersion: bundles.SchemaVersion, Name: "big", Version: "1.0.0", Revision: 1,
		Created: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)}
	var descs []ocispec.Descriptor
	rng := mrand.NewChaCha8([32]byte{1})
	for i := range layers {
		// A real component layer (ingest checks every layer's tar), of incompressible files
		// of at most 32 MiB, written to a file and pushed streamed: no 256 MiB buffers.
		tree := filepath.Join(root, fmt.Sprintf("tree-%d", i))
		os.MkdirAll(tree, 0o755)
		for j, left := 0, size; left > 0; j++ {
			n := min(left, 32<<20)
			ff, err := os.Create(filepath.Join(tree, fmt.Sprintf("data-%03d.bin", j)))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.CopyN(ff, rng, n); err != nil {
				b.Fatal(err)
			}
			ff.Close()
			left -= n
		}
		f, err := os.CreateTemp(root, "layer-*")
		if err != nil {
			b.Fatal(err)
		}
		if err := bundles.PackDir(tree, f); err != nil {
			b.Fatal(err)
		}
		os.RemoveAll(tree)
		f.Seek(0, io.SeekStart)
		d, err := digest.SHA256.FromReader(f)
		if err != nil {
			b.Fatal(err)
		}
		fi, _ := f.Stat()
		desc := ocispec.Descriptor{MediaType: bundles.ComponentType, Digest: d, Size: fi.Size(),
			Annotations: map[string]string{ocispec.AnnotationTitle: fmt.Sprintf("c%d", i)}}
		f.Seek(0, io.SeekStart)
		if err := layout.Push(b.Context(), desc, f); err != nil {
			b.Fatal(err)
		}
		f.Close()
		os.Remove(f.Name())
		descs = append(descs, desc)
		m.Components = append(m.Components, bundles.Component{Name: fmt.Sprintf("c%d", i), Type: "kustomize", Kustomize: &bundles.KustomizeSpec{Path: "."}})
		blobFiles = append(blobFiles, filepath.Join(dir, "blobs", "sha256", d.Encoded()))
	}
	cfg, err := m.Marshal()
	if err != nil {
		b.Fatal(err)
	}
	cfgDesc := content.NewDescriptorFromBytes(bundles.ConfigType, cfg)
	layout.Push(b.Context(), cfgDesc, bytes.NewReader(cfg))
	man := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: bundles.ArtifactType,
		Config: cfgDesc, Layers: descs, Annotations: m.Annotations()}
	man.SchemaVersion = 2
	mb, _ := json.Marshal(man)
	md := content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, mb)
	layout.Push(b.Context(), md, bytes.NewReader(mb))
	layout.Tag(b.Context(), md, "1.0.0")
	if _, err := bundler.Sign(b.Context(), layout, md, signer, "big"); err != nil {
		b.Fatal(err)
	}
	return dir, pub, blobFiles
}

// TestBenchChild ingests one bundle address into a state directory, for BenchmarkIngest, which
// reads its peak RSS. It does nothing unless started by that benchmark.
func TestBenchChild(t *testing.T) {
	spec := os.Getenv("FERRY_BENCH_CHILD")
	if spec == "" {
		return
	}
	var stateDir, ref, pub string
	fmt.Sscanf(spec, "%s %s %s", &stateDir, &ref, &pub)
	st, err := store.Open(stateDir, store.Options{SpaceMargin: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	key, err := verify.LoadPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := bundles.ParseAddress(ref)
	src, desc, err := bundles.OpenSource(t.Context(), addr, bundles.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if _, err := Ingest(t.Context(), st, src, desc, verify.Policy{Keys: []verify.Key{key}}, "bench"); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkIngest admits a signed bundle of FERRY_BENCH_MIB MiB (default 1024, in 256 MiB
// layers) from an OCI layout directory and from a tar, into a fresh state directory each
// time (verify, digest-checked copy, fsync, bbolt commit), in a child process whose peak RSS
// is reported. The peers, in the same iteration: `openssl dgst -sha256` over the same layer
// files (the single-core hash limit), and `dd conv=fdatasync` copying them (the disk's durable
// write limit). The ratios are times (lower is better).
func BenchmarkIngest(b *testing.B) {
	mib := 1024
	if v, err := strconv.Atoi(os.Getenv("FERRY_BENCH_MIB")); err == nil && v > 0 {
		mib = v
	}
	layers := max(mib/256, 1)
	size := int64(mib) << 20 / int64(layers)
	layoutDir, pub, blobFiles := benchLayout(b, layers, size)
	tarPath := filepath.Join(b.TempDir(), "big.tar")
	{
		addr, _ := bundles.ParseAddress(layoutDir)
		src, desc, err := bundles.OpenSource(b.Context(), addr, bundles.Options{})
		if err != nil {
			b.Fatal(err)
		}
		dst, _ := bundles.ParseAddress(tarPath)
		if _, err := bundles.Copy(b.Context(), src, desc, dst, bundles.Options{}); err != nil {
			b.Fatal(err)
		}
	}
	total := float64(int64(layers) * size)
	for _, from := range []struct{ name, ref string }{{"layout", layoutDir}, {"tar", tarPath}} {
		b.Run(fmt.Sprintf("%s-%dMiB", from.name, mib), func(b *testing.B) {
			var ferryT, peerT, ddT, directT time.Duration
			var maxRSS int64
			for b.Loop() {
				state := filepath.Join(b.TempDir(), "state")
				cmd := exec.Command(os.Args[0], "-test.run=^TestBenchChild$", "-test.count=1")
				cmd.Env = append(os.Environ(), "FERRY_BENCH_CHILD="+state+" "+from.ref+" "+pub)
				took, peak, out, err := measure.Run(cmd)
				if err != nil {
					b.Fatalf("ingest: %v\n%s", err, out)
				}
				ferryT += took
				maxRSS = max(maxRSS, peak)
				os.RemoveAll(state)

				start := time.Now()
				peer := exec.Command("openssl", append([]string{"dgst", "-sha256"}, blobFiles...)...)
				if out, err := peer.CombinedOutput(); err != nil {
					b.Fatalf("openssl: %v\n%s", err, out)
				}
				peerT += time.Since(start)

				// The disk peers write the same bytes durably with as many writers as Ferry
				// runs copies at once (store's copyConcurrency, 4): through the page cache
				// (conv=fdatasync), and as Ferry writes, around it (oflag=direct).
				ddT += parallelDD(b, blobFiles, "conv=fdatasync")
				directT += parallelDD(b, blobFiles, "oflag=direct", "conv=fdatasync")
			}
			n := float64(b.N)
			b.ReportMetric(total/(1<<20)/(ferryT.Seconds()/n), "ferry-MiB/s")
			b.ReportMetric(total/(1<<20)/(peerT.Seconds()/n), "openssl-MiB/s")
			b.ReportMetric(peerT.Seconds()/ferryT.Seconds(), "ferry/openssl-throughput")
			b.ReportMetric(total/(1<<20)/(ddT.Seconds()/n), "dd4-fdatasync-MiB/s")
			b.ReportMetric(total/(1<<20)/(directT.Seconds()/n), "dd4-direct-MiB/s")
			b.ReportMetric(float64(maxRSS)/1024, "peak-RSS-MiB")
		})
	}
}

// parallelDD copies files with dd, four at a time, and returns the wall time.
func parallelDD(b *testing.B, files []string, flags ...string) time.Duration {
	b.Helper()
	dir := b.TempDir()
	start := time.Now()
	errs := make(chan error, len(files))
	sem := make(chan struct{}, 4)
	for i, f := range files {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			args := append([]string{"if=" + f, "of=" + filepath.Join(dir, fmt.Sprintf("dd-%d", i)), "bs=4M"}, flags...)
			if out, err := exec.Command("dd", args...).CombinedOutput(); err != nil {
				errs <- fmt.Errorf("dd %v: %v\n%s", args, err, out)
				return
			}
			errs <- nil
		}()
	}
	for range files {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	took := time.Since(start)
	os.RemoveAll(dir)
	return took
}
