// Package integration holds Ferry's end-to-end tests. They run against the testbed's real
// registry, S3 server and control plane, and call the real cosign, oras and sops CLIs.
package integration

import (
	"os"
	"testing"

	"github.com/ferrygitops/ferry/integration/testbed"
)

var tb *testbed.Testbed

func TestMain(m *testing.M) {
	os.Exit(testbed.Main(m, testbed.Options{Services: testbed.Registry | testbed.S3}, &tb))
}
