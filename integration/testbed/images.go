package testbed

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"
)

// Image says what PushImage makes: for each architecture, a manifest whose layers are
// uncompressed tars each holding one file of random bytes (LayerBytes each), and a config
// whose diff_ids match, so containerd can unpack it. More than one architecture makes an
// index. Seed varies the bytes: two images with different seeds share no layer.
type Image struct {
	Repository, Tag string
	LayerBytes      []int64
	Archs           []string // default amd64
	Seed            uint64
}

// PushImage makes im in the testbed's registry, streaming: each layer is generated twice
// from its seed, once to hash it and once to push it, so a layer of GiB costs no memory.
// It returns the root descriptor (the manifest, or the index).
func (tb *Testbed) PushImage(ctx context.Context, im Image) (ocispec.Descriptor, error) {
	r, err := remote.NewRepository(tb.Registry + "/" + im.Repository)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	r.PlainHTTP = true
	pushBytes := func(mediaType string, b []byte) (ocispec.Descriptor, error) {
		d := content.NewDescriptorFromBytes(mediaType, b)
		return d, r.Push(ctx, d, strings.NewReader(string(b)))
	}
	archs := im.Archs
	if len(archs) == 0 {
		archs = []string{"amd64"}
	}
	var manifests []ocispec.Descriptor
	for a, arch := range archs {
		var layers []ocispec.Descriptor
		var diffIDs []digest.Digest
		for i, size := range im.LayerBytes {
			seed := im.Seed<<16 | uint64(a)<<8 | uint64(i)
			h := sha256.New()
			n, err := io.Copy(h, LayerTar(seed, size))
			if err != nil {
				return ocispec.Descriptor{}, err
			}
			d := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.Digest("sha256:" + hex.EncodeToString(h.Sum(nil))), Size: n}
			if err := r.Push(ctx, d, LayerTar(seed, size)); err != nil {
				return ocispec.Descriptor{}, fmt.Errorf("push layer of %s: %w", im.Repository, err)
			}
			layers = append(layers, d)
			diffIDs = append(diffIDs, d.Digest) // uncompressed: the diff_id is the digest
		}
		cfg, _ := json.Marshal(ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: arch},
			RootFS: ocispec.RootFS{Type: "layers", DiffIDs: diffIDs}})
		cd, err := pushBytes(ocispec.MediaTypeImageConfig, cfg)
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		man := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cd, Layers: layers}
		man.SchemaVersion = 2
		mb, _ := json.Marshal(man)
		md, err := pushBytes(ocispec.MediaTypeImageManifest, mb)
		if err != nil {
			return ocispec.Descriptor{}, err
		}
		md.Platform = &ocispec.Platform{OS: "linux", Architecture: arch}
		manifests = append(manifests, md)
	}
	root := manifests[0]
	root.Platform = nil
	if len(manifests) > 1 {
		idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: manifests}
		idx.SchemaVersion = 2
		ib, _ := json.Marshal(idx)
		if root, err = pushBytes(ocispec.MediaTypeImageIndex, ib); err != nil {
			return ocispec.Descriptor{}, err
		}
	}
	return root, r.Tag(ctx, root, im.Tag)
}

// DeleteImage removes a manifest (or index) from the testbed's registry, so that only a
// node that holds the image can serve it.
func (tb *Testbed) DeleteImage(ctx context.Context, repository string, d ocispec.Descriptor) error {
	r, err := remote.NewRepository(tb.Registry + "/" + repository)
	if err != nil {
		return err
	}
	r.PlainHTTP = true
	return r.Delete(ctx, d)
}

// LayerTar streams a tar holding one file of size random bytes from seed (ChaCha8): the same
// bytes for the same seed, incompressible as real layers are.
func LayerTar(seed uint64, size int64) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("data/%x.bin", seed), Mode: 0o644, Size: size, Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)})
		if err == nil {
			var key [32]byte
			for i := range 8 {
				key[i] = byte(seed >> (8 * i))
			}
			_, err = io.CopyN(tw, rand.NewChaCha8(key), size)
		}
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err)
	}()
	return pr
}
