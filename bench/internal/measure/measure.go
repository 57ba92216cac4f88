// Package measure holds what the benchmark programs measure with: medians, a process's peak
// resident memory, and a count of the requests a client sends.
package measure

import (
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
)

// Median returns the median of f over xs (the upper one of an even count).
func Median[T any](xs []T, f func(T) float64) float64 {
	v := make([]float64, len(xs))
	for i, x := range xs {
		v[i] = f(x)
	}
	slices.Sort(v)
	return v[len(v)/2]
}

// VmHWM returns VmHWM from a /proc/<pid>/status file, in KiB (0 if unreadable or gone).
func VmHWM(status string) int64 {
	b, err := os.ReadFile(status)
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kib int64
			fmt.Sscanf(strings.TrimSpace(rest), "%d", &kib)
			return kib
		}
	}
	return 0
}

// PeakRSS is this process's own VmHWM: a child's getrusage maxrss starts from its parent's
// at exec, so it would report the bench's memory, not the client's.
func PeakRSS() int64 { return VmHWM("/proc/self/status") }

// Counter counts the requests of a client (reads are GET and HEAD) and logs each as
// "METHOD path". Set rest.Config.WrapTransport to its Wrap.
type Counter struct {
	mu            sync.Mutex
	reads, writes int
	log           []string
}

// Wrap counts every request rt sends.
func (c *Counter) Wrap(rt http.RoundTripper) http.RoundTripper {
	return rtFunc(func(r *http.Request) (*http.Response, error) {
		c.mu.Lock()
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			c.reads++
		} else {
			c.writes++
		}
		c.log = append(c.log, r.Method+" "+r.URL.Path)
		c.mu.Unlock()
		return rt.RoundTrip(r)
	})
}

// Take returns the counts and log since the last Take and starts again.
func (c *Counter) Take() (reads, writes int, log []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	reads, writes, log = c.reads, c.writes, c.log
	c.reads, c.writes, c.log = 0, 0, nil
	return
}

type rtFunc func(*http.Request) (*http.Response, error)

func (f rtFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
