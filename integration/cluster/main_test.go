// Package cluster holds the end-to-end tests of the apply engine: real etcd, kube-apiserver,
// controller manager, scheduler and kwok nodes from the testbed; bundles built by the real
// bundler and kept in a real node store.
package cluster

import (
	"os"
	"testing"

	"github.com/ferrygitops/ferry/integration/testbed"
)

var tb *testbed.Testbed

func TestMain(m *testing.M) {
	os.Exit(testbed.Main(m, testbed.Options{Services: testbed.Kube}, &tb))
}
