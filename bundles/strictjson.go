package bundles

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// maxJSONDepth bounds nesting in documents read from outside.
const maxJSONDepth = 32

// checkJSON refuses JSON that two parsers could read differently: duplicate keys in an
// object, also when they differ only in case (encoding/json keeps the last, others keep the
// first), invalid UTF-8, nesting deeper than maxJSONDepth, or anything after the first value. The digest covers these exact bytes, so
// what is checked must have one meaning.
func checkJSON(b []byte) error {
	if !utf8.Valid(b) {
		// encoding/json would silently replace invalid bytes with U+FFFD.
		return errors.New("not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := checkValue(dec, 0); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("data after the JSON value")
	}
	return nil
}

func checkValue(dec *json.Decoder, depth int) error {
	if depth > maxJSONDepth {
		return fmt.Errorf("nested deeper than %d", maxJSONDepth)
	}
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch tok {
	case json.Delim('{'):
		seen := map[string]bool{}
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return err
			}
			key, _ := k.(string)
			// encoding/json matches field names case-insensitively, so "critical" and
			// "Critical" land in one field: they are duplicates.
			folded := strings.ToLower(key)
			if seen[folded] {
				return fmt.Errorf("duplicate key %q", key)
			}
			seen[folded] = true
			if err := checkValue(dec, depth+1); err != nil {
				return err
			}
		}
		_, err := dec.Token() // '}'
		return err
	case json.Delim('['):
		for dec.More() {
			if err := checkValue(dec, depth+1); err != nil {
				return err
			}
		}
		_, err := dec.Token() // ']'
		return err
	}
	return nil
}
