package apply

import (
	"go/build"
	"slices"
	"testing"
)

// TestAppliesWithoutTheStore: the applier is stateless; what was applied before reaches it
// as data from package rollout, which alone reads and writes rollout state. Importing the
// store (or the verification records it keeps) here would bring that state back.
func TestAppliesWithoutTheStore(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, forbidden := range []string{"github.com/ferrygitops/ferry/store", "github.com/ferrygitops/ferry/verify", "github.com/ferrygitops/ferry/rollout"} {
		if slices.Contains(pkg.Imports, forbidden) {
			t.Errorf("package apply imports %s", forbidden)
		}
	}
	if len(pkg.Imports) == 0 {
		t.Fatal("no imports read: the test reads the wrong directory")
	}
}
