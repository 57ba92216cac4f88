package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content/memory"

	"github.com/ferrygitops/ferry/bundler"
	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/store"
)

const (
	configMaps  = 45
	deployments = 5
	release     = "bench" // the release name on both sides, each in its own namespace
	bundleName  = "bench"
)

// writeChart writes the benchmark chart under dir: 45 ConfigMaps of 10 keys and 5
// Deployments (pods that kwok makes Ready), one template file each, as real charts are laid
// out. Every object carries the value generation, so changing it touches all 50.
func writeChart(dir string) error {
	files := map[string]string{
		"Chart.yaml":  "apiVersion: v2\nname: bench\nversion: 1.0.0\ndescription: 45 ConfigMaps and 5 Deployments (Ferry's Helm benchmark)\n",
		"values.yaml": "generation: 0\nreplicas: 1\nimage: registry.local/app:1\n",
	}
	for i := range configMaps {
		var b strings.Builder
		fmt.Fprintf(&b, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm-%02d\n  labels:\n    app.kubernetes.io/instance: {{ .Release.Name }}\ndata:\n", i)
		for k := range 10 {
			fmt.Fprintf(&b, "  key%d: \"value %d of object %d, generation {{ .Values.generation }}\"\n", k, k, i)
		}
		files[fmt.Sprintf("templates/cm-%02d.yaml", i)] = b.String()
	}
	for i := range deployments {
		files[fmt.Sprintf("templates/app-%d.yaml", i)] = fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-app-%[1]d
  labels:
    app.kubernetes.io/instance: {{ .Release.Name }}
spec:
  replicas: {{ .Values.replicas }}
  selector:
    matchLabels: {app: {{ .Release.Name }}-app-%[1]d}
  template:
    metadata:
      labels: {app: {{ .Release.Name }}-app-%[1]d}
    spec:
      containers:
        - name: app
          image: {{ .Values.image }}
          env:
            - name: GENERATION
              value: {{ .Values.generation | quote }}
`, i)
	}
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// admitRevisions builds revisions 1 and 2 of bundle "bench" — one Helm component, the chart
// with generation 1, then 2 — and admits them into a new store in stateDir. The bundle is
// built here, not in the Ferry child, so that the child's memory is the node's alone.
func admitRevisions(ctx context.Context, work, stateDir, ns string) error {
	st, err := store.Open(stateDir, store.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	for gen := 1; gen <= 2; gen++ {
		tree := filepath.Join(work, fmt.Sprintf("tree%d", gen))
		if err := writeChart(filepath.Join(tree, "charts", "bench")); err != nil {
			return err
		}
		spec := fmt.Sprintf(`apiVersion: ferry.dev/v1
kind: Bundle
metadata: {name: %s}
spec:
  version: 1.0.%d
  components:
    - name: app
      helm:
        chart: ./charts/bench
        releaseName: %s
        targetNamespace: %s
        timeout: 5m
        install: {createNamespace: true}
        values: {generation: %d}
`, bundleName, gen, release, ns, gen)
		if err := os.WriteFile(filepath.Join(tree, "ferry.yaml"), []byte(spec), 0o644); err != nil {
			return err
		}
		mem := memory.New()
		res, err := bundler.Build(ctx, mem, bundler.Options{Dir: tree, AllowDirty: true, Revision: uint64(gen), Created: time.Unix(1764057600, 0).UTC()})
		if err != nil {
			return fmt.Errorf("build revision %d: %w", gen, err)
		}
		b, err := bundles.Open(ctx, mem, res.Descriptor)
		if err != nil {
			return err
		}
		if _, err := st.Admit(ctx, mem, store.Admission{Name: bundleName, Revision: uint64(gen), Version: b.Metadata.Version,
			Manifest: res.Descriptor, Blobs: append([]ocispec.Descriptor{b.Manifest.Config}, b.Manifest.Layers...)}); err != nil {
			return fmt.Errorf("admit revision %d: %w", gen, err)
		}
	}
	return nil
}
