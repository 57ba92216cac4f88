package main

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/ferrygitops/ferry/bundler"
	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/daemon"
	"github.com/ferrygitops/ferry/internal/strictyaml"
	"github.com/ferrygitops/ferry/receipt"
	"github.com/ferrygitops/ferry/verify"
)

// Exit codes, the same for every command. 0 and 1 follow `diff`, `kubectl diff` and `flux
// diff` (1: there are differences, more: something failed), so a CI job can gate on
// `ferry bundle diff`; the others let a script tell apart what it must handle differently.
// The table in README.md and in `ferry --help` (exitCodesHelp) lists the same.
const (
	exitOK          = 0
	exitDiffers     = 1 // ferry bundle diff, ferry diff: there are changes; ferry check: a check failed
	exitError       = 2 // any error not below
	exitBadInput    = 3 // usage, or a file the user wrote that is not valid
	exitUntrusted   = 4 // a bundle refused: unsigned, untrusted signatures, outside a key's scope; an unverified commit
	exitUnreachable = 5 // nothing answers on the daemon's socket
	exitSuspended   = 6 // the bundle is suspended, so the daemon does not act (ferry reconcile)
)

const exitCodesHelp = `Exit codes:
  0  success; ferry bundle diff, ferry diff: nothing would change
  1  ferry bundle diff: the bundles differ; ferry diff: the bundle would change objects on
     the node; ferry check: a check failed
  2  an error not listed below; ferry diff, ferry import --dry-run: the node would refuse
     the bundle (an older revision) or its rollout would fail (the API server refuses an
     object in a dry run)
  3  bad input: an unknown command or flag, wrong arguments, an invalid flag value, or an
     invalid file (ferry.yaml, the daemon's config, a trust policy, a key, a keyring)
  4  a bundle refused as untrusted: not signed, not signed by enough trusted keys, or
     signed outside the keys' scope (ferry bundle verify, ferry import); a node receipt
     not signed by a trusted node key (--receipt, ferry receipts); a commit or tag without
     the signature ferry bundle build --verify-commit asks for
  5  the daemon is not reachable: nothing answers on its socket (node commands)
  6  the bundle is suspended, so nothing was done (ferry reconcile; ferry resume first)`

// errDiffers is what `ferry bundle diff` returns when there are changes: exit code 1, and
// no error message (the diff is the output).
var errDiffers = errors.New("the bundles differ")

// exitCode maps the error a command returned to the process's exit code.
func exitCode(err error) int {
	var (
		in *inputError
		fe *bundles.FieldError
		ye *strictyaml.Error
	)
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errDiffers):
		return exitDiffers
	case errors.Is(err, verify.ErrUntrusted), errors.Is(err, receipt.ErrUnknownKey), errors.Is(err, bundler.ErrUnverifiedCommit):
		return exitUntrusted
	case errors.Is(err, daemon.ErrUnreachable):
		return exitUnreachable
	case errors.Is(err, daemon.ErrSuspended):
		return exitSuspended
	case errors.As(err, &in), errors.As(err, &fe), errors.As(err, &ye), errors.Is(err, bundler.ErrBadKeyring):
		return exitBadInput
	case errors.Is(err, errChecksFailed):
		return exitDiffers
	}
	return exitError
}

// inputError marks an error as the user's input being wrong (exit code 3): a flag, an
// argument, a file they wrote.
type inputError struct{ err error }

func (e *inputError) Error() string { return e.err.Error() }
func (e *inputError) Unwrap() error { return e.err }

// badInput marks err, if not nil, as bad input.
func badInput(err error) error {
	if err == nil {
		return nil
	}
	return &inputError{err}
}

// markUsageErrors makes cobra's own refusals (an unknown flag, a wrong number of
// arguments, an unknown subcommand) bad input, for c and every command below it.
func markUsageErrors(c *cobra.Command) {
	c.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return badInput(err) })
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			walk(sub)
		}
		if args := c.Args; args != nil {
			c.Args = func(cmd *cobra.Command, a []string) error { return badInput(args(cmd, a)) }
		}
	}
	walk(c)
}
