package apply

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"syscall"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func TestTransientByType(t *testing.T) {
	gr := schema.GroupResource{Resource: "configmaps"}
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"refused", fmt.Errorf("apply: %w", &url.Error{Op: "Patch", URL: "https://127.0.0.1:6443/api", Err: &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}}), true},
		{"cut mid-answer", fmt.Errorf("list: %w", io.ErrUnexpectedEOF), true},
		{"throttled", apierrors.NewTooManyRequests("slow down", 1), true},
		{"unavailable", apierrors.NewServiceUnavailable("starting"), true},
		{"not found", apierrors.NewNotFound(gr, "x"), false},
		{"forbidden", apierrors.NewForbidden(gr, "x", errors.New("no")), false},
		{"a message that says connection refused", errors.New("webhook said: connection refused"), false},
		{"unhealthy", fmt.Errorf("%w: connection refused", ErrUnhealthy), false},
	} {
		if got := Transient(c.err); got != c.want {
			t.Errorf("%s: Transient = %v, want %v", c.name, got, c.want)
		}
	}
}
