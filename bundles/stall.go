package bundles

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// A read(2) on a failing USB device can block in the kernel for ever, and nothing in Go
// interrupts it: not a context, not closing the file. So every call on a stick (an open, a
// stat, a directory listing, a read) runs on a goroutine of its own and is waited for with a
// deadline; a call that misses it is abandoned, never cancelled. What such a goroutine holds is
// its own buffer and the file, nothing of its caller's, so it may return whenever it likes, or
// never.

// DefaultStallTimeout is how long one call on a local layout or archive (an open, a stat, a
// listing, a read of up to a MiB) may go unanswered before it fails with ErrStalled. A
// healthy stick answers in milliseconds, a slow one in well under a second; a minute leaves
// room for a device the kernel is resetting.
const DefaultStallTimeout = 60 * time.Second

// ErrStalled is what a call on a device that stopped answering fails with (errors.Is); the
// error is a *StallError naming the file.
var ErrStalled = errors.New("stopped answering")

// StallError is a call on a file or directory that did not answer within its deadline, or
// that was not made because an earlier call on that path (or a directory above it) is still
// stuck.
type StallError struct {
	Op, Path string
	// Timeout is the deadline that was missed; 0 when the call was not made (Stuck).
	Timeout time.Duration
	// Stuck is the path whose earlier call has not returned, when this call was not made.
	Stuck string
	done  <-chan struct{}
}

func (e *StallError) Error() string {
	if e.Stuck != "" {
		return fmt.Sprintf("%s %s: %v: a call on %s has not returned (a failing USB stick or device?)", e.Op, e.Path, ErrStalled, e.Stuck)
	}
	return fmt.Sprintf("%s %s: %v: no answer in %s (a failing USB stick or device?)", e.Op, e.Path, ErrStalled, e.Timeout)
}

// Is makes errors.Is(err, ErrStalled) hold.
func (e *StallError) Is(target error) bool { return target == ErrStalled }

// Done is closed once the call that stalled returned at last: the device answered, failed, or
// was pulled. Until then that call holds the file, and calling again would most likely stall
// as well.
func (e *StallError) Done() <-chan struct{} { return e.done }

func stallTimeout(d time.Duration) time.Duration {
	if d <= 0 {
		return DefaultStallTimeout
	}
	return d
}

// Guard runs calls on a device that may stop answering (a USB stick), each with a deadline.
// It remembers the path of a call it abandoned until that call returns: later calls on that
// path or below it fail at once with a *StallError, so a scan every few seconds of a stick
// that hangs leaves one goroutine behind, not one per scan. Safe for concurrent use.
type Guard struct {
	timeout time.Duration
	mu      sync.Mutex
	stuck   map[string]*stuckCalls
}

// stuckCalls are the abandoned calls on one path that have not returned.
type stuckCalls struct {
	n    int
	done <-chan struct{} // the first one's
}

// NewGuard returns a guard whose calls each have timeout to answer (0 means
// DefaultStallTimeout).
func NewGuard(timeout time.Duration) *Guard {
	return &Guard{timeout: stallTimeout(timeout), stuck: map[string]*stuckCalls{}}
}

// Timeout is the deadline of each call.
func (g *Guard) Timeout() time.Duration { return g.timeout }

// Do runs fn, a call of kind op ("open", "readdir", …) on path, and returns its error, or a
// *StallError when fn does not return within the deadline, or ctx's error (with the path)
// when ctx is done first. In both of the last cases fn goes on alone: it must touch nothing
// its caller reads after Do returned.
func (g *Guard) Do(ctx context.Context, op, path string, fn func() error) error {
	return g.do(ctx, op, path, fn, nil)
}

// do is Do with lateFn, which the abandoned call runs on its own goroutine if it returns after
// all (to close a file it opened that nobody will use).
func (g *Guard) do(ctx context.Context, op, path string, fn func() error, lateFn func()) error {
	path = filepath.Clean(path)
	if err := g.stuckOn(op, path); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s %s: %w", op, path, err)
	}
	var (
		done      = make(chan struct{})
		abandoned bool // under g.mu
		err       error
	)
	go func() {
		e := fn()
		g.mu.Lock()
		err = e
		late := abandoned && lateFn != nil
		if c := g.stuck[path]; abandoned && c != nil {
			if c.n--; c.n == 0 {
				delete(g.stuck, path)
			}
		}
		close(done)
		g.mu.Unlock()
		if late {
			lateFn()
		}
	}()
	t := time.NewTimer(g.timeout)
	defer t.Stop()
	var why error
	select {
	case <-done:
		return err
	case <-t.C:
		why = &StallError{Op: op, Path: path, Timeout: g.timeout, done: done}
	case <-ctx.Done():
		why = fmt.Errorf("%s %s: %w", op, path, ctx.Err())
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-done: // it answered as the deadline passed
		return err
	default:
	}
	abandoned = true
	if c := g.stuck[path]; c != nil {
		c.n++
	} else {
		g.stuck[path] = &stuckCalls{n: 1, done: done}
	}
	return why
}

// stuckOn refuses a call on path while an abandoned call on it, or on a directory above it,
// has not returned.
func (g *Guard) stuckOn(op, path string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	for p, c := range g.stuck {
		if path == p || strings.HasPrefix(path, strings.TrimSuffix(p, string(filepath.Separator))+string(filepath.Separator)) {
			return &StallError{Op: op, Path: path, Stuck: p, done: c.done}
		}
	}
	return nil
}

// ReadDir lists up to n entries of dir (all when n <= 0), sorted by name, following a symlink
// at dir as os.ReadDir does. Info of an entry is not guarded: use Lstat.
func (g *Guard) ReadDir(ctx context.Context, dir string, n int) ([]fs.DirEntry, error) {
	var out []fs.DirEntry
	err := g.Do(ctx, "readdir", dir, func() error {
		f, err := os.Open(dir)
		if err != nil {
			return err
		}
		defer f.Close()
		es, err := f.ReadDir(n)
		if errors.Is(err, io.EOF) { // an empty directory, with n > 0
			err = nil
		}
		slices.SortFunc(es, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
		out = es
		return err
	})
	if err != nil {
		return nil, err // out may still be written by the abandoned call
	}
	return out, nil
}

// Lstat is os.Lstat with the guard's deadline.
func (g *Guard) Lstat(ctx context.Context, path string) (fs.FileInfo, error) {
	var fi fs.FileInfo
	err := g.Do(ctx, "lstat", path, func() error {
		var err error
		fi, err = os.Lstat(path)
		return err
	})
	if err != nil {
		return nil, err
	}
	return fi, nil
}

// openFile opens a file with open and reads its size, with the guard's deadline; a file that
// is opened after its caller gave up is closed.
func (g *Guard) openFile(ctx context.Context, path string, open func() (*os.File, error)) (*os.File, fs.FileInfo, error) {
	var (
		f  *os.File
		fi fs.FileInfo
	)
	err := g.do(ctx, "open", path, func() error {
		var err error
		if f, err = open(); err != nil {
			return err
		}
		if fi, err = f.Stat(); err != nil {
			f.Close()
			f = nil
			return err
		}
		return nil
	}, func() {
		if f != nil {
			f.Close()
		}
	})
	if err != nil {
		return nil, nil, err
	}
	return f, fi, nil
}

// Reads ramp up from minStallChunk to maxStallChunk as a reader goes on sequentially, as the
// kernel's readahead does: a tar header costs a small read, a blob of hundreds of MiB one
// hand-off between goroutines per MiB.
const (
	minStallChunk = 64 << 10
	maxStallChunk = 1 << 20
)

// stallReader reads the bytes [off, end) of ra, each read with a deadline. One goroutine
// makes the reads (started at the first, reused for every other), always into the reader's
// own buffer, and the caller copies out of it: a read that is abandoned writes nothing the
// caller still holds. After a stall or a cancellation every call fails with that error.
// Not safe for concurrent use, as readers are not.
type stallReader struct {
	name    string
	timeout time.Duration
	// An io.Reader's Read takes no context: the one the reader was opened under is kept.
	ctx            context.Context
	ra             io.ReaderAt
	base, off, end int64 // the section, and where the next read starts

	buf, pending []byte // pending: read but not yet returned, a tail of buf
	chunk        int    // size of the next read
	err          error  // the last read's error, returned once pending is drained
	dead         error  // stalled, cancelled or closed: for good

	req    chan stallRequest // nil until the first read; closed to stop the goroutine
	res    chan stallResult
	exited chan struct{} // closed when the goroutine returned
	timer  *time.Timer
}

type stallRequest struct {
	buf []byte
	off int64
}

type stallResult struct {
	n   int
	err error
}

// newStallReader reads n bytes of ra from off; name is the file, for errors.
func newStallReader(ctx context.Context, name string, ra io.ReaderAt, off, n int64, timeout time.Duration) *stallReader {
	return &stallReader{name: name, timeout: stallTimeout(timeout), ctx: ctx, ra: ra, base: off, off: off, end: off + n, chunk: minStallChunk}
}

// Read implements io.Reader.
func (s *stallReader) Read(p []byte) (int, error) {
	if len(s.pending) == 0 {
		if s.dead != nil {
			return 0, s.dead
		}
		if s.err != nil {
			return 0, s.err
		}
		if len(p) == 0 {
			return 0, nil
		}
		s.fill()
		if len(s.pending) == 0 {
			if s.dead != nil {
				return 0, s.dead
			}
			return 0, s.err
		}
	}
	n := copy(p, s.pending)
	s.pending = s.pending[n:]
	return n, nil
}

// fill makes one read into the buffer.
func (s *stallReader) fill() {
	if s.off >= s.end {
		s.err = io.EOF
		return
	}
	if err := s.ctx.Err(); err != nil {
		s.dead = fmt.Errorf("read %s: %w", s.name, err)
		s.stop()
		return
	}
	want := int(min(int64(s.chunk), s.end-s.off))
	if s.req == nil {
		// Large enough for every later read: reads are at most maxStallChunk, and never past end.
		s.buf = make([]byte, min(int64(maxStallChunk), s.end-s.off))
		s.req, s.res, s.exited = make(chan stallRequest, 1), make(chan stallResult, 1), make(chan struct{})
		go readLoop(s.ra, s.req, s.res, s.exited)
		s.timer = time.NewTimer(s.timeout)
	} else {
		s.timer.Reset(s.timeout)
	}
	if want > len(s.buf) { // a seek back to before where the buffer was sized
		s.buf = make([]byte, want)
	}
	s.req <- stallRequest{s.buf[:want], s.off}
	select {
	case r := <-s.res:
		s.timer.Stop()
		s.took(r, want)
	case <-s.timer.C:
		select {
		case r := <-s.res: // it answered as the deadline passed
			s.took(r, want)
		default:
			s.abandon(&StallError{Op: "read", Path: s.name, Timeout: s.timeout, done: s.exited})
		}
	case <-s.ctx.Done():
		s.abandon(fmt.Errorf("read %s: %w", s.name, s.ctx.Err()))
	}
}

// took takes the result of a read of want bytes.
func (s *stallReader) took(r stallResult, want int) {
	s.pending = s.buf[:r.n]
	s.off += int64(r.n)
	s.chunk = min(s.chunk*2, maxStallChunk)
	switch {
	case r.n == want:
		// ReadAt may say io.EOF with a full read at the very end.
	case r.err == nil || errors.Is(r.err, io.EOF):
		s.err = fmt.Errorf("read %s: %w (the file is shorter than it said)", s.name, io.ErrUnexpectedEOF)
	default:
		s.err = r.err
	}
}

// abandon gives up on the read in flight: the goroutine returns after it, whenever that is,
// into its own buffer, which is never looked at again.
func (s *stallReader) abandon(err error) {
	s.dead = err
	s.buf, s.pending = nil, nil
	s.stop()
}

// stop lets the goroutine return once it is idle.
func (s *stallReader) stop() {
	if s.req != nil {
		close(s.req)
		s.req = nil
		s.timer.Stop()
	}
}

func readLoop(ra io.ReaderAt, req <-chan stallRequest, res chan<- stallResult, exited chan<- struct{}) {
	defer close(exited)
	for q := range req {
		n, err := ra.ReadAt(q.buf, q.off)
		res <- stallResult{n, err} // buffered: an abandoned read's result is dropped with the channel
	}
}

// Seek implements io.Seeker over the section, without a call on the file: archive/tar skips
// the blobs of an archive it checks this way.
func (s *stallReader) Seek(offset int64, whence int) (int64, error) {
	if s.dead != nil {
		return 0, s.dead
	}
	cur := s.off - int64(len(s.pending))
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = s.base + offset
	case io.SeekCurrent:
		abs = cur + offset
	case io.SeekEnd:
		abs = s.end + offset
	default:
		return 0, fmt.Errorf("seek %s: invalid whence %d", s.name, whence)
	}
	if abs < s.base {
		return 0, fmt.Errorf("seek %s: negative position", s.name)
	}
	if abs >= cur && abs <= s.off {
		s.pending = s.pending[abs-cur:]
	} else {
		s.pending, s.off, s.chunk = nil, abs, minStallChunk
	}
	s.err = nil
	return abs - s.base, nil
}

// Close stops the goroutine (after the read in flight, if one is stuck); it never waits.
func (s *stallReader) Close() error {
	if s.dead == nil {
		s.dead = fmt.Errorf("read %s: %w", s.name, fs.ErrClosed)
	}
	s.buf, s.pending = nil, nil
	s.stop()
	return nil
}

// stallFile is an fs.File whose reads have a deadline.
type stallFile struct {
	*stallReader
	info  fs.FileInfo
	close func() error // the file, for a layout's; nil for an archive entry
}

func (f *stallFile) Stat() (fs.FileInfo, error) { return f.info, nil }

// Close never waits on a read in flight: closing the *os.File only drops this reference,
// and the descriptor is closed when a stuck read returns.
func (f *stallFile) Close() error {
	f.stallReader.Close()
	if f.close != nil {
		return f.close()
	}
	return nil
}
