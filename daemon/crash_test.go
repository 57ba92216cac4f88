package daemon

import (
	"bytes"
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"oras.land/oras-go/v2/content/oci"

	"github.com/ferrygitops/ferry/bundler"
	"github.com/ferrygitops/ferry/bundler/bundlertest"
	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/store"
	"github.com/ferrygitops/ferry/verify"
)

const crashRevisions = 6

// TestCrashChild is the process TestIngestSurvivesSIGKILL kills: it ingests every revision of
// a layout that the store does not hold yet, collecting garbage after each. It does nothing
// unless started by that test.
func TestCrashChild(t *testing.T) {
	spec := os.Getenv("FERRY_CRASH_CHILD")
	if spec == "" {
		return
	}
	parts := strings.Split(spec, "|")
	stateDir, layoutDir, pubPath := parts[0], parts[1], parts[2]
	st, err := store.Open(stateDir, store.Options{SpaceMargin: 1, Keep: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	key, err := verify.LoadPublicKey(pubPath)
	if err != nil {
		t.Fatal(err)
	}
	for rev := 1; rev <= crashRevisions; rev++ {
		b, err := st.GetBundle("crash")
		if err != nil {
			t.Fatal(err)
		}
		if uint64(rev) <= b.Newest {
			continue
		}
		addr, _ := bundles.ParseAddress(layoutDir + ":" + strconv.Itoa(rev))
		src, desc, err := bundles.OpenSource(t.Context(), addr, bundles.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Ingest(t.Context(), st, src, desc, verify.Policy{Keys: []verify.Key{key}}, "crash"); err != nil {
			t.Fatal(err)
		}
		src.Close()
		if _, err := st.GC(); err != nil {
			t.Fatal(err)
		}
	}
}

// crashLayout writes revisions 1..crashRevisions of bundle "crash", each with 1 MiB of
// incompressible data (so copying takes long enough to be interrupted), signed, into an OCI
// layout, and the public key beside it.
func crashLayout(t testing.TB) (layoutDir, pubPath string) {
	t.Helper()
	dir := t.TempDir()
	layoutDir, pubPath = filepath.Join(dir, "layout"), filepath.Join(dir, "k.pub")
	layout, err := oci.New(layoutDir)
	if err != nil {
		t.Fatal(err)
	}
	privPEM, pubPEM, err := bundler.GenerateKeyPair(nil)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "k.key"), privPEM, 0o600)
	os.WriteFile(pubPath, pubPEM, 0o644)
	signer, err := bundler.LoadPrivateKey(filepath.Join(dir, "k.key"), nil)
	if err != nil {
		t.Fatal(err)
	}
	for rev := 1; rev <= crashRevisions; rev++ {
		noise := make([]byte, 1<<20)
		rand.Read(noise)
		tree := bundlertest.WriteTree(t, map[string]string{
			"kustomization.yaml": "resources: [cm.yaml]\n",
			"cm.yaml":            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
			"noise.bin":          string(noise),
		})
		var buf bytes.Buffer
		if err := bundles.PackDir(tree, &buf); err != nil {
			t.Fatal(err)
		}
		m := &bundles.Metadata{
			SchemaVersion: bundles.SchemaVersion, Name: "crash", Version: fmt.Sprintf("1.0.%d", rev), Revision: uint64(rev),
			Created:    time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC),
			Components: []bundles.Component{{Name: "app", Type: "kustomize", Kustomize: &bundles.KustomizeSpec{Path: "."}}},
		}
		desc, err := bundles.Pack(t.Context(), layout, m, [][]byte{buf.Bytes()})
		if err != nil {
			t.Fatal(err)
		}
		if err := layout.Tag(t.Context(), desc, strconv.Itoa(rev)); err != nil {
			t.Fatal(err)
		}
		if _, err := bundler.Sign(t.Context(), layout, desc, signer, "crash"); err != nil {
			t.Fatal(err)
		}
	}
	return layoutDir, pubPath
}

// TestIngestSurvivesSIGKILL kills an ingesting process at random points, again and again,
// and checks after each kill that the store opens, that every revision it lists has all its
// blobs with the right digests, that no half-written file is left, and that ingest can go on.
// FERRY_CRASH_RUNS sets the number of kills (default 50).
func TestIngestSurvivesSIGKILL(t *testing.T) {
	runs := 50
	if v, err := strconv.Atoi(os.Getenv("FERRY_CRASH_RUNS")); err == nil && v > 0 {
		runs = v
	}
	layoutDir, pubPath := crashLayout(t)
	stateDir := filepath.Join(t.TempDir(), "state")
	killed, finished, resets := 0, 0, 0
	for i := range runs {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), "FERRY_CRASH_CHILD="+stateDir+"|"+layoutDir+"|"+pubPath)
		out := new(bytes.Buffer)
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("run %d: child failed without being killed: %v\n%s", i, err, out)
			}
			finished++
		case <-time.After(time.Duration(mrand.IntN(400)) * time.Millisecond):
			cmd.Process.Signal(syscall.SIGKILL)
			<-done
			killed++
		}
		st, err := store.Open(stateDir, store.Options{SpaceMargin: 1, Keep: 3})
		if err != nil {
			t.Fatalf("run %d: store does not open after the kill: %v", i, err)
		}
		if err := st.Check(); err != nil {
			t.Fatalf("run %d: invariants broken after the kill: %v", i, err)
		}
		revs, err := st.Revisions("crash")
		if err != nil {
			t.Fatal(err)
		}
		rec, _ := st.GetBundle("crash")
		listed := map[string]bool{}
		for _, r := range revs {
			if r.Revision > rec.Newest || r.State != store.StateVerified {
				t.Fatalf("run %d: revision %d half-admitted (newest %d, state %s)", i, r.Revision, rec.Newest, r.State)
			}
			for _, b := range r.Blobs {
				listed[b.Digest.Encoded()] = true
			}
		}
		// What an interrupted copy wrote is collected (its pending record names it).
		files, _ := os.ReadDir(filepath.Join(stateDir, "blobs", "sha256"))
		if len(files) != len(listed) {
			t.Fatalf("run %d: %d blob files for %d listed blobs: a killed admission's copies were not collected", i, len(files), len(listed))
		}
		st.Close()
		if tmp, _ := os.ReadDir(filepath.Join(stateDir, "tmp")); len(tmp) != 0 {
			t.Fatalf("run %d: %d temp files left after recovery", i, len(tmp))
		}
		if rec.Newest == crashRevisions {
			// Everything admitted: start over so later kills land in copies again.
			os.RemoveAll(stateDir)
			resets++
		}
	}
	t.Logf("%d runs: %d killed mid-way, %d finished, %d full ingests", runs, killed, finished, resets)
	if killed == 0 {
		t.Fatal("no run was killed: the test exercised nothing")
	}
}
