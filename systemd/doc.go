// Package systemd owns how the Ferry daemon lives under systemd on an edge node: its unit file,
// installing and controlling that unit, and the sd_notify(3) messages the daemon sends.
//
//   - [Unit] renders ferry.service, the one unit file Ferry has. The file is embedded as it is
//     shipped to packagers; Unit only swaps its ExecStart= line for a given binary and
//     arguments, quoted for systemd. Invariant: Unit([DefaultPath], [Arguments]([DefaultConfig]))
//     is the shipped file byte for byte, so the packaged unit and the installed one cannot
//     drift (a test holds this, and that the file passes `systemd-analyze verify` and scores at
//     most 2.5 in `systemd-analyze security`).
//   - [Service] installs, removes, starts, stops and queries the unit through
//     github.com/kardianos/service, which is given the rendered unit as its SystemdScript
//     template. The rendered unit holds no template action ("{{"), so kardianos writes it
//     unchanged; a path that would put one there is refused. kardianos is imported here
//     and nowhere else.
//   - [Notifier] sends READY=1, STOPPING=1, STATUS= and the watchdog keep-alive that the
//     unit's Type=notify and WatchdogSec= expect, through github.com/coreos/go-systemd.
//
// Why not kardianos's own unit: its template (v1.2.x, and rewritten in v1.3.0) has Type=simple,
// no sd_notify, no watchdog and no sandboxing; ours is given instead, whole.
//
// The unit runs the daemon as root with an empty capability set inside a read-only view of the
// system (ProtectSystem=strict), writable only in /var/lib/ferry and /run/ferry, and in the USB
// source's default mount points /media, /run/media and /mnt for receipts (ReadWritePaths=).
// Root without capabilities still reads files it owns, such as the k3s kubeconfig and the age
// key, which is why DynamicUser= is not used. What the sandbox hides — home directories
// (ProtectHome=yes) and /tmp, /var/tmp (PrivateTmp=yes) — the daemon cannot see, so
// [Service.Install] refuses a binary or config file there ([CheckVisible]). The files the
// config names (trust policy, age key, CA, credentials) are not checked: this package does not
// read the config.
//
// This package does not run the daemon, parse its config, or decide what the watchdog proves:
// [Notifier.RunWatchdog] shows only that the process is alive and scheduled.
package systemd
