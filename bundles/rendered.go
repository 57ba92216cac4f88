package bundles

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
)

// RenderedType is the media type of a rendered layer (SPEC §3): the kustomize build output of
// one component, made when the bundle was built, as one gzip-compressed YAML stream.
const RenderedType = "application/vnd.ferry.rendered.v1.yaml+gzip"

// RenderedTitle is the title annotation of component's rendered layer: the file name `oras
// pull` gives it, distinct from the component layer's.
func RenderedTitle(component string) string { return component + ".rendered.yaml.gz" }

// MaxRenderedBytes bounds a rendered layer's YAML once decompressed.
const MaxRenderedBytes = 128 << 20

// CanRender reports whether component c may carry its build output: a kustomize component
// whose files need no decryption first. A component with decryption keeps being built on the
// node, because SOPS files are decrypted before kustomize reads them (a secretGenerator over
// an encrypted env file needs the plaintext).
func (c Component) CanRender() bool {
	return c.Type == TypeKustomize && c.Kustomize != nil && c.Kustomize.Decryption == nil
}

// GzipRendered compresses a component's build output into a rendered layer, deterministically
// (SPEC §5: no name, no time, OS unknown).
func GzipRendered(yamlStream []byte) ([]byte, error) {
	if len(yamlStream) > MaxRenderedBytes {
		return nil, fmt.Errorf("rendered output of %d bytes, over the %d-byte limit", len(yamlStream), MaxRenderedBytes)
	}
	var buf bytes.Buffer
	gz, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	gz.OS = 255
	if _, err := gz.Write(yamlStream); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Rendered returns the descriptor of component i's rendered layer, if the bundle carries one.
func (b *Bundle) Rendered(i int) (ocispec.Descriptor, bool) {
	if i < 0 || i >= len(b.rendered) || b.rendered[i] < 0 {
		return ocispec.Descriptor{}, false
	}
	return b.Manifest.Layers[b.rendered[i]], true
}

// RenderedYAML fetches component i's rendered layer from src, checking its digest and size,
// and returns its YAML, decompressed within MaxRenderedBytes.
func (b *Bundle) RenderedYAML(ctx context.Context, src content.Fetcher, i int) ([]byte, error) {
	desc, ok := b.Rendered(i)
	if !ok {
		return nil, fmt.Errorf("bundle %s: component %d carries no rendered layer", b.Metadata.Name, i)
	}
	name := b.Metadata.Components[i].Name
	raw, err := FetchLimited(ctx, src, desc, MaxLayerBytes)
	if err != nil {
		return nil, fmt.Errorf("component %s: rendered layer: %w", name, err)
	}
	var out bytes.Buffer
	if err := gunzipRendered(bytes.NewReader(raw), &out); err != nil {
		return nil, fmt.Errorf("component %s: rendered layer %s: %w", name, desc.Digest, err)
	}
	return out.Bytes(), nil
}

// CheckRendered streams component i's rendered layer through its digest check and the
// decompression limit, keeping nothing (ingest, like CheckLayer). What the YAML says is
// checked where it is parsed, before anything is applied.
func (b *Bundle) CheckRendered(ctx context.Context, src content.Fetcher, i int) error {
	desc, ok := b.Rendered(i)
	if !ok {
		return nil
	}
	name := b.Metadata.Components[i].Name
	if err := desc.Digest.Validate(); err != nil || desc.Digest.Algorithm() != digest.SHA256 {
		return fmt.Errorf("component %s: rendered layer %q: not a sha256 digest", name, desc.Digest)
	}
	rc, err := src.Fetch(ctx, desc)
	if err != nil {
		return fmt.Errorf("component %s: rendered layer: %w", name, err)
	}
	defer rc.Close()
	vr := content.NewVerifyReader(rc, desc)
	gerr := gunzipRendered(vr, io.Discard)
	_, err = io.Copy(io.Discard, vr)
	if err == nil {
		err = vr.Verify()
	}
	if err != nil {
		return fmt.Errorf("component %s: rendered layer %s: %w", name, desc.Digest, err)
	}
	if gerr != nil {
		return fmt.Errorf("component %s: rendered layer %s: %w", name, desc.Digest, gerr)
	}
	return nil
}

// gunzipRendered decompresses one gzip member of UTF-8 text into w, in 64 KiB pieces,
// refusing more than MaxRenderedBytes, text that is not UTF-8, a second member and anything
// after the stream. Memory stays constant when w keeps nothing (ingest).
func gunzipRendered(r io.Reader, w io.Writer) error {
	br := bufio.NewReader(r)
	gz, err := gzip.NewReader(br)
	if err != nil {
		return fmt.Errorf("not gzip: %w", err)
	}
	defer gz.Close()
	gz.Multistream(false)
	lr := &io.LimitedReader{R: gz, N: MaxRenderedBytes + 1}
	buf := make([]byte, 64<<10)
	var carry []byte // the start of a character split between two pieces
	for {
		n, err := lr.Read(buf[len(carry):])
		if n > 0 {
			chunk := buf[:len(carry)+n]
			// Hold back an incomplete character at the end; check the rest.
			cut := len(chunk)
			for i := 1; i <= utf8.UTFMax-1 && i <= len(chunk); i++ {
				if b := chunk[len(chunk)-i]; utf8.RuneStart(b) {
					if !utf8.FullRune(chunk[len(chunk)-i:]) {
						cut = len(chunk) - i
					}
					break
				}
			}
			if !utf8.Valid(chunk[:cut]) {
				return errors.New("not UTF-8 text")
			}
			if _, werr := w.Write(chunk[:cut]); werr != nil {
				return werr
			}
			carry = append(buf[:0:0], chunk[cut:]...)
			copy(buf, carry)
		}
		if lr.N <= 0 {
			return fmt.Errorf("over the %d-byte limit once decompressed", MaxRenderedBytes)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
	}
	if len(carry) > 0 {
		return errors.New("not UTF-8 text")
	}
	if _, err := br.ReadByte(); err == nil {
		return errors.New("data after the gzip stream")
	}
	return nil
}
