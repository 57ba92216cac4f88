// Package node holds the end-to-end tests of `ferry daemon`: each source (the testbed's
// registry, a USB directory, the testbed's S3 server), the API socket, a SIGKILL in the middle
// of an apply, and bad bundles on a stick, against the testbed's real control plane.
package node

import (
	"os"
	"testing"

	"github.com/ferrygitops/ferry/integration/testbed"
)

var tb *testbed.Testbed

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild())
	}
	os.Exit(testbed.Main(m, testbed.Options{}, &tb))
}
