package main

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// Set at link time by the Makefile: -X main.version=... -X main.commit=...
var (
	version = "dev"
	commit  = ""
)

// buildInfo is what `ferry version` reports.
type buildInfo struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

func currentBuildInfo() buildInfo {
	bi := buildInfo{
		Version:   version,
		Commit:    commit,
		GoVersion: runtime.Version(),
		Platform:  runtime.GOOS + "/" + runtime.GOARCH,
	}
	// A `go install` without the Makefile's ldflags still knows its VCS revision when built
	// from a checkout with -buildvcs; use it rather than reporting nothing.
	if bi.Commit == "" {
		bi.Commit = buildSetting("vcs.revision")
	}
	if bi.Commit == "" {
		bi.Commit = "unknown"
	}
	return bi
}

func newVersionCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit and Go version of this binary",
		Example: `  ferry version
  ferry version -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return writeVersion(cmd.OutOrStdout(), output, currentBuildInfo())
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text|json")
	return cmd
}

func writeVersion(w io.Writer, format string, bi buildInfo) error {
	switch format {
	case "text", "":
		_, err := fmt.Fprintf(w, "ferry %s\ncommit: %s\ngo: %s\nplatform: %s\n",
			bi.Version, bi.Commit, bi.GoVersion, bi.Platform)
		return err
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(bi)
	default:
		return badInput(fmt.Errorf("--output %q: must be text or json", format))
	}
}

// buildSetting is the value of a setting the Go build recorded (vcs.revision, vcs.time), ""
// when it recorded none.
func buildSetting(key string) string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == key {
				return s.Value
			}
		}
	}
	return ""
}
