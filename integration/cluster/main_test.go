// Package cluster holds the end-to-end tests of the apply engine: real etcd, kube-apiserver,
// controller manager, scheduler and kwok nodes from the testbed; bundles built by the real
// bundler and kept in a real node store.
package cluster

import (
	"fmt"
	"os"
	"testing"

	"github.com/ferrygitops/ferry/integration/testbed"
)

var tb *testbed.Testbed

func TestMain(m *testing.M) {
	if kc := os.Getenv(helmChildEnv); kc != "" {
		// The child process of TestHelmPendingUpgradeIsRecovered: it is killed mid-upgrade.
		if err := helmChild(kc); err != nil {
			fmt.Fprintln(os.Stderr, "helm child:", err)
		}
		os.Exit(3)
	}
	os.Exit(testbed.Main(m, testbed.Options{Services: testbed.Kube}, &tb))
}
