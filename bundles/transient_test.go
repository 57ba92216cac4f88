package bundles

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"syscall"
	"testing"

	"github.com/minio/minio-go/v7"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

func TestTransientByType(t *testing.T) {
	u, _ := url.Parse("http://mirror.local/v2/x/manifests/1")
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"connection refused", fmt.Errorf("poll: %w", &url.Error{Op: "Head", URL: u.String(), Err: &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}}), true},
		{"name not resolved", fmt.Errorf("poll: %w", &net.DNSError{Err: "no such host", Name: "mirror.local", IsNotFound: true}), true},
		{"registry 503", fmt.Errorf("r:1: %w", &errcode.ErrorResponse{Method: "HEAD", URL: u, StatusCode: 503}), true},
		{"registry 429", &errcode.ErrorResponse{Method: "HEAD", URL: u, StatusCode: 429}, true},
		{"registry 401", fmt.Errorf("r:1: %w", &errcode.ErrorResponse{Method: "HEAD", URL: u, StatusCode: 401}), false},
		{"s3 500", fmt.Errorf("s3://b/k: %w", minio.ErrorResponse{StatusCode: 500, Code: "InternalError"}), true},
		{"s3 403", fmt.Errorf("s3://b/k: %w", minio.ErrorResponse{StatusCode: 403, Code: "AccessDenied"}), false},
		// The text of a 5xx is not enough: a stick's file may say anything.
		{"a message that says 503", errors.New("status code 503 Service Unavailable"), false},
		{"nil", nil, false},
	} {
		if got := Transient(c.err); got != c.want {
			t.Errorf("%s: Transient = %v, want %v", c.name, got, c.want)
		}
	}
}
