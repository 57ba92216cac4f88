package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrygitops/ferry/bundler/bundlertest"
)

func gitTree(t *testing.T) string {
	t.Helper()
	dir, _ := bundlertest.GitTree(t, map[string]string{
		"ferry.yaml":             "apiVersion: ferry.dev/v1\nkind: Bundle\nmetadata: {name: demo}\nspec:\n  version: 0.2.0\n  components:\n  - name: web\n    kustomize: {path: ./web}\n",
		"web/kustomization.yaml": "resources: [cm.yaml]\n",
		"web/cm.yaml":            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\ndata: {greeting: hello}\n",
		".gitignore":             "dist/\n",
	}, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	return dir
}

// TestBundleCLIEndToEnd drives the commands a CI job and a technician use: keys generate,
// build, sign, export, verify; then the refusals a node must make.
func TestBundleCLIEndToEnd(t *testing.T) {
	t.Setenv("COSIGN_PASSWORD", "ci-secret")
	dir := gitTree(t)
	keys := t.TempDir()
	if _, err := runFerry(t, "keys", "generate", "--prefix", filepath.Join(keys, "ci")); err != nil {
		t.Fatal(err)
	}
	if _, err := runFerry(t, "keys", "generate", "--prefix", filepath.Join(keys, "ci")); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("keys generate overwrote a key: %v", err)
	}
	if _, err := runFerry(t, "keys", "generate", "--prefix", filepath.Join(keys, "stranger")); err != nil {
		t.Fatal(err)
	}
	layout := filepath.Join(dir, "dist", "demo")
	out, err := runFerry(t, "bundle", "build", dir, "--to", layout)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "demo 0.2.0 (revision 1)") {
		t.Fatalf("build output %q", out)
	}
	// The kustomize component carries its build output; --rendered=false leaves it out.
	for _, tc := range []struct {
		flags []string
		want  bool
	}{{nil, true}, {[]string{"--rendered=false"}, false}} {
		at := filepath.Join(t.TempDir(), "layout")
		if _, err := runFerry(t, append([]string{"bundle", "build", dir, "--to", at}, tc.flags...)...); err != nil {
			t.Fatal(err)
		}
		js, err := runFerry(t, "bundle", "inspect", at, "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Components []struct {
				Digest   string
				Rendered *struct{ Digest string }
			}
		}
		if err := json.Unmarshal([]byte(js), &got); err != nil || len(got.Components) != 1 {
			t.Fatalf("inspect -o json: %v\n%s", err, js)
		}
		if r := got.Components[0].Rendered; (r != nil) != tc.want || (r != nil && (r.Digest == "" || r.Digest == got.Components[0].Digest)) {
			t.Fatalf("build %v: rendered layer %+v, want one: %v", tc.flags, r, tc.want)
		}
	}
	stick := filepath.Join(t.TempDir(), "demo.tar")
	if _, err := runFerry(t, "bundle", "export", layout, stick); err != nil {
		t.Fatal(err)
	}
	if _, err := runFerry(t, "bundle", "verify", stick, "--key", filepath.Join(keys, "ci.pub")); err == nil || !strings.Contains(err.Error(), "not signed") || exitCode(err) != exitUntrusted {
		t.Fatalf("unsigned bundle: exit %d, err = %v", exitCode(err), err)
	}
	if _, err := runFerry(t, "bundle", "sign", stick, "--key", filepath.Join(keys, "ci.key")); err == nil || !strings.Contains(err.Error(), "cannot be changed in place") {
		t.Fatalf("signing a tar in place: err = %v", err)
	}
	if _, err := runFerry(t, "bundle", "sign", layout, "--key", filepath.Join(keys, "ci.key")); err != nil {
		t.Fatal(err)
	}
	if _, err := runFerry(t, "bundle", "export", layout, stick); err != nil {
		t.Fatal(err)
	}
	out, err = runFerry(t, "bundle", "verify", stick, "--key", filepath.Join(keys, "ci.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "Verified demo 0.2.0") {
		t.Fatalf("verify output %q", out)
	}
	if _, err := runFerry(t, "bundle", "verify", stick, "--key", filepath.Join(keys, "stranger.pub")); err == nil || !strings.Contains(err.Error(), "untrusted") || exitCode(err) != exitUntrusted {
		t.Fatalf("wrong key: exit %d, err = %v", exitCode(err), err)
	}
	if _, err := runFerry(t, "bundle", "verify", stick); err == nil || !strings.Contains(err.Error(), "--key or --policy is required") || exitCode(err) != exitBadInput {
		t.Fatalf("no key: exit %d, err = %v", exitCode(err), err)
	}
	policy := filepath.Join(keys, "policy.yaml")
	os.WriteFile(policy, []byte("apiVersion: ferry.dev/v1\nkind: TrustPolicy\nkeys:\n  - name: ci\n    path: ci.pub\n"), 0o644)
	if out, err := runFerry(t, "bundle", "verify", stick, "--policy", policy); err != nil || !strings.Contains(out, "(ci)") {
		t.Fatalf("verify with the node's policy: %v\n%s", err, out)
	}

	// A stick whose component layer or rendered layer was altered after signing fails,
	// naming the component.
	for k := 0; ; k++ {
		tampered := filepath.Join(t.TempDir(), "tampered.tar")
		if !flipLayerByte(t, stick, tampered, k) {
			if k != 2 {
				t.Fatalf("%d gzip layers in the stick, want the component's and its rendered one", k)
			}
			break
		}
		if _, err := runFerry(t, "bundle", "verify", tampered, "--key", filepath.Join(keys, "ci.pub")); err == nil || !strings.Contains(err.Error(), "component web") {
			t.Fatalf("tampered layer %d: err = %v", k, err)
		}
	}
}

// flipLayerByte copies a bundle tar, changing one byte of its k-th gzip blob (a component or
// rendered layer) while keeping sizes, as a corrupted or tampered stick would; false when the
// tar has no k-th gzip blob.
func flipLayerByte(t *testing.T, from, to string, k int) bool {
	t.Helper()
	in, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	type ent struct {
		hdr  *tar.Header
		data []byte
	}
	var ents []ent
	tr := tar.NewReader(bytes.NewReader(in))
	var layers []int
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		ents = append(ents, ent{h, b})
		if strings.HasPrefix(h.Name, "blobs/") && bytes.HasPrefix(b, []byte{0x1f, 0x8b}) {
			layers = append(layers, len(ents)-1) // a gzip layer: component or rendered
		}
	}
	if k >= len(layers) {
		return false
	}
	layer := layers[k]
	ents[layer].data[len(ents[layer].data)/2] ^= 0xff
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	for _, e := range ents {
		tw.WriteHeader(e.hdr)
		tw.Write(e.data)
	}
	tw.Close()
	if err := os.WriteFile(to, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return true
}

func TestExportIsReproducible(t *testing.T) {
	t.Setenv("COSIGN_PASSWORD", "")
	dir := gitTree(t)
	keys := t.TempDir()
	if _, err := runFerry(t, "keys", "generate", "--prefix", filepath.Join(keys, "k")); err != nil {
		t.Fatal(err)
	}
	layout := filepath.Join(dir, "dist", "demo")
	if _, err := runFerry(t, "bundle", "build", dir, "--to", layout); err != nil {
		t.Fatal(err)
	}
	if _, err := runFerry(t, "bundle", "sign", layout, "--key", filepath.Join(keys, "k.key")); err != nil {
		t.Fatal(err)
	}
	var exports [][]byte
	for i := range 3 {
		p := filepath.Join(t.TempDir(), fmt.Sprintf("e%d.tar", i))
		if _, err := runFerry(t, "bundle", "export", layout, p); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o644 {
			t.Fatalf("export mode %v, want 0644", fi.Mode().Perm())
		}
		exports = append(exports, b)
	}
	if !bytes.Equal(exports[0], exports[1]) || !bytes.Equal(exports[1], exports[2]) {
		t.Fatal("exporting one signed bundle three times gave different tar files")
	}
}

func TestBundleDiff(t *testing.T) {
	dir := gitTree(t)
	a := filepath.Join(t.TempDir(), "a")
	if _, err := runFerry(t, "bundle", "build", dir, "--to", a); err != nil {
		t.Fatal(err)
	}
	if out, err := runFerry(t, "bundle", "diff", a, a); exitCode(err) != exitOK || !strings.Contains(out, "no changes") {
		t.Fatalf("a bundle against itself: exit %d (%v)\n%s", exitCode(err), err, out)
	}
	os.WriteFile(filepath.Join(dir, "web", "cm.yaml"), []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\ndata: {greeting: bonjour}\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "web", "secret.yaml"), []byte("apiVersion: v1\nkind: Secret\nmetadata: {name: db}\nstringData: {password: hunter2}\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "web", "kustomization.yaml"), []byte("resources: [cm.yaml, secret.yaml]\n"), 0o644)
	b := filepath.Join(t.TempDir(), "b")
	if _, err := runFerry(t, "bundle", "build", dir, "--to", b, "--allow-dirty"); err != nil {
		t.Fatal(err)
	}
	// Changes exit 1, as diff, kubectl diff and flux diff do, so that CI can gate on them.
	out, err := runFerry(t, "bundle", "diff", a, b)
	if code := exitCode(err); code != exitDiffers {
		t.Fatalf("two different bundles: exit %d (%v), want %d", code, err, exitDiffers)
	}
	if out, err := runFerry(t, "bundle", "diff", a, b, "-o", "json"); exitCode(err) != exitDiffers || !strings.Contains(out, `"changed"`) {
		t.Fatalf("-o json of two different bundles: exit %d (%v)\n%s", exitCode(err), err, out)
	}
	if _, err := runFerry(t, "bundle", "diff", a, filepath.Join(t.TempDir(), "missing")); exitCode(err) <= exitDiffers {
		t.Fatalf("a diff that cannot be made: exit %d (%v), want more than 1", exitCode(err), err)
	}
	for _, want := range []string{"changed ConfigMap web", "added Secret db", "+  greeting: bonjour", "<hidden "} {
		if !strings.Contains(out, want) {
			t.Errorf("diff lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "hunter2") {
		t.Fatalf("diff shows a secret:\n%s", out)
	}
}

// TestRender prints what a node applies: substituted with --var, secrets masked, one
// component on request; an unknown component is an error naming it.
func TestRender(t *testing.T) {
	dir := bundlertest.WriteTree(t, map[string]string{
		"ferry.yaml": "apiVersion: ferry.dev/v1\nkind: Bundle\nmetadata: {name: r}\nspec:\n  version: 1.0.0\n  components:\n" +
			"    - name: web\n      kustomize: {path: ./web, targetNamespace: web, postBuild: {substitute: {A: from-bundle}}}\n" +
			"    - name: other\n      kustomize: {path: ./other}\n",
		"web/cm.yaml":   "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\ndata: {a: \"${A}\", site: \"${SITE}\"}\n",
		"web/s.yaml":    "apiVersion: v1\nkind: Secret\nmetadata: {name: db}\nstringData: {password: hunter2}\n",
		"other/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other, namespace: x}\n",
	})
	out := filepath.Join(t.TempDir(), "b")
	t.Setenv("SOURCE_DATE_EPOCH", "1764057600")
	if _, err := runFerry(t, "bundle", "build", dir, "--allow-dirty", "--revision", "1", "--to", out); err != nil {
		t.Fatal(err)
	}
	got, err := runFerry(t, "render", out, "--component", "web", "--var", "SITE=north-7")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"a: from-bundle", "site: north-7", "namespace: web", "<hidden "} {
		if !strings.Contains(got, want) {
			t.Errorf("render lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "hunter2") || strings.Contains(got, "name: other") {
		t.Fatalf("render shows a secret or another component:\n%s", got)
	}
	if _, err := runFerry(t, "render", out, "--component", "nope"); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Fatalf("unknown component: %v", err)
	}
}

// TestRenderSubstitutesHelmValues: the node replaces ${VAR} naming a node variable in a Helm
// component's values before it installs the release, so render with --var shows the same;
// a ${VAR} that is not a node variable stays as written, on the node and here.
func TestRenderSubstitutesHelmValues(t *testing.T) {
	dir := bundlertest.WriteTree(t, map[string]string{
		"ferry.yaml": "apiVersion: ferry.dev/v1\nkind: Bundle\nmetadata: {name: h}\nspec:\n  version: 1.0.0\n  components:\n" +
			"    - name: status\n      helm:\n        chart: ./charts/status\n        targetNamespace: web\n" +
			"        values: {message: \"served from ${SITE_ID}\", script: \"echo ${HOME}\"}\n",
		"charts/status/Chart.yaml":  "apiVersion: v2\nname: status\nversion: 0.1.0\n",
		"charts/status/values.yaml": "message: none\nscript: none\n",
		"charts/status/templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: {{ .Release.Name }}-page}\n" +
			"data:\n  message: {{ .Values.message | quote }}\n  script: {{ .Values.script | quote }}\n",
	})
	out := filepath.Join(t.TempDir(), "b")
	t.Setenv("SOURCE_DATE_EPOCH", "1764057600")
	if _, err := runFerry(t, "bundle", "build", dir, "--allow-dirty", "--revision", "1", "--to", out); err != nil {
		t.Fatal(err)
	}
	got, err := runFerry(t, "render", out, "--var", "SITE_ID=north-7")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"message: served from north-7", "script: echo ${HOME}", "name: web-status-page"} {
		if !strings.Contains(got, want) {
			t.Errorf("render lacks %q:\n%s", want, got)
		}
	}
	// A diff compares what bundles carry: variables are the node's, not substituted.
	if got, err := runFerry(t, "bundle", "diff", out, out); err != nil || !strings.Contains(got, "no changes") {
		t.Fatalf("diff of a Helm bundle against itself: %v\n%s", err, got)
	}
}
