package apply

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// ErrUnhealthy is returned when objects do not become healthy in time, or fail.
var ErrUnhealthy = errors.New("not healthy")

// waitHealthy polls the objects with kstatus until all are Current. An object reported
// Failed must stay Failed for window before it counts (a rollout can pass through Failed);
// the deadline is the component's timeout. The objects the bundle applied are read with one
// LIST per resource and namespace, filtered by the bundle's label; others (health checks
// naming objects Ferry did not apply) with a GET each.
//
// Time during which the API server cannot be reached or does not serve the reads (a k3s
// restart) does not count against the timeout: each poll whose reads failed for that reason
// moves the deadline on by the time since the poll before. A revision is failed by what the cluster says, not by its
// absence.
func (c *cluster) waitHealthy(ctx context.Context, bundle string, applied, checks []ObjectRef, timeout, window time.Duration) error {
	deadline := time.Now().Add(timeout)
	var away time.Duration // the time the API server was out of reach, not counted
	lastPoll := time.Now()
	pending := map[string]ObjectRef{}
	own := map[string]bool{}
	for _, r := range applied {
		pending[r.key()], own[r.key()] = r, true
	}
	for _, r := range checks {
		pending[r.key()] = r
	}
	failedSince := map[string]time.Time{}
	last := map[string]string{}
	var readErr error // the last read's error, if it was one that decides
	for {
		var ownRefs, otherRefs []ObjectRef
		for k, r := range pending {
			if own[k] {
				ownRefs = append(ownRefs, r)
			} else {
				otherRefs = append(otherRefs, r)
			}
		}
		// A read that fails is the verdict only when it fails twice in a row, and never when
		// the cluster did not serve it (out of reach, throttling, not answering in time):
		// that time does not count against the timeout.
		pctx, cancel := context.WithTimeout(ctx, healthReadTimeout)
		live, err := c.live(pctx, bundle, ownRefs)
		if live == nil {
			live = map[string]*unstructured.Unstructured{}
		}
		for _, r := range otherRefs {
			if u, gerr := c.get(pctx, r); gerr == nil {
				live[r.key()] = u
			} else if !apierrors.IsNotFound(gerr) && err == nil {
				err = fmt.Errorf("health check %s: %w", r, gerr)
			}
		}
		cancel()
		now := time.Now()
		notServed := err != nil && ctx.Err() == nil && (isTransient(err) || errors.Is(err, context.DeadlineExceeded))
		if notServed {
			deadline = deadline.Add(now.Sub(lastPoll))
			away += now.Sub(lastPoll)
		}
		lastPoll = now
		switch {
		case err == nil || notServed:
			readErr = nil
		case readErr != nil:
			return err
		default:
			readErr = err
		}
		for k, r := range pending {
			u := live[k]
			if u == nil {
				last[k] = "not found"
				if err != nil {
					last[k] = "not read: " + err.Error()
				}
				continue
			}
			st, err := status.Compute(u)
			if err != nil {
				last[k] = err.Error()
				continue
			}
			switch st.Status {
			case status.CurrentStatus:
				delete(pending, k)
				delete(failedSince, k)
			case status.FailedStatus:
				if _, ok := failedSince[k]; !ok {
					failedSince[k] = now
				}
				if now.Sub(failedSince[k]) >= window {
					return fmt.Errorf("%w: %s failed: %s", ErrUnhealthy, r, st.Message)
				}
				last[k] = "Failed: " + st.Message
			default:
				delete(failedSince, k)
				last[k] = string(st.Status) + ": " + st.Message
			}
		}
		if len(pending) == 0 {
			return nil
		}
		if !time.Now().Before(deadline) {
			note := ""
			if away > 0 {
				note = fmt.Sprintf(" (not counting %s with the API server out of reach or not answering)", away.Round(time.Second))
			}
			return fmt.Errorf("%w after %s%s: %s", ErrUnhealthy, timeout, note, describePending(pending, last))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(c.poll, time.Until(deadline))):
		}
	}
}

// healthReadTimeout bounds one poll's reads, apart from the health deadline: a read the API
// server does not answer (a restarted one filling its caches) is the cluster not serving,
// not the revision's verdict.
const healthReadTimeout = 30 * time.Second

func describePending(pending map[string]ObjectRef, last map[string]string) string {
	var parts []string
	for k, r := range pending {
		parts = append(parts, fmt.Sprintf("%s (%s)", r, last[k]))
	}
	sort.Strings(parts)
	const show = 5
	if len(parts) > show {
		parts = append(parts[:show], fmt.Sprintf("and %d more", len(parts)-show))
	}
	return strings.Join(parts, ", ")
}

func (c *cluster) get(ctx context.Context, r ObjectRef) (*unstructured.Unstructured, error) {
	ri, err := c.resource(r)
	if err != nil {
		if meta.IsNoMatchError(err) {
			return nil, apierrors.NewNotFound(r.GVK().GroupVersion().WithResource(r.Kind).GroupResource(), r.Name)
		}
		return nil, err
	}
	return ri.Get(ctx, r.Name, metav1.GetOptions{})
}

// isTransient reports errors worth another poll: the API server restarting or throttling.
func isTransient(err error) bool {
	if errors.Is(err, ErrUnhealthy) {
		return false // a health timeout is the revision's verdict, whatever its message says
	}
	return apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsTooManyRequests(err) ||
		apierrors.IsServiceUnavailable(err) || isConnectionError(err)
}

// isConnectionError reports, by type, the API server out of reach: a request that failed in
// the transport (client-go returns every such failure as a *url.Error: refused, reset, a
// timeout, no route) or a connection cut mid-answer (io.ErrUnexpectedEOF).
func isConnectionError(err error) bool {
	var ue *url.Error
	return errors.As(err, &ue) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EHOSTUNREACH)
}
