package store

import (
	"os"
	"syscall"
)

// crashHook is called at each crash point: a place between two writes that belong to one
// change, where a crash must leave a state the next Open (and the daemon's next start)
// finishes correctly. Tests set it to stop there; in a process started with FERRY_CRASH_AT
// set to a point's name, reaching that point kills the process (SIGKILL), for tests that
// crash a real daemon. Otherwise it is nil and costs nothing.
var crashHook func(point string)

func init() {
	if at := os.Getenv("FERRY_CRASH_AT"); at != "" {
		crashHook = func(point string) {
			if point == at {
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
			}
		}
	}
}

func crashPoint(point string) {
	if crashHook != nil {
		crashHook(point)
	}
}
