package decrypt

import (
	"bytes"
	"encoding/json"

	"github.com/getsops/sops/v3/cmd/sops/formats"
)

// formatFor chooses a file's format from its name with the sops CLI's own function, so a file
// decrypts here as `sops --decrypt NAME` would read it.
func formatFor(name string) formats.Format { return formats.FormatForPath(name) }

// IsEncrypted reports whether data carries SOPS metadata in the format its name implies:
// for ".yaml"/".yml" a top-level "sops" mapping with a "mac" key; for ".json" a top-level "sops"
// object with a "mac" member; for ".env" a "sops_mac=" line; for ".ini" a [sops] section with a
// mac key; for any other name sops's binary envelope, a JSON object with a "data" string and a
// "sops" object with a "mac" member.
//
// It looks at the layout sops writes, without parsing the whole file as sops would, and never
// fails: junk is simply not encrypted. A file it reports encrypted may still fail to decrypt.
func IsEncrypted(name string, data []byte) bool {
	switch formatFor(name) {
	case formats.Yaml:
		return yamlHasSops(data)
	case formats.Json:
		return jsonHasSops(data, false)
	case formats.Dotenv:
		return dotenvHasSops(data)
	case formats.Ini:
		return iniHasSops(data)
	default:
		return jsonHasSops(data, true)
	}
}

// lines calls f with each line of data, without its line ending, until f returns false.
func lines(data []byte, f func(line []byte) bool) {
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		if !f(bytes.TrimSuffix(line, []byte("\r"))) {
			return
		}
	}
}

// yamlHasSops looks for the block sops's YAML store writes: a line "sops:" at column 0, then
// indented lines of which one, at the indentation of the first, starts with "mac:". Comments
// and blank lines inside the block are skipped; the next line at column 0 ends it.
func yamlHasSops(data []byte) bool {
	const (
		outside = iota
		afterKey
		inBlock
	)
	state, indent, found := outside, 0, false
	lines(data, func(line []byte) bool {
		content := bytes.TrimLeft(line, " ")
		n := len(line) - len(content)
		if state != outside && (len(content) == 0 || content[0] == '#') {
			return true
		}
		if state != outside && n == 0 {
			state = outside // a new top-level key or document ends the block
		}
		switch state {
		case outside:
			if bytes.Equal(bytes.TrimRight(line, " \t"), []byte("sops:")) {
				state = afterKey
			}
		case afterKey:
			state, indent = inBlock, n
			fallthrough
		case inBlock:
			if n == indent && bytes.HasPrefix(content, []byte("mac:")) {
				found = true
				return false
			}
		}
		return true
	})
	return found
}

// jsonHasSops reports whether data is a JSON object with a "sops" object holding "mac", and,
// for the binary envelope, a "data" string.
func jsonHasSops(data []byte, binary bool) bool {
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return false // the common case for binary files: no JSON parse at all
	}
	var top map[string]json.RawMessage
	if json.Unmarshal(data, &top) != nil {
		return false
	}
	var md map[string]json.RawMessage
	if json.Unmarshal(top["sops"], &md) != nil || md == nil {
		return false
	}
	if _, ok := md["mac"]; !ok {
		return false
	}
	if binary {
		var s string
		if json.Unmarshal(top["data"], &s) != nil {
			return false
		}
	}
	return true
}

// dotenvHasSops looks for the "sops_mac=" line sops's dotenv store writes.
func dotenvHasSops(data []byte) bool {
	found := false
	lines(data, func(line []byte) bool {
		found = bytes.HasPrefix(line, []byte("sops_mac="))
		return !found
	})
	return found
}

// iniHasSops looks for a [sops] section with a mac key, as sops's INI store writes it.
func iniHasSops(data []byte) bool {
	inSops, found := false, false
	lines(data, func(line []byte) bool {
		line = bytes.TrimSpace(line)
		if bytes.HasPrefix(line, []byte("[")) {
			inSops = bytes.Equal(line, []byte("[sops]"))
			return true
		}
		if inSops {
			key, _, ok := bytes.Cut(line, []byte("="))
			if ok && bytes.Equal(bytes.TrimSpace(key), []byte("mac")) {
				found = true
				return false
			}
		}
		return true
	})
	return found
}
