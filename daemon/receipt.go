package daemon

import (
	"bytes"
	"cmp"
	"context"
	"crypto"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ferrygitops/ferry/bundles"
	"github.com/ferrygitops/ferry/internal/cosignkey"
	"github.com/ferrygitops/ferry/receipt"
	"github.com/ferrygitops/ferry/store"
	"github.com/ferrygitops/ferry/verify"
)

// nodeID is who the node is to headquarters: its name and the key that signs its receipts.
type nodeID struct {
	name   string
	pub    string // the public key's file
	signer crypto.Signer
	key    verify.Key
}

// loadNodeKey reads the node's key (cfg.NodeKey, its public key beside it), making the pair
// first when it is the default one and absent, as sshd makes its host keys. The private key
// is in cosign's format with an empty password: the daemon has no one to ask for one; mode
// 0600 in a state directory of mode 0700 is what protects it.
func loadNodeKey(cfg *Config) (*nodeID, error) {
	def := filepath.Join(cfg.StateDir, "node.key")
	priv := cmp.Or(cfg.NodeKey, def)
	pub := strings.TrimSuffix(priv, ".key") + ".pub"
	name := cfg.NodeName
	if name == "" {
		name, _ = os.Hostname()
	}
	if _, err := os.Stat(priv); errors.Is(err, fs.ErrNotExist) && priv == def {
		privPEM, pubPEM, err := cosignkey.Generate(nil)
		if err != nil {
			return nil, err
		}
		if err := cosignkey.WriteNew(pub, pubPEM, 0o644); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("nodeKey: %w", err)
		}
		if err := cosignkey.WriteNew(priv, privPEM, 0o600); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("nodeKey: %w", err)
		}
	}
	signer, err := cosignkey.Load(priv, nil)
	if err != nil {
		return nil, fmt.Errorf("nodeKey: %w (a node key has an empty password: COSIGN_PASSWORD= ferry keys generate)", err)
	}
	key, err := verify.LoadPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("nodeKey: public key: %w", err)
	}
	if k, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(key.Public) {
		return nil, fmt.Errorf("nodeKey: %s is not the public key of %s", pub, priv)
	}
	return &nodeID{name: name, pub: pub, signer: signer, key: key}, nil
}

// nodeKey is the node's identity, loaded (or made) the first time a receipt needs it: a
// node that writes no receipt never pays for the key's scrypt.
func (d *Daemon) nodeKey() (*nodeID, error) {
	d.receipts.keyMu.Lock()
	defer d.receipts.keyMu.Unlock()
	if d.receipts.node == nil {
		n, err := loadNodeKey(d.cfg)
		if err != nil {
			return nil, err
		}
		d.receipts.node = n
	}
	return d.receipts.node, nil
}

// Receipt is the node's receipt now: every bundle with its revisions, what runs and its
// state, and every blob the kept revisions hold.
func (d *Daemon) Receipt() (*receipt.Receipt, error) {
	node, err := d.nodeKey()
	if err != nil {
		return nil, err
	}
	r := &receipt.Receipt{Node: node.name, Key: node.key.ID, Written: time.Now().UTC().Truncate(time.Second)}
	bs, err := d.st.Bundles()
	if err != nil {
		return nil, err
	}
	blobs := map[digest.Digest]bool{}
	for _, b := range bs {
		revs, err := d.st.Revisions(b.Name)
		if err != nil {
			return nil, err
		}
		rb := receipt.Bundle{Name: b.Name, Running: b.Current, LastGood: b.LastGood}
		if !b.Removed.IsZero() {
			rb.State = string(store.StateRemoved)
		}
		for _, rev := range revs {
			rb.Revisions = append(rb.Revisions, receipt.Revision{Revision: rev.Revision, Version: rev.Version, Digest: rev.Manifest.Digest.String(), State: string(rev.State)})
			if rev.Revision == b.Current && rb.State == "" {
				rb.State = string(rev.State)
			}
			for _, bl := range rev.Blobs {
				if !blobs[bl.Digest] && d.st.HasBlob(bl.Digest) {
					blobs[bl.Digest] = true
					r.Blobs = append(r.Blobs, bl.Digest)
				}
			}
		}
		r.Bundles = append(r.Bundles, rb)
	}
	return r, nil
}

// SignedReceipt is Receipt as its file and signature.
func (d *Daemon) SignedReceipt() (file, sig []byte, err error) {
	r, err := d.Receipt()
	if err != nil {
		return nil, nil, err
	}
	return receipt.Sign(r, d.receipts.node.signer)
}

// receipts remembers where the node's receipt goes (the sticks that brought bundles, S3
// prefixes) and what was last written to each, so a receipt is rewritten only when what it
// says changes.
type receipts struct {
	// kick asks receiptLoop for a write; a full channel means one is asked for already.
	kick   chan struct{}
	keyMu  sync.Mutex
	node   *nodeID // loaded on first use
	mu     sync.Mutex
	sticks map[string]*bundles.Guard // receipt directory on a stick → its guard
	last   map[string]string         // target → the receipt last written there, time left out
}

// kickWrite asks for the receipt to be written where it goes, without waiting: a stick that
// stalls holds the receipt loop, never a bundle's reconcile loop or the poller.
func (r *receipts) kickWrite() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// receiptLoop writes the receipt each time it is asked to, until ctx is done.
func (d *Daemon) receiptLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.receipts.kick:
			d.writeReceipts(ctx)
		}
	}
}

// addStick makes dir a place the receipt is written to while it exists.
func (r *receipts) addStick(dir string, g *bundles.Guard) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sticks == nil {
		r.sticks = map[string]*bundles.Guard{}
	}
	r.sticks[dir] = g
	delete(r.last, dir) // a stick put in again gets the receipt again
}

// writeReceipts writes the receipt to every stick still in and every S3 receipt prefix where
// it changed. Best effort: a stick pulled meanwhile is forgotten, other failures are logged.
func (d *Daemon) writeReceipts(ctx context.Context) {
	d.receipts.mu.Lock()
	defer d.receipts.mu.Unlock()
	if len(d.receipts.sticks) == 0 && !d.hasS3Receipts() {
		return
	}
	r, err := d.Receipt()
	if err != nil {
		d.log.Warn("receipt", "err", err)
		return
	}
	file, sig, err := receipt.Sign(r, d.receipts.node.signer)
	if err != nil {
		d.log.Warn("receipt", "err", err)
		return
	}
	unchanged := string(bytes.Replace(file, []byte(r.Written.Format(time.RFC3339)), nil, 1))
	if d.receipts.last == nil {
		d.receipts.last = map[string]string{}
	}
	name := r.Node + receipt.Suffix
	for dir, g := range d.receipts.sticks {
		if d.receipts.last[dir] == unchanged {
			continue
		}
		err := g.Do(ctx, "write receipt", dir, func() error {
			if _, err := os.Stat(filepath.Dir(dir)); err != nil {
				return err // the stick is gone
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			// The signature first: a reader that finds the receipt finds its signature.
			if err := store.WriteFileAtomic(filepath.Join(dir, name+".sig"), sig, 0o644); err != nil {
				return err
			}
			return store.WriteFileAtomic(filepath.Join(dir, name), file, 0o644)
		})
		switch {
		case errors.Is(err, fs.ErrNotExist):
			delete(d.receipts.sticks, dir)
		case err != nil:
			d.log.Warn("receipt not written to the stick", "dir", dir, "err", err)
		default:
			d.receipts.last[dir] = unchanged
			d.log.Info("receipt written", "dir", dir, "bundles", len(r.Bundles), "blobs", len(r.Blobs))
		}
	}
	for _, s := range d.cfg.Sources {
		if s.S3 == nil || s.S3.ReceiptPrefix == "" {
			continue
		}
		target := "s3://" + s.S3.Bucket + "/" + s.S3.ReceiptPrefix
		if d.receipts.last[target] == unchanged {
			continue
		}
		o := s3Source{s.S3}.options()
		key := strings.TrimSuffix(s.S3.ReceiptPrefix, "/") + "/" + name
		pctx, cancel := context.WithTimeout(ctx, time.Minute)
		err := o.PutS3(pctx, s.S3.Bucket, key+".sig", sig, "text/plain")
		if err == nil {
			err = o.PutS3(pctx, s.S3.Bucket, key, file, "application/json")
		}
		cancel()
		if err != nil {
			d.log.Warn("receipt not written to S3", "to", target, "err", err)
			continue
		}
		d.receipts.last[target] = unchanged
	}
}

// wantsReceipts reports whether a source writes receipts (a stick's receiptDir, an S3
// receiptPrefix).
func (d *Daemon) wantsReceipts() bool {
	for _, s := range d.cfg.Sources {
		if s.USB != nil && s.USB.ReceiptDir != "" {
			return true
		}
	}
	return d.hasS3Receipts()
}

func (d *Daemon) hasS3Receipts() bool {
	for _, s := range d.cfg.Sources {
		if s.S3 != nil && s.S3.ReceiptPrefix != "" {
			return true
		}
	}
	return false
}
