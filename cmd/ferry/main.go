// Command ferry builds, signs and ships bundles in CI and runs the edge daemon that verifies and
// applies them. This package only parses flags and wires packages together; see docs/ARCHITECTURE.md.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}
