package integration

import (
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/bundles/bundlestest"
)

// The registry and S3 backends keep the same contract as the layout and tar ones
// (bundles/conformance_test.go), on the testbed's distribution registry and S3 server.
func TestBackendConformance(t *testing.T) {
	var n atomic.Int64
	next := func(format string) func(t *testing.T) bundles.Address {
		return func(t *testing.T) bundles.Address {
			a, err := bundles.ParseAddress(fmt.Sprintf(format, n.Add(1)))
			if err != nil {
				t.Fatal(err)
			}
			return a
		}
	}
	t.Run("registry", func(t *testing.T) {
		bundlestest.Run(t, bundlestest.Backend{NewAddress: next("oci://" + tb.Registry + "/conformance/place-%d")})
	})
	t.Run("s3", func(t *testing.T) {
		o := s3Options()
		o.StagingDir = filepath.Join(t.TempDir(), "staging")
		bundlestest.Run(t, bundlestest.Backend{NewAddress: next("s3://" + tb.S3.Bucket + "/conformance/place-%d.tar"), Options: o})
	})
}
