package bundles_test

import (
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/bundles/bundlestest"
)

// The layout and tar backends keep the contract; the registry and S3 ones are held to it
// on the testbed (integration/backends_test.go).
func TestBackendConformance(t *testing.T) {
	for _, kind := range []string{"layout", "tar"} {
		t.Run(kind, func(t *testing.T) {
			dir := t.TempDir()
			var n atomic.Int64
			bundlestest.Run(t, bundlestest.Backend{
				NewAddress: func(t *testing.T) bundles.Address {
					p := filepath.Join(dir, fmt.Sprintf("place-%d", n.Add(1)))
					if kind == "tar" {
						p += ".tar"
					}
					a, err := bundles.ParseAddress(p)
					if err != nil {
						t.Fatal(err)
					}
					return a
				},
				Options: bundles.Options{StagingDir: filepath.Join(dir, "staging")},
			})
		})
	}
}
