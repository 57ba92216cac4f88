package testbed

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"testing"
)

// Main starts a testbed for a test package, runs its tests and stops the testbed. Use it
// from TestMain:
//
//	var tb *testbed.Testbed
//
//	func TestMain(m *testing.M) { os.Exit(testbed.Main(m, testbed.Options{}, &tb)) }
//
// A testbed that cannot start fails the package with the reason (exit code 1); it never skips.
// After the tests, every service process must be gone, or the package fails.
func Main(m *testing.M, opts Options, tb **Testbed) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "testbed")
	}
	t, err := Start(ctx, opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: the testbed did not start, so no test of this package ran:\n%v\n", err)
		return 1
	}
	*tb = t
	code := m.Run()
	pids := t.PIDs()
	if err := t.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: testbed stop: %v\n", err)
		code = 1
	}
	for _, pid := range pids {
		if processAlive(pid) {
			fmt.Fprintf(os.Stderr, "FAIL: testbed process %d still running after Stop\n", pid)
			code = 1
		}
	}
	return code
}
