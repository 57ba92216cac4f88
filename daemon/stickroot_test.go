package daemon

import (
	"strings"
	"testing"
)

func TestStickRoot(t *testing.T) {
	mountinfo := `22 1 8:1 / / rw - ext4 /dev/sda1 rw
45 22 8:17 / /media/alice/SITE\040STICK rw,nosuid - vfat /dev/sdb1 rw
46 22 8:33 / /media/usb0 rw - vfat /dev/sdc1 rw
47 22 8:49 / /mnt rw - vfat /dev/sdd1 rw
`
	mounts := mountPoints(strings.NewReader(mountinfo))
	if len(mounts) != 4 || mounts[1] != "/media/alice/SITE STICK" {
		t.Fatalf("mount points %q", mounts)
	}
	for _, c := range []struct{ root, path, want string }{
		{"/media", "/media/alice/SITE STICK/bundles/site.tar", "/media/alice/SITE STICK"}, // udisks: /media/USER/LABEL
		{"/media", "/media/usb0/site.tar", "/media/usb0"},                                 // /media/LABEL
		{"/media", "/media/usb0/deep/er/layout", "/media/usb0"},                           // a layout directory
		{"/mnt", "/mnt/site.tar", "/mnt"},                                                 // mounted at the watched path itself
		{"/srv/sticks", "/srv/sticks/alice/STICK/site.tar", "/srv/sticks/alice/STICK"},    // no mount: a directory stands for it
	} {
		if got := stickRootAmong(c.root, c.path, mounts); got != c.want {
			t.Errorf("stickRoot(%s, %s) = %s, want %s", c.root, c.path, got, c.want)
		}
	}
}
