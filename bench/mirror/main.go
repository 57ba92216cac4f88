// Command mirror measures bundles.Mirror (what `ferry mirror SRC DST` runs) beside oras and
// skopeo moving the same images, and a thin archive (MirrorOptions.Omit) admitted by
// daemon.Ingest beside a full import of the changed bytes alone, all in one run:
//
//	registry → disk   Mirror to a tar, to a layout    oras cp --to-oci-layout, skopeo copy → oci-archive:
//	disk → registry   Mirror from the tar, the layout  oras cp --from-oci-layout (its layout, and Ferry's tar),
//	                                                   skopeo copy oci-archive: → docker://
//	delta             thin archive of revision 2 for a node holding revision 1 (one image of
//	                  IMAGES changed): its bytes beside the changed image's, its Ingest into a
//	                  store holding revision 1 beside the Ingest of a bundle carrying only the
//	                  changed image into an empty store
//
// The bundle carries IMAGES images of gzip layers of random bytes (stored, so incompressible
// as real layers are), 2–100 MiB each, TOTAL in all, made deterministically and pushed to the
// testbed's registry; it is built with bundler.Build and signed with bundler.Sign. Ferry's
// side runs in a child process (this program re-executed) calling exactly what the CLI
// calls, with the CLI's default options; each peer runs as its users run it, with its
// defaults. Wall time, CPU time (user + system of the process and its children) and peak
// RSS are per process; a peer that takes one command per image is the sum of them.
//
//	go run ./bench/mirror -total 1536 -images 20 -runs 3
//	go run ./bench/mirror -profile /tmp/prof   # CPU profiles of Ferry's children
package main

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/oci"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/ferrygitops/ferry/bench/measure"
	"github.com/ferrygitops/ferry/bundler"
	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/daemon"
	"github.com/ferrygitops/ferry/integration/testbed"
	"github.com/ferrygitops/ferry/store"
	"github.com/ferrygitops/ferry/verify"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "child" {
		if err := child(context.Background(), os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		return
	}
	var c config
	flag.IntVar(&c.totalMiB, "total", 1536, "MiB of image layers in the bundle")
	flag.IntVar(&c.images, "images", 20, "images the bundle carries")
	flag.IntVar(&c.runs, "runs", 3, "runs of every copy (the order of tools alternates)")
	flag.StringVar(&c.profile, "profile", "", "write a CPU profile of each Ferry child into this directory")
	flag.StringVar(&c.dir, "dir", "", "work directory (default a new one under $TMPDIR, removed at the end)")
	flag.Parse()
	if err := run(context.Background(), c); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type config struct {
	totalMiB, images, runs int
	profile, dir           string
}

// Layer sizes: log-uniform between these, then scaled so the bundle holds -total.
const (
	minLayerMiB = 2
	maxLayerMiB = 100
)

// image is one carried image as the bench made it.
type image struct {
	name   string // repository under the testbed's registry
	layers []int64
	seed   uint64
	root   ocispec.Descriptor
	bytes  int64 // manifest, config and layers
}

// plan lays out n images of 1–3 layers each, totalMiB in all, the same every run.
func plan(n, totalMiB int) []image {
	r := mrand.New(mrand.NewPCG(20261203, 1))
	ims := make([]image, n)
	var sum float64
	raw := make([][]float64, n)
	for i := range ims {
		for range 1 + r.IntN(3) {
			mib := minLayerMiB * math.Pow(maxLayerMiB/minLayerMiB, r.Float64())
			raw[i] = append(raw[i], mib)
			sum += mib
		}
	}
	scale := float64(totalMiB) / sum
	for i := range ims {
		ims[i].name = fmt.Sprintf("bench/app-%02d", i)
		ims[i].seed = uint64(i + 1)
		for _, mib := range raw[i] {
			ims[i].layers = append(ims[i].layers, max(int64(mib*scale*(1<<20)), 1<<20))
		}
	}
	return ims
}

// gzipLayer streams a gzip (stored blocks: random bytes do not compress) of the testbed's
// layer tar for seed and size. The diff_id is the digest of the tar, written to diff.
func gzipLayer(seed uint64, size int64, diff io.Writer) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		zw, _ := gzip.NewWriterLevel(pw, gzip.NoCompression)
		var w io.Writer = zw
		if diff != nil {
			w = io.MultiWriter(zw, diff)
		}
		_, err := io.Copy(w, testbed.LayerTar(seed, size))
		if err == nil {
			err = zw.Close()
		}
		pw.CloseWithError(err)
	}()
	return pr
}

// push makes im in the registry under tag: each layer generated twice, to hash it and to
// send it, so no layer is held in memory.
func push(ctx context.Context, registry string, im *image, tag string) error {
	r, err := remote.NewRepository(registry + "/" + im.name)
	if err != nil {
		return err
	}
	r.PlainHTTP = true
	var layers []ocispec.Descriptor
	var diffIDs []digest.Digest
	im.bytes = 0
	for i, size := range im.layers {
		seed := im.seed<<8 | uint64(i)
		dh, bh := sha256.New(), sha256.New()
		n, err := io.Copy(bh, gzipLayer(seed, size, dh))
		if err != nil {
			return err
		}
		d := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(bh.Sum(nil))), Size: n}
		if err := r.Push(ctx, d, gzipLayer(seed, size, nil)); err != nil {
			return fmt.Errorf("push layer of %s: %w", im.name, err)
		}
		layers = append(layers, d)
		diffIDs = append(diffIDs, digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(dh.Sum(nil))))
		im.bytes += n
	}
	cfg, _ := json.Marshal(ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"}, RootFS: ocispec.RootFS{Type: "layers", DiffIDs: diffIDs}})
	cd := content.NewDescriptorFromBytes(ocispec.MediaTypeImageConfig, cfg)
	if err := r.Push(ctx, cd, strings.NewReader(string(cfg))); err != nil {
		return err
	}
	man := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cd, Layers: layers}
	man.SchemaVersion = 2
	mb, _ := json.Marshal(man)
	md := content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, mb)
	if err := r.Push(ctx, md, strings.NewReader(string(mb))); err != nil {
		return err
	}
	im.root, im.bytes = md, im.bytes+cd.Size+md.Size
	return r.Tag(ctx, md, tag)
}

// measured is one process (or a peer's commands summed): wall, CPU (user + system) and
// peak RSS in KiB (the largest of its processes).
type measured struct {
	wall, cpu time.Duration
	peakKiB   int64
	inner     time.Duration // what a Ferry child timed itself (the call alone)
}

func (m *measured) add(o measured) {
	m.wall += o.wall
	m.cpu += o.cpu
	m.peakKiB = max(m.peakKiB, o.peakKiB)
	m.inner += o.inner
}

func runCmd(cmd *exec.Cmd) (measured, string, error) {
	var stdout strings.Builder
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	took, peak, _, err := measure.Run(cmd)
	if err != nil {
		return measured{}, "", fmt.Errorf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, stderr.String())
	}
	m := measured{wall: took, peakKiB: peak, cpu: cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()}
	return m, stdout.String(), nil
}

type row struct {
	group, tool, what string
	vs                string // the key of the Ferry row this peer is compared with
	concurrency       string
	bytes             int64
	runs              []measured
}

func (r *row) median(f func(measured) float64) float64 {
	return measure.Median(r.runs, f)
}

type bench struct {
	c        config
	tb       *testbed.Testbed
	self     string
	work     string
	pub      string
	nProfile int
}

// ferry runs a child of this program: mirror or ingest, as the CLI and the daemon call them.
func (b *bench) ferry(args ...string) (measured, error) {
	cmd := exec.Command(b.self, append([]string{"child"}, args...)...)
	cmd.Env = os.Environ()
	if b.c.profile != "" {
		b.nProfile++
		cmd.Env = append(cmd.Env, fmt.Sprintf("BENCH_CPUPROFILE=%s/%02d-%s.pprof", b.c.profile, b.nProfile, args[0]))
	}
	m, out, err := runCmd(cmd)
	if err != nil {
		return m, err
	}
	var res childResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		return m, fmt.Errorf("child %v: %q: %w", args, out, err)
	}
	m.inner = time.Duration(res.Seconds * float64(time.Second))
	return m, nil
}

func (b *bench) oras(args ...string) (measured, error) {
	m, _, err := runCmd(exec.Command(b.tb.Bin("oras"), append([]string{"cp", "--no-tty"}, args...)...))
	return m, err
}

func (b *bench) skopeo(args ...string) (measured, error) {
	m, _, err := runCmd(exec.Command("skopeo", append([]string{"copy", "-q"}, args...)...))
	return m, err
}

func run(ctx context.Context, c config) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	work := c.dir
	if work == "" {
		if work, err = os.MkdirTemp("", "bench-mirror-"); err != nil {
			return err
		}
		defer os.RemoveAll(work)
	}
	if c.profile != "" {
		if err := os.MkdirAll(c.profile, 0o755); err != nil {
			return err
		}
	}
	tb, err := testbed.Start(ctx, testbed.Options{Services: testbed.Registry, Timeout: 5 * time.Minute})
	if err != nil {
		return err
	}
	defer tb.Stop()
	b := &bench{c: c, tb: tb, self: self, work: work}
	reg := tb.Registry
	logf := func(format string, a ...any) {
		fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
	}

	// The images: revision 1 carries all of them; revision 2 changes one (all its layers new).
	ims := plan(c.images, c.totalMiB)
	for i := range ims {
		if err := push(ctx, reg, &ims[i], "1"); err != nil {
			return err
		}
	}
	changedIdx := medianImage(ims)
	changed := ims[changedIdx]
	changed.seed += 1000
	if err := push(ctx, reg, &changed, "2"); err != nil {
		return err
	}
	var imgBytes int64
	for _, im := range ims {
		imgBytes += im.bytes
	}
	logf("pushed %d images, %d MiB; revision 2 changes %s (%d layers, %.1f MiB)", len(ims), imgBytes>>20, changed.name, len(changed.layers), mib(changed.bytes))

	// The bundles, built and signed as CI does, then published to the registry.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, _ := x509.MarshalPKIXPublicKey(key.Public())
	b.pub = filepath.Join(work, "ci.pub")
	if err := os.WriteFile(b.pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
		return err
	}
	build := filepath.Join(work, "build")
	refs := func(rev int) []string {
		var out []string
		for i, im := range ims {
			tag := "1"
			if rev == 2 && i == changedIdx {
				tag = "2"
			}
			out = append(out, reg+"/"+im.name+":"+tag)
		}
		return out
	}
	site := "oci://" + reg + "/bench/site"
	for rev := 1; rev <= 2; rev++ {
		if _, err := buildBundle(ctx, filepath.Join(work, fmt.Sprintf("tree-%d", rev)), build, "site", rev, refs(rev), key, reg+"/bench/site"); err != nil {
			return err
		}
		if err := mirror(ctx, fmt.Sprintf("%s:1.0.%d", build, rev-1), site); err != nil {
			return err
		}
	}
	// The delta peer: a bundle carrying only the changed image.
	only := filepath.Join(work, "only")
	if _, err := buildBundle(ctx, filepath.Join(work, "tree-only"), only, "changed-only", 1, []string{reg + "/" + changed.name + ":2"}, key, reg+"/bench/changed-only"); err != nil {
		return err
	}
	onlyTar := filepath.Join(work, "changed-only.tar")
	if err := mirror(ctx, only+":1.0.0", onlyTar); err != nil {
		return err
	}
	logf("built, signed and published revisions 1 and 2 of bench/site")

	// What the same artifact is: every blob of revision 1 (bundle, signature, images).
	layout, err := oci.NewWithContext(ctx, build)
	if err != nil {
		return err
	}
	rev1, err := layout.Resolve(ctx, "1.0.0")
	if err != nil {
		return err
	}
	bundle1, err := bundles.Open(ctx, layout, rev1)
	if err != nil {
		return err
	}
	sigTag := bundles.SignatureTag(rev1)
	artifact := func(roots []ocispec.Descriptor) (map[digest.Digest]int64, error) {
		blobs := map[digest.Digest]int64{}
		for _, r := range roots {
			graph, err := bundles.ImageBlobs(ctx, layout, r)
			if err != nil {
				return nil, err
			}
			for _, d := range graph {
				blobs[d.Digest] = d.Size
			}
		}
		return blobs, nil
	}
	sigDesc, err := layout.Resolve(ctx, sigTag)
	if err != nil {
		return err
	}
	roots := []ocispec.Descriptor{rev1, sigDesc}
	var imageRoots []ocispec.Descriptor
	for _, im := range bundle1.Metadata.Images {
		imageRoots = append(imageRoots, im.Descriptor)
	}
	all, err := artifact(append(roots, imageRoots...))
	if err != nil {
		return err
	}
	imagesOnly, err := artifact(imageRoots)
	if err != nil {
		return err
	}
	allBytes, imagesBytes := sum(all), sum(imagesOnly)

	rows := map[string]*row{}
	var order []string
	// vs is the Ferry row of the same shape (layout dir or tar) a peer is compared with.
	add := func(group, tool, what, vs, conc string, bytes int64, m measured) {
		k := group + "|" + tool + "|" + what
		r, ok := rows[k]
		if !ok {
			r = &row{group: group, tool: tool, what: what, vs: vs, concurrency: conc, bytes: bytes}
			rows[k] = r
			order = append(order, k)
		}
		r.runs = append(r.runs, m)
	}
	const (
		ferryConc  = "3 blobs (oras-go CopyGraph default), two images at a time; the tar written after, one stream"
		ferryConcL = "3 blobs (oras-go CopyGraph default), two images at a time"
		orasConc   = "3 (`--concurrency` default), one command per image"
		skopeoConc = "up to 6 layers (containers/image maxParallelDownloads), one command per image"
	)
	for r := 1; r <= c.runs; r++ {
		dir := filepath.Join(work, fmt.Sprintf("run-%d", r))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		ferryTar, ferryLayout := filepath.Join(dir, "ferry.tar"), filepath.Join(dir, "ferry-layout")
		orasLayout, skopeoDir := filepath.Join(dir, "oras-layout"), filepath.Join(dir, "skopeo")
		os.MkdirAll(skopeoDir, 0o755)
		repo := func(tool string) string { return fmt.Sprintf("%s/bench/run%d-%s", reg, r, tool) }

		// Registry → disk.
		steps := []func() error{
			func() error {
				m, err := b.ferry("mirror", site+":1.0.0", ferryTar)
				add("registry → disk", "Ferry", "Mirror → tar", "", ferryConc, allBytes, m)
				return err
			},
			func() error {
				m, err := b.ferry("mirror", site+":1.0.0", ferryLayout)
				add("registry → disk", "Ferry", "Mirror → layout dir", "", ferryConcL, allBytes, m)
				return err
			},
			func() error {
				var sum measured
				for _, cp := range orasRoots(bundle1, rev1, sigDesc) {
					m, err := b.oras("--from-plain-http", reg+"/bench/site"+cp.src, "--to-oci-layout", orasLayout+":"+cp.tag)
					if err != nil {
						return err
					}
					sum.add(m)
				}
				add("registry → disk", "oras", "cp --to-oci-layout", "registry → disk|Ferry|Mirror → layout dir", orasConc, allBytes, sum)
				return nil
			},
			func() error {
				var sum measured
				for i, im := range bundle1.Metadata.Images {
					m, err := b.skopeo("--src-tls-verify=false", "docker://"+reg+"/bench/site@"+im.Descriptor.Digest.String(), fmt.Sprintf("oci-archive:%s/%02d.tar", skopeoDir, i))
					if err != nil {
						return err
					}
					sum.add(m)
				}
				add("registry → disk", "skopeo", "copy → oci-archive: (images only)", "registry → disk|Ferry|Mirror → tar", skopeoConc, imagesBytes, sum)
				return nil
			},
		}
		if err := alternate(r, steps); err != nil {
			return err
		}
		logf("run %d: registry → disk done", r)

		// Disk → registry, each into a repository of its own: nothing is there yet.
		steps = []func() error{
			func() error {
				m, err := b.ferry("mirror", ferryTar, "oci://"+repo("ferry-tar"))
				add("disk → registry", "Ferry", "Mirror tar →", "", ferryConcL, allBytes, m)
				return err
			},
			func() error {
				m, err := b.ferry("mirror", ferryLayout+":1.0.0", "oci://"+repo("ferry-layout"))
				add("disk → registry", "Ferry", "Mirror layout dir →", "", ferryConcL, allBytes, m)
				return err
			},
			func() error {
				var sum measured
				for _, cp := range orasRoots(bundle1, rev1, sigDesc) {
					m, err := b.oras("--from-oci-layout", orasLayout+":"+cp.tag, "--to-plain-http", repo("oras")+":"+cp.tag)
					if err != nil {
						return err
					}
					sum.add(m)
				}
				add("disk → registry", "oras", "cp --from-oci-layout (its layout dir)", "disk → registry|Ferry|Mirror layout dir →", orasConc, allBytes, sum)
				return nil
			},
			func() error {
				var sum measured
				for _, cp := range orasRoots(bundle1, rev1, sigDesc) {
					src := ferryTar + "@" + cp.digest.String()
					m, err := b.oras("--from-oci-layout", src, "--to-plain-http", repo("oras-tar")+":"+cp.tag)
					if err != nil {
						return err
					}
					sum.add(m)
				}
				add("disk → registry", "oras", "cp --from-oci-layout (Ferry's tar)", "disk → registry|Ferry|Mirror tar →", orasConc, allBytes, sum)
				return nil
			},
			func() error {
				// skopeo's blob info cache (/var/lib/containers/cache) remembers where it read
				// each blob: pushed to the same registry name it mounts them from the
				// repository it read them from (a cross-repository mount) and sends nothing.
				// Its main row pushes to the registry as localhost, a name the cache has not
				// seen, so the bytes are sent as the others send them.
				local := strings.Replace(repo("skopeo"), "127.0.0.1:", "localhost:", 1)
				var sum, mounted measured
				for i := range bundle1.Metadata.Images {
					m, err := b.skopeo("--dest-tls-verify=false", fmt.Sprintf("oci-archive:%s/%02d.tar", skopeoDir, i), fmt.Sprintf("docker://%s:%02d", local, i))
					if err != nil {
						return err
					}
					sum.add(m)
				}
				for i := range bundle1.Metadata.Images {
					m, err := b.skopeo("--dest-tls-verify=false", fmt.Sprintf("oci-archive:%s/%02d.tar", skopeoDir, i), fmt.Sprintf("docker://%s:%02d", repo("skopeo-mount"), i))
					if err != nil {
						return err
					}
					mounted.add(m)
				}
				add("disk → registry", "skopeo", "copy oci-archive: → (images only)", "disk → registry|Ferry|Mirror tar →", skopeoConc, imagesBytes, sum)
				add("disk → registry", "skopeo", "the same to the registry name it read from (its cache mounts the blobs: not a peer)", "", skopeoConc, imagesBytes, mounted)
				return nil
			},
		}
		if err := alternate(r, steps); err != nil {
			return err
		}
		logf("run %d: disk → registry done", r)
		if r < c.runs {
			os.RemoveAll(dir)
		}
	}

	// The delta. The node holds revision 1 (admitted from the full archive); the omit set is
	// every blob it holds, as its receipt will list them.
	last := filepath.Join(work, fmt.Sprintf("run-%d", c.runs))
	rev1Tar := filepath.Join(last, "ferry.tar")
	held, err := archiveBlobs(rev1Tar)
	if err != nil {
		return err
	}
	omitFile := filepath.Join(work, "omit.txt")
	var lines []string
	for d := range held {
		lines = append(lines, d.String())
	}
	sort.Strings(lines)
	if err := os.WriteFile(omitFile, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	d := &delta{changedName: changed.name, changedBytes: changed.bytes}
	fullTar, thinTar := filepath.Join(work, "rev2-full.tar"), filepath.Join(work, "rev2-thin.tar")
	for r := 1; r <= c.runs; r++ {
		os.Remove(fullTar)
		os.Remove(thinTar)
		m, err := b.ferry("mirror", site+":1.0.1", fullTar)
		if err != nil {
			return err
		}
		d.fullMirror = append(d.fullMirror, m)
		if m, err = b.ferry("mirror", site+":1.0.1", thinTar, omitFile); err != nil {
			return err
		}
		d.thinMirror = append(d.thinMirror, m)

		node := filepath.Join(work, fmt.Sprintf("node-%d", r))
		if m, err = b.ferry("ingest", node, rev1Tar, b.pub); err != nil {
			return err
		}
		d.rev1Ingest = append(d.rev1Ingest, m)
		peerState := filepath.Join(work, fmt.Sprintf("peer-%d", r))
		thinFirst := r%2 == 1
		for k := range 2 {
			if (k == 0) == thinFirst {
				if m, err = b.ferry("ingest", node, thinTar, b.pub); err != nil {
					return err
				}
				d.thinIngest = append(d.thinIngest, m)
			} else {
				if m, err = b.ferry("ingest", peerState, onlyTar, b.pub); err != nil {
					return err
				}
				d.onlyIngest = append(d.onlyIngest, m)
			}
		}
		// The full revision 2 into a node holding revision 1: what a node gets without a
		// receipt.
		fullNode := filepath.Join(work, fmt.Sprintf("fullnode-%d", r))
		if _, err = b.ferry("ingest", fullNode, rev1Tar, b.pub); err != nil {
			return err
		}
		if m, err = b.ferry("ingest", fullNode, fullTar, b.pub); err != nil {
			return err
		}
		d.fullIngest = append(d.fullIngest, m)
		for _, p := range []string{node, peerState, fullNode} {
			os.RemoveAll(p)
		}
		logf("delta run %d done", r)
	}
	if d.thinBytes, err = fileSize(thinTar); err != nil {
		return err
	}
	if d.fullBytes, err = fileSize(fullTar); err != nil {
		return err
	}
	if d.onlyBytes, err = fileSize(onlyTar); err != nil {
		return err
	}
	if d.rev1Bytes, err = fileSize(rev1Tar); err != nil {
		return err
	}

	report(os.Stdout, c, ims, changed, allBytes, imagesBytes, rows, order, d, versions(tb))
	return nil
}

// copyRoot is one oras command of the mirror: the source reference tail, its tag in the
// layout, and its digest.
type copyRoot struct {
	src, tag string
	digest   digest.Digest
}

// orasRoots is what a user of oras copies to move the bundle: the bundle, its signature (the
// cosign tag) and each image it carries, one command each.
func orasRoots(b *bundles.Bundle, rev, sig ocispec.Descriptor) []copyRoot {
	sigTag := bundles.SignatureTag(rev)
	out := []copyRoot{{":1.0.0", "1.0.0", rev.Digest}, {":" + sigTag, sigTag, sig.Digest}}
	for i, im := range b.Metadata.Images {
		out = append(out, copyRoot{"@" + im.Descriptor.Digest.String(), fmt.Sprintf("img-%02d", i), im.Descriptor.Digest})
	}
	return out
}

// alternate runs steps in order on odd runs and in reverse on even ones, so that neither
// side always meets a cold or a warm cache.
func alternate(r int, steps []func() error) error {
	if r%2 == 0 {
		slices.Reverse(steps)
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return err
		}
	}
	return nil
}

type delta struct {
	changedName                                    string
	changedBytes, thinBytes, fullBytes, onlyBytes  int64
	rev1Bytes                                      int64
	fullMirror, thinMirror                         []measured
	rev1Ingest, thinIngest, onlyIngest, fullIngest []measured
}

func medianImage(ims []image) int {
	idx := make([]int, len(ims))
	for i := range idx {
		idx[i] = i
	}
	total := func(im image) (n int64) {
		for _, l := range im.layers {
			n += l
		}
		return n
	}
	sort.Slice(idx, func(a, b int) bool { return total(ims[idx[a]]) < total(ims[idx[b]]) })
	return idx[len(idx)/2]
}

func sum(m map[digest.Digest]int64) (n int64) {
	for _, v := range m {
		n += v
	}
	return n
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

func fileSize(p string) (int64, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// archiveBlobs lists the blobs a bundle archive holds.
func archiveBlobs(path string) (map[digest.Digest]bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[digest.Digest]bool{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if rest, ok := strings.CutPrefix(h.Name, "blobs/sha256/"); ok && h.Typeflag == tar.TypeReg {
			out[digest.NewDigestFromEncoded(digest.SHA256, rest)] = true
		}
	}
}

// buildBundle writes a tree whose one component runs each image, builds it into the layout
// at dst (carrying the images) and signs it there.
func buildBundle(ctx context.Context, tree, dst, name string, rev int, images []string, key *ecdsa.PrivateKey, identity string) (ocispec.Descriptor, error) {
	var deploy strings.Builder
	for i, ref := range images {
		fmt.Fprintf(&deploy, "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: app-%02d, namespace: default}\nspec:\n  selector: {matchLabels: {app: app-%02d}}\n"+
			"  template:\n    metadata: {labels: {app: app-%02d}}\n    spec: {containers: [{name: app, image: %q}]}\n", i, i, i, ref)
	}
	files := map[string]string{
		"ferry.yaml": fmt.Sprintf("apiVersion: ferry.dev/v1\nkind: Bundle\nmetadata: {name: %s}\nspec:\n  version: 1.0.%d\n  images: {carry: true}\n"+
			"  components:\n    - name: app\n      kustomize: {path: ./app, wait: false}\n", name, rev-1),
		"app/kustomization.yaml": "resources: [deploy.yaml]\n",
		"app/deploy.yaml":        deploy.String(),
	}
	for n, body := range files {
		p := filepath.Join(tree, n)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return ocispec.Descriptor{}, err
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			return ocispec.Descriptor{}, err
		}
	}
	st, err := oci.NewWithContext(ctx, dst)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	res, err := bundler.Build(ctx, st, bundler.Options{Dir: tree, AllowDirty: true, Revision: uint64(rev), Created: time.Date(2026, 12, 3, 0, 0, rev, 0, time.UTC)})
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("build %s revision %d: %w", name, rev, err)
	}
	if _, err := bundler.Sign(ctx, st, res.Descriptor, key, identity); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("sign %s: %w", name, err)
	}
	return res.Descriptor, nil
}

func mirror(ctx context.Context, src, dst string) error {
	s, err := bundles.ParseAddress(src)
	if err != nil {
		return err
	}
	d, err := bundles.ParseAddress(dst)
	if err != nil {
		return err
	}
	_, err = bundles.Mirror(ctx, s, d, bundles.Options{}, bundles.MirrorOptions{})
	return err
}

type childResult struct {
	Seconds float64 `json:"seconds"`
}

// child is Ferry's side, in a process of its own: `mirror SRC DST [OMITFILE]` is
// bundles.Mirror with the CLI's defaults (`ferry mirror SRC DST`), a thin one when OMITFILE
// lists digests; `ingest STATEDIR SRC PUB` opens the store and runs daemon.Ingest.
func child(ctx context.Context, args []string) (err error) {
	if p := os.Getenv("BENCH_CPUPROFILE"); p != "" {
		f, err := os.Create(p)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if len(args) < 3 {
		return fmt.Errorf("want mirror SRC DST [OMITFILE] or ingest STATEDIR SRC PUB, got %q", args)
	}
	var start time.Time
	switch args[0] {
	case "mirror":
		src, err := bundles.ParseAddress(args[1])
		if err != nil {
			return err
		}
		dst, err := bundles.ParseAddress(args[2])
		if err != nil {
			return err
		}
		var mo bundles.MirrorOptions
		if len(args) > 3 {
			b, err := os.ReadFile(args[3])
			if err != nil {
				return err
			}
			held := map[digest.Digest]bool{}
			for l := range strings.FieldsSeq(string(b)) {
				held[digest.Digest(l)] = true
			}
			mo.Omit = func(d digest.Digest) bool { return held[d] }
		}
		start = time.Now()
		if _, err := bundles.Mirror(ctx, src, dst, bundles.Options{}, mo); err != nil {
			return err
		}
	case "ingest":
		if len(args) != 4 {
			return fmt.Errorf("ingest STATEDIR SRC PUB, got %q", args)
		}
		key, err := verify.LoadPublicKey(args[3])
		if err != nil {
			return err
		}
		st, err := store.Open(args[1], store.Options{})
		if err != nil {
			return err
		}
		defer st.Close()
		a, err := bundles.ParseAddress(args[2])
		if err != nil {
			return err
		}
		start = time.Now()
		src, desc, err := bundles.OpenSource(ctx, a, bundles.Options{})
		if err != nil {
			return err
		}
		defer src.Close()
		if _, err := daemon.Ingest(ctx, st, src, desc, verify.Policy{Keys: []verify.Key{key}}, "bench"); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unknown child %q", args[0])
	}
	return json.NewEncoder(os.Stdout).Encode(childResult{Seconds: time.Since(start).Seconds()})
}

func versions(tb *testbed.Testbed) map[string]string {
	out := map[string]string{"go": runtime.Version()}
	if b, err := exec.Command(tb.Bin("oras"), "version").Output(); err == nil {
		out["oras"] = strings.TrimSpace(strings.TrimPrefix(strings.SplitN(string(b), "\n", 2)[0], "Version:"))
	}
	if b, err := exec.Command("skopeo", "--version").Output(); err == nil {
		out["skopeo"] = strings.TrimSpace(strings.TrimPrefix(string(b), "skopeo version"))
	}
	if b, err := exec.Command(tb.Bin("registry"), "--version").Output(); err == nil {
		out["registry"] = strings.TrimSpace(string(b))
	}
	return out
}

func report(w io.Writer, c config, ims []image, changed image, allBytes, imagesBytes int64, rows map[string]*row, order []string, d *delta, vers map[string]string) {
	var layers int
	minL, maxL := int64(math.MaxInt64), int64(0)
	for _, im := range ims {
		layers += len(im.layers)
		for _, l := range im.layers {
			minL, maxL = min(minL, l), max(maxL, l)
		}
	}
	fmt.Fprintf(w, "bundle: %d images, %d gzip layers of %.1f–%.1f MiB; %.1f MiB in all (bundle, signature and images: %d bytes; images alone %d bytes); %d runs, median\n",
		len(ims), layers, mib(minL), mib(maxL), mib(allBytes), allBytes, imagesBytes, c.runs)
	fmt.Fprintf(w, "versions: go %s, oras %s, skopeo %s, registry %s; %d CPUs\n\n", vers["go"], vers["oras"], vers["skopeo"], vers["registry"], runtime.NumCPU())
	fmt.Fprintln(w, "| direction | tool | what | MB/s | wall s | CPU s | peak RSS MiB | Ferry's throughput / this, median (min–max) of the runs; Ferry's row of the same shape (tar or layout dir) | concurrency |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|")
	for _, k := range order {
		r := rows[k]
		wall := r.median(func(m measured) float64 { return m.wall.Seconds() })
		cpu := r.median(func(m measured) float64 { return m.cpu.Seconds() })
		peak := r.median(func(m measured) float64 { return float64(m.peakKiB) })
		ratio := ""
		if f := rows[r.vs]; f != nil {
			var rs []float64
			for i := range min(len(f.runs), len(r.runs)) {
				// throughput ratio = (ferry bytes / ferry wall) / (peer bytes / peer wall)
				rs = append(rs, (float64(f.bytes)/f.runs[i].wall.Seconds())/(float64(r.bytes)/r.runs[i].wall.Seconds()))
			}
			ratio = fmt.Sprintf("%.2f× (%.2f–%.2f)", measure.Median(rs, func(x float64) float64 { return x }), slices.Min(rs), slices.Max(rs))
		}
		fmt.Fprintf(w, "| %s | %s | %s | %.0f | %.2f | %.2f | %.0f | %s | %s |\n", r.group, r.tool, r.what, float64(r.bytes)/1e6/wall, wall, cpu, peak/1024, ratio, r.concurrency)
	}
	med := func(ms []measured, f func(measured) time.Duration) float64 {
		return measure.Median(ms, func(m measured) float64 { return f(m).Seconds() })
	}
	wall := func(m measured) time.Duration { return m.wall }
	inner := func(m measured) time.Duration { return m.inner }
	cpu := func(m measured) time.Duration { return m.cpu }
	fmt.Fprintf(w, "\ndelta: revision 2 changes %s (%d layers), %d bytes new\n\n", changed.name, len(changed.layers), d.changedBytes)
	fmt.Fprintln(w, "| figure | bytes | × the changed image | wall s (process) | of it, the call | CPU s |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	line := func(what string, bytes int64, ms []measured) {
		b := ""
		x := ""
		if bytes > 0 {
			b, x = fmt.Sprint(bytes), fmt.Sprintf("%.3f×", float64(bytes)/float64(d.changedBytes))
		}
		fmt.Fprintf(w, "| %s | %s | %s | %.2f | %.2f | %.2f |\n", what, b, x, med(ms, wall), med(ms, inner), med(ms, cpu))
	}
	line("thin archive of revision 2 (Mirror with Omit = revision 1's blobs)", d.thinBytes, d.thinMirror)
	line("full archive of revision 2 (Mirror)", d.fullBytes, d.fullMirror)
	line("Ingest thin revision 2 into a store holding revision 1", d.thinBytes, d.thinIngest)
	line("peer: Ingest of a bundle carrying only the changed image, empty store", d.onlyBytes, d.onlyIngest)
	line("Ingest full revision 2 into a store holding revision 1", d.fullBytes, d.fullIngest)
	line("Ingest full revision 1 into an empty store", d.rev1Bytes, d.rev1Ingest)
	var rs []float64
	for i := range min(len(d.thinIngest), len(d.onlyIngest)) {
		rs = append(rs, d.thinIngest[i].inner.Seconds()/d.onlyIngest[i].inner.Seconds())
	}
	var rw []float64
	for i := range min(len(d.thinIngest), len(d.onlyIngest)) {
		rw = append(rw, d.thinIngest[i].wall.Seconds()/d.onlyIngest[i].wall.Seconds())
	}
	id := func(x float64) float64 { return x }
	fmt.Fprintf(w, "\nthin archive / changed image bytes: %.3f× (target ≤ 1.05×)\n", float64(d.thinBytes)/float64(d.changedBytes))
	fmt.Fprintf(w, "thin ingest / peer ingest, time: %.2f× the call, %.2f× the process, median of runs (target ≤ 1.1×)\n", measure.Median(rs, id), measure.Median(rw, id))
}
