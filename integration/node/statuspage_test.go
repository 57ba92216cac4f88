package node

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/png"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrygitops/ferry/daemon"
	"github.com/ferrygitops/ferry/store"
)

// The phone the page is made for, in CSS pixels (a common Android size).
const phoneWidth, phoneHeight = 412, 915

// TestStatusPage: a healthy revision, then one that never becomes Ready and is rolled back;
// the status page, as real headless Chromium renders it at a phone's size, says so in words
// with the history, the events and the error, and the screenshot is a picture, not a blank.
// FERRY_UPDATE_SCREENSHOT=1 copies the screenshot to docs/status-page.png.
func TestStatusPage(t *testing.T) {
	browser, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is not installed (%v): run integration/testbed/tools/packages.sh as root", err)
	}
	s := newSite(t, "pumps")
	s.timeout = "2m" // revision 1 becomes healthy however loaded the machine is
	media := filepath.Join(s.dir, "media")
	stick := filepath.Join(media, "usb0")
	os.MkdirAll(stick, 0o755)
	s.metrics = freeAddr(t)
	s.writeConfig(t, fmt.Sprintf("  - name: usb\n    usb: {paths: [%s], interval: 300ms}\n", media))
	c := s.start(t)

	s.ship(t, 1, false, filepath.Join(stick, "pumps-1.tar"))
	s.waitStatus(t, c, "revision 1 healthy", 3*time.Minute, func(b daemon.BundleStatus) bool {
		return b.Revision == 1 && b.State == store.StateHealthy && b.Applying == 0
	})
	s.timeout = "10s" // revision 2 fails sooner
	s.ship(t, 2, true, filepath.Join(stick, "pumps-2.tar"))
	s.waitStatus(t, c, "revision 2 rolled back", 2*time.Minute, func(b daemon.BundleStatus) bool {
		return b.Newest == 2 && b.Revision == 1 && b.Applying == 0 && b.LastError != ""
	})

	url := "http://" + s.metrics + "/"
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Fatalf("GET /: %s, Content-Security-Policy %q", resp.Status, resp.Header.Get("Content-Security-Policy"))
	}

	dom := chromium(t, browser, "--dump-dom", url)
	for _, want := range []string{
		"<h1>Ferry on ",
		"<h2>pumps</h2>",
		">Failed — rolled back to revision 1<",
		"Revision 2 did not become healthy",
		`<dd class="running">revision 1, version 1.0.1</dd>`,
		"<strong>Last error</strong>",
		">Rolled back<", ">Received and verified<", ">Healthy<",
		"This node does not serve images.",
		"just now",
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("the rendered page lacks %q", want)
		}
	}
	if n := strings.Count(dom, `<tr class="revision">`); n != 2 {
		t.Errorf("history shows %d revisions, want 2", n)
	}
	if n := strings.Count(dom, `<li class="event">`); n < 5 {
		t.Errorf("the page lists %d events, want at least 5 (admitted, applying, healthy ×2, failed, rolled back)", n)
	}
	for _, bad := range []string{"<no value>", "template:", "%!", "<script"} {
		if strings.Contains(dom, bad) {
			t.Errorf("the rendered page holds %q", bad)
		}
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", dom)
	}

	shot := filepath.Join(t.TempDir(), "status.png")
	chromium(t, browser, "--screenshot="+shot, "--hide-scrollbars", url)
	b, err := os.ReadFile(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	size := img.Bounds().Size()
	if size.X%phoneWidth != 0 || size.Y%phoneHeight != 0 || size.X/phoneWidth != size.Y/phoneHeight {
		t.Errorf("screenshot is %v, want %dx%d (or a whole multiple)", size, phoneWidth, phoneHeight)
	}
	if n := colours(img); n < 16 {
		t.Errorf("screenshot has %d colours: a blank page?", n)
	}
	if os.Getenv("FERRY_UPDATE_SCREENSHOT") == "1" {
		if err := os.WriteFile(filepath.Join("..", "..", "docs", "status-page.png"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// chromium runs headless Chromium at a phone's size on url, with args, and returns its
// standard output.
func chromium(t *testing.T, browser string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	args = append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--user-data-dir=" + t.TempDir(), fmt.Sprintf("--window-size=%d,%d", phoneWidth, phoneHeight)}, args...)
	cmd := exec.CommandContext(ctx, browser, args...)
	var out, errs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errs
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir()) // Chromium writes its caches there
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %s: %v\n%s", strings.Join(args, " "), err, tail(errs.Bytes(), 4000))
	}
	return out.String()
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// colours counts the distinct colours of img, up to 1000.
func colours(img image.Image) int {
	seen := map[[4]uint32]bool{}
	r := img.Bounds()
	for y := r.Min.Y; y < r.Max.Y && len(seen) < 1000; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			cr, cg, cb, ca := img.At(x, y).RGBA()
			seen[[4]uint32{cr, cg, cb, ca}] = true
		}
	}
	return len(seen)
}
