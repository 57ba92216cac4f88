package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrygitops/ferry/bundler/bundlertest"
	"github.com/spf13/cobra"
)

// asMainEnv makes the test binary run main() with the arguments it holds (one a line), so a
// test sees the exit code and stderr a script would.
const asMainEnv = "FERRY_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if args, ok := os.LookupEnv(asMainEnv); ok {
		os.Args = append([]string{"ferry"}, strings.Split(args, "\n")...)
		main()
	}
	os.Exit(m.Run())
}

// runMain runs ferry as a process and returns its exit code and stderr.
func runMain(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), asMainEnv+"="+strings.Join(args, "\n"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), stderr.String()
}

// TestExitCodes holds each documented exit code to a case that produces it, through the
// same mapping main uses. Codes 4 and 6 and a node's refusals are in TestBundleCLIEndToEnd
// and TestNodeCommands.
func TestExitCodes(t *testing.T) {
	badSpec := bundlertest.WriteTree(t, map[string]string{
		"ferry.yaml": "apiVersion: ferry.dev/v1\nkind: Bundle\nmetadata: {name: x}\nspec:\n  version: 1.0.0\n  components:\n" +
			"    - name: web\n      kustomize: {path: ./web, prnue: true}\n",
		"web/kustomization.yaml": "resources: []\n",
	})
	badConfig := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(badConfig, []byte("retension: 3\n"), 0o600)
	nowhere := filepath.Join(t.TempDir(), "ferry.sock")
	for _, tc := range []struct {
		name string
		args []string
		want int
	}{
		{"success", []string{"version"}, exitOK},
		{"help of a command group", []string{"bundle"}, exitOK},
		{"unknown subcommand", []string{"bundle", "biuld"}, exitBadInput},
		{"unknown top-level command", []string{"stauts"}, exitBadInput},
		{"unknown flag", []string{"version", "--bogus"}, exitBadInput},
		{"unknown flag of a subcommand", []string{"bundle", "diff", "a", "b", "--bogus"}, exitBadInput},
		{"too many arguments", []string{"version", "extra"}, exitBadInput},
		{"too few arguments", []string{"bundle", "diff", "a"}, exitBadInput},
		{"invalid --output", []string{"version", "-o", "xml"}, exitBadInput},
		{"invalid --var", []string{"render", "dist/x", "--var", "NOVALUE"}, exitBadInput},
		{"invalid rollback revision", []string{"rollback", "site", "latest"}, exitBadInput},
		{"invalid ferry.yaml", []string{"bundle", "build", badSpec, "--allow-dirty"}, exitBadInput},
		{"invalid daemon config", []string{"daemon", "--check-config", "--config", badConfig}, exitBadInput},
		{"ferry check of a config that does not load", []string{"check", "--config", badConfig}, exitBadInput},
		{"a bundle that does not exist", []string{"bundle", "inspect", filepath.Join(t.TempDir(), "none")}, exitError},
		{"daemon not running", []string{"status", "--socket", nowhere}, exitUnreachable},
		{"daemon not running, import", []string{"import", "/srv/x.tar", "--socket", nowhere}, exitUnreachable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runFerry(t, tc.args...)
			if got := exitCode(err); got != tc.want {
				t.Fatalf("ferry %s: exit %d (%v), want %d\n%s", strings.Join(tc.args, " "), got, err, tc.want, out)
			}
		})
	}
}

// TestMainExits runs the binary: the code reaches the process, an error is printed to
// stderr, and a diff's changes are not printed as an error.
func TestMainExits(t *testing.T) {
	dir := gitTree(t)
	a := filepath.Join(t.TempDir(), "a")
	if _, err := runFerry(t, "bundle", "build", dir, "--to", a); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "web", "cm.yaml"), []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: web}\ndata: {greeting: bonjour}\n"), 0o644)
	b := filepath.Join(t.TempDir(), "b")
	if _, err := runFerry(t, "bundle", "build", dir, "--to", b, "--allow-dirty"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args       []string
		want       int
		wantStderr string
	}{
		{[]string{"bundle", "diff", a, a}, exitOK, ""},
		{[]string{"bundle", "diff", a, b}, exitDiffers, ""},
		{[]string{"bundle", "biuld"}, exitBadInput, "Error: unknown command \"biuld\""},
		{[]string{"status", "--socket", filepath.Join(t.TempDir(), "ferry.sock")}, exitUnreachable, "Error: ferry daemon not reachable"},
	} {
		code, stderr := runMain(t, tc.args...)
		if code != tc.want || (tc.wantStderr == "") != (stderr == "") || !strings.Contains(stderr, tc.wantStderr) {
			t.Errorf("ferry %s: exit %d, stderr %q; want exit %d, stderr %q", strings.Join(tc.args, " "), code, stderr, tc.want, tc.wantStderr)
		}
	}
}

// TestHelpListsExitCodes: the codes are documented where a script's author looks.
func TestHelpListsExitCodes(t *testing.T) {
	out, err := runFerry(t, "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Exit codes:", "1  ferry bundle diff: the bundles differ", "3  bad input", "4  a bundle refused as untrusted", "5  the daemon is not reachable", "6  the bundle is suspended"} {
		if !strings.Contains(out, want) {
			t.Errorf("ferry --help lacks %q:\n%s", want, out)
		}
	}
	out, err = runFerry(t, "bundle", "diff", "--help")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "0 when the\nbundles render the same objects, 1 when they differ") {
		t.Errorf("ferry bundle diff --help does not give its exit codes:\n%s", out)
	}
}

// A misspelt field of ferry.yaml is bad input (3), as the field errors after decoding are.
func TestMisspeltFerryYAMLIsBadInput(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "ferry.yaml"), []byte("apiVersion: ferry.dev/v1\nkind: Bundle\nmetadata: {name: x}\nspec:\n  version: 1.0.0\n  components:\n    - name: app\n      kustomise: {path: .}\n"), 0o644)
	_, err := runFerry(t, "bundle", "build", dir, "--allow-dirty", "--to", filepath.Join(t.TempDir(), "out"))
	if exitCode(err) != exitBadInput || err == nil || !strings.Contains(err.Error(), "ferry.yaml:8: spec.components[0].kustomise: unknown field (did you mean kustomize?)") {
		t.Fatalf("exit %d, err %v", exitCode(err), err)
	}
}

// TestEveryCommandThatPrintsHasOutput: each command that prints data takes -o json|yaml.
// The exceptions print no data: a process (daemon), a file meant for a tool (a shell's
// completion, a systemd unit), or a one-line confirmation of a systemctl action.
func TestEveryCommandThatPrintsHasOutput(t *testing.T) {
	exempt := map[string]bool{
		"ferry daemon": true, "ferry help": true, "ferry service unit": true,
		"ferry service install": true, "ferry service uninstall": true, "ferry service start": true, "ferry service stop": true,
	}
	root := newRootCommand()
	root.InitDefaultCompletionCmd()
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			walk(sub)
		}
		path := c.CommandPath()
		if !c.Runnable() || c.HasSubCommands() || c.Hidden || exempt[path] || strings.HasPrefix(path, "ferry completion") {
			return
		}
		if c.Flags().Lookup("output") == nil {
			t.Errorf("%s has no -o/--output", path)
		}
	}
	walk(root)
	t.Setenv("COSIGN_PASSWORD", "")
	out, err := runFerry(t, "keys", "generate", "--prefix", filepath.Join(t.TempDir(), "k"), "-o", "json")
	var keys map[string]string
	if err != nil || json.Unmarshal([]byte(out), &keys) != nil || !strings.HasSuffix(keys["publicKey"], "k.pub") {
		t.Errorf("ferry keys generate -o json: %v\n%s", err, out)
	}
}
