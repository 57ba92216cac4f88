package main

import (
	"bytes"
	"encoding/json"
	"runtime"
	"strings"
	"testing"
)

func runFerry(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCommand()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func TestVersion(t *testing.T) {
	version, commit = "v1.2.3", "abc123"
	t.Cleanup(func() { version, commit = "dev", "" })

	out, err := runFerry(t, "version")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ferry v1.2.3", "commit: abc123", "go: " + runtime.Version()} {
		if !strings.Contains(out, want) {
			t.Errorf("text output %q lacks %q", out, want)
		}
	}

	out, err = runFerry(t, "version", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var bi buildInfo
	if err := json.Unmarshal([]byte(out), &bi); err != nil {
		t.Fatalf("json output %q: %v", out, err)
	}
	if bi.Version != "v1.2.3" || bi.Commit != "abc123" || bi.GoVersion != runtime.Version() {
		t.Errorf("json output %+v", bi)
	}
}

func TestVersionRefusesUnknownOutput(t *testing.T) {
	_, err := runFerry(t, "version", "-o", "xml")
	if err == nil || !strings.Contains(err.Error(), `--output "xml"`) {
		t.Fatalf("err = %v, want one naming --output", err)
	}
	if _, err := runFerry(t, "version", "extra"); err == nil {
		t.Fatal("version accepted an argument")
	}
}
