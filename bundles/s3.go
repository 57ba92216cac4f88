package bundles

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// s3Backend is a bundle archive stored as an S3 object (s3://bucket/key.tar), or, as a
// destination, a prefix under which each bundle becomes NAME-VERSION.tar. A source is
// downloaded to a temporary file (bounded by MaxArchiveBytes) and read as an archive; a
// destination is staged as an archive is and uploaded at Commit.
type s3Backend struct{}

func (s3Backend) open(ctx context.Context, a Address, o Options) (Source, error) {
	if !strings.HasSuffix(a.Key, ".tar") {
		return nil, fmt.Errorf("%s: name the bundle object (s3://bucket/key.tar)", a)
	}
	tmp, err := o.download(ctx, a)
	if err != nil {
		return nil, err
	}
	s, err := openArchive(ctx, tmp, NewGuard(o.StallTimeout))
	if err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("%s: %w", a, err)
	}
	return tempSource{s, tmp}, nil
}

func (s3Backend) create(ctx context.Context, a Address, o Options) (Sink, error) {
	c, err := o.s3()
	if err != nil {
		return nil, err
	}
	return newStagedSink(ctx, o, "s3:"+a.Raw, func(ctx context.Context, s *stagedSink) error {
		// A key ending in .tar is one archive of every bundle copied; a prefix gets one
		// archive per bundle.
		groups := [][]int{}
		if strings.HasSuffix(a.Key, ".tar") {
			all := make([]int, len(s.placed))
			for i := range all {
				all[i] = i
			}
			groups = append(groups, all)
		} else {
			for i := range s.placed {
				groups = append(groups, []int{i})
			}
		}
		for _, g := range groups {
			key := a.Key
			if !strings.HasSuffix(key, ".tar") {
				p := s.placed[g[0]]
				key = strings.TrimPrefix(key+"/"+p.Name+"-"+p.Version+".tar", "/")
			}
			var group []Placed
			for _, i := range g {
				group = append(group, s.placed[i])
			}
			if err := uploadArchive(ctx, c, s, group, a.Bucket, key); err != nil {
				return err
			}
			for _, i := range g {
				s.placed[i].Where = "s3://" + a.Bucket + "/" + key
			}
		}
		return nil
	})
}

// list names the archives under a prefix (ListS3), or the one object a names.
func (s3Backend) list(ctx context.Context, a Address, o Options) ([]Address, error) {
	if strings.HasSuffix(a.Key, ".tar") {
		return []Address{a}, nil
	}
	objs, err := o.ListS3(ctx, a.Bucket, a.Key)
	if err != nil {
		return nil, err
	}
	out := make([]Address, 0, len(objs))
	for _, obj := range objs {
		p, err := ParseAddress("s3://" + a.Bucket + "/" + obj.Key)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

func (s3Backend) target(_ context.Context, a Address, _ Options) (Target, error) {
	return nil, errInPlace(a)
}

// uploadArchive writes the archive of the bundles placed to a temporary file (its size must be
// known before the upload) and puts it at bucket/key.
func uploadArchive(ctx context.Context, c *minio.Client, s *stagedSink, placed []Placed, bucket, key string) error {
	tmp, err := os.CreateTemp("", "ferry-upload-*.tar")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	roots, omit := archiveOf(placed)
	if err := WriteArchive(ctx, s.Store, roots, tmp, omit); err != nil {
		return fmt.Errorf("s3://%s/%s: %w", bucket, key, err)
	}
	size, err := tmp.Seek(0, io.SeekCurrent)
	if err != nil {
		return err
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := c.PutObject(ctx, bucket, key, tmp, size, minio.PutObjectOptions{ContentType: "application/x-tar"}); err != nil {
		return fmt.Errorf("s3://%s/%s: %w", bucket, key, err)
	}
	return nil
}

// tempSource is a source read from a temporary file, removed when it is closed.
type tempSource struct {
	stickSource
	path string
}

func (t tempSource) Close() error {
	err := t.stickSource.Close()
	if rerr := os.Remove(t.path); err == nil {
		err = rerr
	}
	return err
}

// S3Object is one object of a bucket listing.
type S3Object struct {
	Key          string
	Size         int64
	ETag         string
	LastModified time.Time
}

// ListS3 lists the bundle archives (.tar) under prefix in bucket, newest first.
func (o Options) ListS3(ctx context.Context, bucket, prefix string) ([]S3Object, error) {
	return o.ListS3Objects(ctx, bucket, prefix, ".tar")
}

// ListS3Objects lists the objects under prefix in bucket whose key ends in suffix, newest
// first, at most maxS3Listing of them.
func (o Options) ListS3Objects(ctx context.Context, bucket, prefix, suffix string) ([]S3Object, error) {
	c, err := o.s3()
	if err != nil {
		return nil, err
	}
	var out []S3Object
	for obj := range c.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if obj.Err != nil {
			return nil, fmt.Errorf("s3://%s/%s: %w", bucket, prefix, obj.Err)
		}
		if strings.HasSuffix(obj.Key, suffix) {
			out = append(out, S3Object{Key: obj.Key, Size: obj.Size, ETag: obj.ETag, LastModified: obj.LastModified})
		}
		if len(out) > maxS3Listing {
			return nil, fmt.Errorf("s3://%s/%s: more than %d %s objects; use a narrower prefix", bucket, prefix, maxS3Listing, suffix)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].LastModified.After(out[j].LastModified) })
	return out, nil
}

// GetS3 reads the object bucket/key, refusing one over limit bytes.
func (o Options) GetS3(ctx context.Context, bucket, key string, limit int64) ([]byte, error) {
	c, err := o.s3()
	if err != nil {
		return nil, err
	}
	obj, err := c.GetObject(ctx, bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, fmt.Errorf("s3://%s/%s: %w", bucket, key, err)
	}
	defer obj.Close()
	b, err := io.ReadAll(io.LimitReader(obj, limit+1))
	if err != nil {
		return nil, fmt.Errorf("s3://%s/%s: %w", bucket, key, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("s3://%s/%s: over the %d-byte limit", bucket, key, limit)
	}
	return b, nil
}

// PutS3 writes data as the object bucket/key.
func (o Options) PutS3(ctx context.Context, bucket, key string, data []byte, contentType string) error {
	c, err := o.s3()
	if err != nil {
		return err
	}
	if _, err := c.PutObject(ctx, bucket, key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{ContentType: contentType}); err != nil {
		return fmt.Errorf("s3://%s/%s: %w", bucket, key, err)
	}
	return nil
}

// maxS3Listing bounds a bucket listing (a bucket is not trusted either).
const maxS3Listing = 10000

func (o Options) s3() (*minio.Client, error) {
	endpoint := firstNonEmpty(o.S3Endpoint, os.Getenv("AWS_ENDPOINT_URL_S3"), os.Getenv("AWS_ENDPOINT_URL"), "https://s3.amazonaws.com")
	secure := true
	switch {
	case strings.HasPrefix(endpoint, "http://"):
		secure, endpoint = false, strings.TrimPrefix(endpoint, "http://")
	case strings.HasPrefix(endpoint, "https://"):
		endpoint = strings.TrimPrefix(endpoint, "https://")
	}
	var creds *credentials.Credentials
	if o.S3AccessKey != "" {
		creds = credentials.NewStaticV4(o.S3AccessKey, o.S3SecretKey, "")
	} else {
		// The AWS order: environment, then the shared credentials file.
		creds = credentials.NewChainCredentials([]credentials.Provider{
			&credentials.EnvAWS{},
			&credentials.FileAWSCredentials{Filename: o.S3CredentialsFile, Profile: os.Getenv("AWS_PROFILE")},
		})
	}
	tr, err := s3Transport(secure)
	if err != nil {
		return nil, err
	}
	return minio.New(strings.TrimSuffix(endpoint, "/"), &minio.Options{
		Creds: creds, Secure: secure, Region: firstNonEmpty(o.S3Region, os.Getenv("AWS_REGION"), "us-east-1"), Transport: tr,
	})
}

// s3Transports are shared by every S3 client of the process: a client is made per call (a
// daemon's poll, a copy), and with a transport of its own each would open a new connection
// (and, over HTTPS, a TLS handshake) instead of reusing the idle one.
var s3Transports = struct {
	sync.Mutex
	byScheme map[bool]*http.Transport
}{byScheme: map[bool]*http.Transport{}}

func s3Transport(secure bool) (*http.Transport, error) {
	s3Transports.Lock()
	defer s3Transports.Unlock()
	if tr, ok := s3Transports.byScheme[secure]; ok {
		return tr, nil
	}
	tr, err := minio.DefaultTransport(secure)
	if err != nil {
		return nil, err
	}
	s3Transports.byScheme[secure] = tr
	return tr, nil
}

func (o Options) download(ctx context.Context, a Address) (string, error) {
	c, err := o.s3()
	if err != nil {
		return "", err
	}
	info, err := c.StatObject(ctx, a.Bucket, a.Key, minio.StatObjectOptions{})
	if err != nil {
		return "", fmt.Errorf("%s: %w", a, err)
	}
	if info.Size > MaxArchiveBytes {
		return "", fmt.Errorf("%s: %d bytes, over the %d-byte limit", a, info.Size, int64(MaxArchiveBytes))
	}
	obj, err := c.GetObject(ctx, a.Bucket, a.Key, minio.GetObjectOptions{})
	if err != nil {
		return "", fmt.Errorf("%s: %w", a, err)
	}
	defer obj.Close()
	tmp, err := os.CreateTemp("", "ferry-download-*.tar")
	if err != nil {
		return "", err
	}
	n, err := io.Copy(tmp, io.LimitReader(obj, MaxArchiveBytes+1))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil && n > MaxArchiveBytes {
		err = fmt.Errorf("over the %d-byte limit", int64(MaxArchiveBytes))
	}
	if err != nil {
		os.Remove(tmp.Name())
		return "", fmt.Errorf("%s: %w", a, err)
	}
	return tmp.Name(), nil
}
