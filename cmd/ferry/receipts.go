package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"

	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/daemon"
	"github.com/ferrygitops/ferry/receipt"
	"github.com/ferrygitops/ferry/verify"
)

// loadNodeKeys reads the node public keys headquarters trusts: each path a PEM file or a
// directory of *.pub files.
func loadNodeKeys(paths []string) ([]verify.Key, error) {
	var keys []verify.Key
	for _, p := range paths {
		files := []string{p}
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			files, _ = filepath.Glob(filepath.Join(p, "*.pub"))
			if len(files) == 0 {
				return nil, fmt.Errorf("--node-keys %s: no *.pub file in it", p)
			}
		}
		for _, f := range files {
			k, err := verify.LoadPublicKey(f)
			if err != nil {
				return nil, fmt.Errorf("--node-keys: %w", err)
			}
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("--node-keys: name the public keys of the nodes whose receipts you trust (node.pub from each node's state directory)")
	}
	return keys, nil
}

// readReceipt reads the receipt at loc (a file, or s3://bucket/key) and its signature beside
// it (.sig), and verifies it against keys.
func readReceipt(ctx context.Context, o bundles.Options, loc string, keys []verify.Key) (*receipt.Receipt, error) {
	read := func(p string, limit int64) ([]byte, error) {
		if rest, ok := strings.CutPrefix(p, "s3://"); ok {
			bucket, key, _ := strings.Cut(rest, "/")
			return o.GetS3(ctx, bucket, key, limit)
		}
		return bundles.ReadFileLimited(p, limit)
	}
	file, err := read(loc, receipt.MaxBytes)
	if err != nil {
		return nil, err
	}
	sig, err := read(loc+".sig", receipt.MaxSignatureBytes)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: no signature beside it (%s.sig)", loc, loc)
	}
	if err != nil {
		return nil, err
	}
	return receipt.Parse(loc, file, sig, keys)
}

// receiptFlags are the flags of a thin copy: the node's receipt and the keys it may be
// signed by.
type receiptFlags struct {
	receipt  string
	nodeKeys []string
}

func (f *receiptFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.receipt, "receipt", "", "a node's receipt (FILE or s3://bucket/key, its .sig beside it): leave out the blobs that node holds (a thin copy)")
	cmd.Flags().StringSliceVar(&f.nodeKeys, "node-keys", nil, "with --receipt: the node public keys to trust, files or directories of *.pub (repeatable)")
}

// omit returns what a thin copy leaves out: nil without --receipt.
func (f *receiptFlags) omit(ctx context.Context, o bundles.Options, dst bundles.Address) (func(digest.Digest) bool, error) {
	if f.receipt == "" {
		if len(f.nodeKeys) > 0 {
			return nil, badInput(errors.New("--node-keys is for --receipt"))
		}
		return nil, nil
	}
	if dst.Kind == bundles.KindRegistry {
		return nil, badInput(fmt.Errorf("%s: a thin copy is for a node (a tar, layout or S3 destination), not a registry", dst))
	}
	keys, err := loadNodeKeys(f.nodeKeys)
	if err != nil {
		return nil, badInput(err)
	}
	r, err := readReceipt(ctx, o, f.receipt, keys)
	if err != nil {
		return nil, err
	}
	return r.Has, nil
}

func newReceiptCommand() *cobra.Command {
	var (
		n   nodeClient
		out string
	)
	cmd := &cobra.Command{
		Use:   "receipt",
		Short: "Write this node's signed receipt (what it holds and runs) to a directory",
		Long: `Receipt asks the daemon for the node's receipt: every bundle with its revisions, what
runs and whether it is healthy, and the digest of every blob the node holds, signed with the
node's key. It writes NODE.receipt.json and NODE.receipt.json.sig to --out. Carried back to
headquarters, it feeds ferry receipts and thin exports (ferry bundle export --receipt).
The daemon also writes it by itself to sticks (usb receiptDir) and S3 (s3 receiptPrefix).`,
		Example: `  ferry receipt --out /media/usb0/receipts`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var sr daemon.SignedReceipt
			if err := n.do(cmd, http.MethodGet, "/v1/receipt", nil, &sr); err != nil {
				return err
			}
			if err := receipt.ValidNode(strings.TrimSuffix(sr.Name, receipt.Suffix)); err != nil || !strings.HasSuffix(sr.Name, receipt.Suffix) {
				return fmt.Errorf("the daemon named its receipt %q", sr.Name)
			}
			if err := os.MkdirAll(out, 0o755); err != nil {
				return err
			}
			path := filepath.Join(out, sr.Name)
			if err := os.WriteFile(path+".sig", []byte(sr.Signature), 0o644); err != nil {
				return err
			}
			if err := os.WriteFile(path, []byte(sr.File), 0o644); err != nil {
				return err
			}
			res := map[string]string{"receipt": path, "signature": path + ".sig"}
			return n.p.print(cmd.OutOrStdout(), res, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "receipt written to %s (signature %s.sig)\n", path, path)
			})
		},
	}
	cmd.Flags().StringVar(&out, "out", ".", "directory to write the receipt and its signature to")
	n.flags(cmd)
	return cmd
}

// siteReceipt is one receipt as ferry receipts reports it.
type siteReceipt struct {
	From    string `json:"from"`
	Receipt *receipt.Receipt
	Error   string `json:"error,omitempty"`
}

func newReceiptsCommand() *cobra.Command {
	var (
		o        bundles.Options
		p        printer
		nodeKeys []string
	)
	cmd := &cobra.Command{
		Use:   "receipts DIR|s3://bucket/prefix...",
		Short: "Show which site runs which revision, from the receipts nodes sent back",
		Long: `Receipts reads every NODE.receipt.json (and its .sig) in the directories and S3
prefixes given, checks each signature against the node keys you trust, and prints what each
node holds and runs and whether it is healthy. A receipt that is not signed by a trusted node
key, or is damaged, is listed as refused and makes the command fail (exit 4 for an unknown
key).`,
		Example: `  ferry receipts /media/usb0/receipts --node-keys hq/node-keys/
  ferry receipts s3://bundles/receipts --node-keys hq/node-keys/ -o json`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := p.validate(); err != nil {
				return err
			}
			keys, err := loadNodeKeys(nodeKeys)
			if err != nil {
				return badInput(err)
			}
			var locs []string
			for _, a := range args {
				found, err := receiptFiles(cmd.Context(), o, a)
				if err != nil {
					return err
				}
				locs = append(locs, found...)
			}
			var (
				out     []siteReceipt
				refused int
				first   error
			)
			for _, l := range locs {
				r, err := readReceipt(cmd.Context(), o, l, keys)
				s := siteReceipt{From: l, Receipt: r}
				if err != nil {
					s.Error, refused = err.Error(), refused+1
					first = cmp.Or(first, err)
				}
				out = append(out, s)
			}
			if err := p.print(cmd.OutOrStdout(), out, func(w *tabwriter.Writer) { printReceipts(w, out) }); err != nil {
				return err
			}
			if refused > 0 {
				return fmt.Errorf("%d of %d receipts refused, the first: %w", refused, len(out), first)
			}
			return nil
		},
	}
	addSourceFlags(cmd.Flags(), &o)
	cmd.Flags().StringSliceVar(&nodeKeys, "node-keys", nil, "the node public keys to trust, files or directories of *.pub (repeatable)")
	cmd.Flags().StringVarP(&p.format, "output", "o", "table", "output format: table|json|yaml")
	return cmd
}

// receiptFiles lists the receipts in a directory or under an S3 prefix; a file is itself.
func receiptFiles(ctx context.Context, o bundles.Options, loc string) ([]string, error) {
	if rest, ok := strings.CutPrefix(loc, "s3://"); ok {
		bucket, prefix, _ := strings.Cut(rest, "/")
		objs, err := o.ListS3Objects(ctx, bucket, prefix, receipt.Suffix)
		if err != nil {
			return nil, err
		}
		var out []string
		for _, obj := range objs {
			out = append(out, "s3://"+bucket+"/"+obj.Key)
		}
		sort.Strings(out)
		return out, nil
	}
	fi, err := os.Stat(loc)
	if err != nil {
		return nil, badInput(err)
	}
	if !fi.IsDir() {
		return []string{loc}, nil
	}
	out, err := filepath.Glob(filepath.Join(loc, "*"+receipt.Suffix))
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, badInput(fmt.Errorf("%s: no *%s in it", loc, receipt.Suffix))
	}
	return out, nil
}

func printReceipts(w *tabwriter.Writer, rs []siteReceipt) {
	fmt.Fprintln(w, "NODE\tBUNDLE\tRUNNING\tVERSION\tSTATE\tHEALTHY\tLAST GOOD\tHELD\tWRITTEN")
	for _, s := range rs {
		if s.Receipt == nil {
			continue
		}
		r := s.Receipt
		if len(r.Bundles) == 0 {
			fmt.Fprintf(w, "%s\t-\t-\t-\t-\t-\t-\t-\t%s\n", r.Node, age(r.Written)+" ago")
		}
		for _, b := range r.Bundles {
			version, held := "-", make([]string, 0, len(b.Revisions))
			for _, rev := range b.Revisions {
				if rev.Revision == b.Running {
					version = rev.Version
				}
				held = append(held, fmt.Sprint(rev.Revision))
			}
			healthy := "no"
			if b.Healthy() {
				healthy = "yes"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Node, b.Name, revOrDash(b.Running), version, orDash(b.State), healthy,
				revOrDash(b.LastGood), strings.Join(held, ","), age(r.Written)+" ago")
		}
	}
	for _, s := range rs {
		if s.Error != "" {
			fmt.Fprintf(w, "refused\t%s\n", s.Error)
		}
	}
}

func revOrDash(n uint64) string {
	if n == 0 {
		return "-"
	}
	return fmt.Sprint(n)
}
