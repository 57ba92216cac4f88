package daemon

import (
	"bufio"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// stickRoot is the root of the stick the file or layout at path is on, for a watched
// directory root (/media): the deepest mount point below root that holds path, as
// /proc/self/mountinfo lists them (udisks mounts a stick at /media/USER/LABEL, older setups
// at /media/LABEL, both are found). When no mount point lies below root (the stick is
// mounted at root itself, or a directory stands for it), it is the directory holding path.
func stickRoot(root, path string) string {
	var mounts []string
	if f, err := os.Open("/proc/self/mountinfo"); err == nil {
		mounts = mountPoints(io.LimitReader(f, 4<<20))
		f.Close()
	}
	return stickRootAmong(root, path, mounts)
}

// stickRootAmong is stickRoot with the mount points given.
func stickRootAmong(root, path string, mounts []string) string {
	root, path = filepath.Clean(root), filepath.Clean(path)
	best := ""
	for _, mp := range mounts {
		if mp != root && within(root, mp) && within(mp, path) && mp != path && len(mp) > len(best) {
			best = mp
		}
	}
	if best != "" {
		return best
	}
	return filepath.Dir(path)
}

// within reports whether p is dir or below it.
func within(dir, p string) bool {
	return p == dir || strings.HasPrefix(p, dir+string(filepath.Separator))
}

// mountPoints reads the mount points of a mountinfo file (the fifth field, octal escapes
// undone).
func mountPoints(r io.Reader) []string {
	var out []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 64<<10)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		out = append(out, unescapeMount(fields[4]))
	}
	return out
}

// unescapeMount undoes the kernel's \ooo escapes of space, tab, newline and backslash.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
