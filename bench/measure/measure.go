// Package measure holds what the benchmark programs (bench/…) and the packages' benchmarks
// measure with: medians, a process's peak resident memory, a child run with its peak, and a
// count of the requests a client sends.
package measure

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"
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

// ResetPeakRSS sets this process's VmHWM back to its resident memory now (Linux's
// /proc/PID/clear_refs, value 5), after returning the heap it no longer uses to the system:
// a child's setup (objects generated, bundles built as CI would) is then not counted in the
// peak of what it measures next.
func ResetPeakRSS() error {
	runtime.GC()
	debug.FreeOSMemory()
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
}

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

// Run runs cmd to its end and returns its wall time and its peak RSS in KiB, read from VmHWM
// in /proc every 5ms while it runs (a child's getrusage maxrss starts from its parent's at
// exec, so it would report the caller's memory). cmd's output is returned if it set none.
func Run(cmd *exec.Cmd) (took time.Duration, peakKiB int64, out string, err error) {
	var buf strings.Builder
	if cmd.Stdout == nil && cmd.Stderr == nil {
		cmd.Stdout, cmd.Stderr = &buf, &buf
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, 0, "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	status := fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			return time.Since(start), peakKiB, buf.String(), err
		case <-tick.C:
			peakKiB = max(peakKiB, VmHWM(status))
		}
	}
}

// LoadAvg is the 1, 5 and 15 minute load averages, for a report's machine line.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

// CPUModel is the CPU's model name, for a report's machine line.
func CPUModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}
