package bundles

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
)

// Progress reports a long transfer on one terminal line: bytes done of the total, the rate
// and the time left, redrawn at most five times a second from byte counts as they stream.
type Progress struct {
	mu    sync.Mutex
	w     io.Writer
	label string
	total int64
	done  int64
	start time.Time
	last  time.Time
	now   func() time.Time
}

// NewProgress starts a progress line on w for total bytes; w nil reports nothing (a nil
// *Progress is valid and silent).
func NewProgress(w io.Writer, label string, total int64) *Progress {
	if w == nil {
		return nil
	}
	p := &Progress{w: w, label: label, total: total, now: time.Now}
	p.start = p.now()
	return p
}

// SetTotal sets the total once it is known.
func (p *Progress) SetTotal(total int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.total = total
}

// Snapshot returns the bytes done and the total, for a progress reported elsewhere (the
// daemon's import, drawn by the CLI).
func (p *Progress) Snapshot() (done, total int64) {
	if p == nil {
		return 0, 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done, p.total
}

// Add counts n more bytes done.
func (p *Progress) Add(n int64) {
	if p == nil || n == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += n
	if now := p.now(); now.Sub(p.last) >= 200*time.Millisecond {
		p.last = now
		p.draw(now)
	}
}

// Finish draws the final line and ends it.
func (p *Progress) Finish() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.draw(p.now())
	fmt.Fprintln(p.w)
}

func (p *Progress) draw(now time.Time) {
	done := min(p.done, p.total)
	elapsed := now.Sub(p.start).Seconds()
	line := fmt.Sprintf("%s: %s / %s", p.label, bytesIEC(done), bytesIEC(p.total))
	if p.total > 0 {
		line += fmt.Sprintf(" (%d%%)", done*100/p.total)
	}
	if elapsed > 0.2 && done > 0 {
		rate := float64(done) / elapsed
		line += fmt.Sprintf(", %s/s", bytesIEC(int64(rate)))
		if left := p.total - done; left > 0 {
			line += fmt.Sprintf(", %s left", time.Duration(float64(left)/rate*float64(time.Second)).Round(time.Second))
		}
	}
	// \r and a clear to the end of the line: a shorter line leaves nothing of the last.
	fmt.Fprintf(p.w, "\r%s\x1b[K", line)
}

func bytesIEC(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// Counted returns s with every byte read from its blobs counted in p (s itself when p is nil).
func Counted(s content.ReadOnlyStorage, p *Progress) content.ReadOnlyStorage {
	if p == nil {
		return s
	}
	return countingStorage{s, p}
}

type countingStorage struct {
	content.ReadOnlyStorage
	p *Progress
}

func (c countingStorage) Fetch(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	rc, err := c.ReadOnlyStorage.Fetch(ctx, d)
	if err != nil {
		return nil, err
	}
	return countingReader{rc, c.p}, nil
}

type countingReader struct {
	io.ReadCloser
	p *Progress
}

func (r countingReader) Read(b []byte) (int, error) {
	n, err := r.ReadCloser.Read(b)
	r.p.Add(int64(n))
	return n, err
}

// TransferSize is what reading or copying the bundle desc and its images moves: every blob of
// their graphs (signatures, a few KiB, are left out).
func TransferSize(ctx context.Context, src content.Fetcher, desc ocispec.Descriptor, images []Image) int64 {
	var total int64
	seen := map[string]bool{}
	for _, root := range append([]ocispec.Descriptor{desc}, imageRoots(images)...) {
		graph, err := ImageBlobs(ctx, src, root)
		if err != nil {
			continue // the copy itself reports it
		}
		for _, d := range graph {
			if !seen[d.Digest.String()] {
				seen[d.Digest.String()] = true
				total += d.Size
			}
		}
	}
	return total
}

func imageRoots(images []Image) []ocispec.Descriptor {
	out := make([]ocispec.Descriptor, len(images))
	for i, im := range images {
		out[i] = im.Descriptor
	}
	return out
}
