package systemd

import (
	_ "embed"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"unicode/utf8"
)

// unitFile is ferry.service as shipped. It is a plain unit, valid as it stands, rather than a
// template with a generated copy beside it: one file, nothing to regenerate, and kardianos is
// given Unit's output, in which nothing is left for a template engine to expand.
//
//go:embed ferry.service
var unitFile string

const (
	// Name is the unit's name without the ".service" suffix.
	Name = "ferry"

	// DefaultPath is the binary the shipped unit runs.
	DefaultPath = "/usr/local/bin/ferry"

	// DefaultConfig is the daemon config file the shipped unit names.
	DefaultConfig = "/etc/ferry/config.yaml"
)

// execStartLine matches the shipped unit's only ExecStart= line, the one line Unit replaces.
var execStartLine = regexp.MustCompile(`(?m)^ExecStart=.*$`)

// Arguments returns the daemon's command line after the binary: "daemon --config config".
func Arguments(config string) []string {
	return []string{"daemon", "--config", config}
}

// Unit returns ferry.service with its ExecStart= running path with args. Each word is quoted
// and escaped as systemd.service(5) "Command lines" requires, so any argument survives; words
// made only of safe characters stay bare, so Unit(DefaultPath, Arguments(DefaultConfig))
// returns the shipped file unchanged. path should be absolute, and systemd refuses one with
// quotes, backslashes or control characters in it (NewService checks).
func Unit(path string, args []string) string {
	var b strings.Builder
	b.WriteString("ExecStart=")
	b.WriteString(quote(path, true))
	for _, a := range args {
		b.WriteByte(' ')
		b.WriteString(quote(a, false))
	}
	return execStartLine.ReplaceAllLiteralString(unitFile, b.String())
}

// bare matches words that need neither quotes nor escapes on an ExecStart= line. It leaves
// out '%' (specifiers), '$' (environment variables), '\\', quotes, ';' (the old command
// separator) and whitespace.
var bare = regexp.MustCompile(`^[A-Za-z0-9/._,:=+@-]+$`)

// quote returns one ExecStart= word. A first word starting with one of the prefixes "-@:+!" is
// quoted too, which stops systemd reading the character as a prefix; an empty word is "".
func quote(w string, first bool) string {
	if bare.MatchString(w) && !(first && strings.ContainsAny(w[:1], "-@:+!")) {
		return w
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(w); {
		r, size := utf8.DecodeRuneInString(w[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, w[i])
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '%':
			b.WriteString("%%")
		case r == '$' && !first: // arguments have $VAR expanded, the executable does not
			b.WriteString("$$")
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			b.WriteRune(r)
		}
		i += size
	}
	b.WriteByte('"')
	return b.String()
}

// hidden lists the directories the unit's sandbox replaces or hides, with the directive that
// does it. ProtectHome=yes covers /home, /root and /run/user; PrivateTmp=yes gives the service
// its own empty /tmp and /var/tmp; PrivateDevices=yes its own minimal /dev.
var hidden = []struct{ dir, by string }{
	{"/home", "ProtectHome=yes"},
	{"/root", "ProtectHome=yes"},
	{"/run/user", "ProtectHome=yes"},
	{"/tmp", "PrivateTmp=yes"},
	{"/var/tmp", "PrivateTmp=yes"},
	{"/dev", "PrivateDevices=yes"},
}

// CheckVisible returns an error when path is not absolute or lies in a directory the unit hides
// from the daemon, naming the directive that hides it. It is lexical: a symlink out of a
// hidden directory is not followed.
func CheckVisible(path string) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("%s: not an absolute path", path)
	}
	clean := filepath.Clean(path)
	for _, h := range hidden {
		if clean == h.dir || strings.HasPrefix(clean, h.dir+"/") {
			return fmt.Errorf("%s is under %s, which the unit's %s hides from the daemon", path, h.dir, h.by)
		}
	}
	return nil
}
