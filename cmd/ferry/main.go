// Command ferry builds, signs and ships bundles in CI and runs the edge daemon that verifies and
// applies them. This package only parses flags and wires packages together; see docs/ARCHITECTURE.md.
package main

import (
	"errors"
	"fmt"
	"os"
)

func main() {
	err := newRootCommand().Execute()
	if err != nil && !errors.Is(err, errDiffers) { // a diff is its own message
		fmt.Fprintln(os.Stderr, "Error:", err)
	}
	os.Exit(exitCode(err))
}
