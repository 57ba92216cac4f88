package bundles

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// LayoutFS is an OCI layout directory as data from a stranger (a USB stick): it opens
// regular files only, each path component opened without following a symlink
// (O_NOFOLLOW), the file opened non-blocking and checked with fstat before it is read, so a
// FIFO, a device, a socket, a symlink or a hard link (a file with another name elsewhere,
// /etc/shadow for one) is refused with an error naming it, and nothing ever blocks on
// opening it. It implements fs.FS for oras's oci.NewFromFS.
type LayoutFS struct{ root string }

// NewLayoutFS returns the layout directory root; root itself may be reached through symlinks
// (a mount point), nothing below it.
func NewLayoutFS(root string) LayoutFS { return LayoutFS{root: root} }

// ErrNotRegular is returned for an entry of a layout that is not a regular file or directory.
var ErrNotRegular = errors.New("not a regular file")

// Open implements fs.FS.
func (l LayoutFS) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	dir, err := unix.Open(l.root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: l.root, Err: err}
	}
	parts := strings.Split(name, "/")
	if name == "." {
		parts = nil
	}
	for i, p := range parts {
		last := i == len(parts)-1
		// Look before opening: a FIFO or a device is never opened at all.
		var st unix.Stat_t
		if err := unix.Fstatat(dir, p, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			unix.Close(dir)
			return nil, &fs.PathError{Op: "open", Path: name, Err: err}
		}
		mode := st.Mode & unix.S_IFMT
		switch {
		case mode == unix.S_IFLNK:
			unix.Close(dir)
			return nil, &fs.PathError{Op: "open", Path: name, Err: fmt.Errorf("%w: a symlink (a layout on a stick is data; symlinks are refused)", ErrUnsafePath)}
		case !last && mode != unix.S_IFDIR:
			unix.Close(dir)
			return nil, &fs.PathError{Op: "open", Path: name, Err: fmt.Errorf("%s is not a directory", strings.Join(parts[:i+1], "/"))}
		case last && mode != unix.S_IFREG && mode != unix.S_IFDIR:
			unix.Close(dir)
			return nil, &fs.PathError{Op: "open", Path: name, Err: fmt.Errorf("%w (%s)", ErrNotRegular, kindOf(mode))}
		case last && mode == unix.S_IFREG && st.Nlink > 1:
			unix.Close(dir)
			return nil, &fs.PathError{Op: "open", Path: name, Err: fmt.Errorf("%w: a hard link (%d names)", ErrUnsafePath, st.Nlink)}
		}
		flags := unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC
		if !last || mode == unix.S_IFDIR {
			flags |= unix.O_DIRECTORY
		}
		fd, err := unix.Openat(dir, p, flags, 0)
		unix.Close(dir)
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: name, Err: err}
		}
		dir = fd
	}
	// The entry may have been swapped between the look and the open: check what was opened.
	var st unix.Stat_t
	if err := unix.Fstat(dir, &st); err != nil {
		unix.Close(dir)
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	if m := st.Mode & unix.S_IFMT; m != unix.S_IFREG && m != unix.S_IFDIR {
		unix.Close(dir)
		return nil, &fs.PathError{Op: "open", Path: name, Err: fmt.Errorf("%w (%s)", ErrNotRegular, kindOf(m))}
	}
	// Reads of a regular file never block on O_NONBLOCK's account; clear it all the same.
	if flags, err := unix.FcntlInt(uintptr(dir), unix.F_GETFL, 0); err == nil {
		unix.FcntlInt(uintptr(dir), unix.F_SETFL, flags&^unix.O_NONBLOCK)
	}
	return os.NewFile(uintptr(dir), l.root+"/"+name), nil
}

func kindOf(mode uint32) string {
	switch mode {
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFCHR, unix.S_IFBLK:
		return "a device"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFDIR:
		return "a directory"
	}
	return fmt.Sprintf("file type %o", mode)
}

// OpenRegular opens path for reading only if it is a regular file, without following a
// symlink at its last component and without blocking on a FIFO (O_NONBLOCK, then fstat):
// for files a stranger's stick names, such as a bundle archive.
func OpenRegular(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ELOOP) {
		return nil, &fs.PathError{Op: "open", Path: path, Err: fmt.Errorf("%w: a symlink", ErrUnsafePath)}
	}
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	if m := st.Mode & unix.S_IFMT; m != unix.S_IFREG {
		unix.Close(fd)
		return nil, &fs.PathError{Op: "open", Path: path, Err: fmt.Errorf("%w (%s)", ErrNotRegular, kindOf(m))}
	}
	if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); err == nil {
		unix.FcntlInt(uintptr(fd), unix.F_SETFL, flags&^unix.O_NONBLOCK)
	}
	return os.NewFile(uintptr(fd), path), nil
}
