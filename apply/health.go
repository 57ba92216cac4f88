package apply

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
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
func (c *cluster) waitHealthy(ctx context.Context, bundle string, applied, checks []ObjectRef, timeout, window time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
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
		// A read that fails is the verdict only when it fails twice in a row before the end
		// of the wait: near the deadline client-go's rate limiter refuses to wait, with an
		// error of its own, and the verdict is then the timeout and what was pending.
		live, err := c.live(ctx, bundle, ownRefs)
		if live == nil {
			live = map[string]*unstructured.Unstructured{}
		}
		for _, r := range otherRefs {
			if u, gerr := c.get(ctx, r); gerr == nil {
				live[r.key()] = u
			} else if !apierrors.IsNotFound(gerr) && err == nil {
				err = fmt.Errorf("health check %s: %w", r, gerr)
			}
		}
		switch {
		case err == nil || isTransient(err) || endOfWait(ctx, c.poll):
			readErr = nil
		case readErr != nil:
			return err
		default:
			readErr = err
		}
		now := time.Now()
		for k, r := range pending {
			u := live[k]
			if u == nil {
				last[k] = "not found"
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
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w after %s: %s", ErrUnhealthy, timeout, describePending(pending, last))
		case <-time.After(c.poll):
		}
	}
}

// endOfWait reports a wait whose deadline has passed or falls within the next poll: a read
// that fails then (client-go's rate limiter refuses to wait past the deadline, with an error
// of its own) must not stand for the verdict, which is the timeout and what was pending.
func endOfWait(ctx context.Context, poll time.Duration) bool {
	if ctx.Err() != nil {
		return true
	}
	d, ok := ctx.Deadline()
	return ok && time.Until(d) <= poll
}

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

func isConnectionError(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "connection refused") || strings.Contains(msg, "connection reset") ||
		strings.Contains(msg, "unexpected EOF") || strings.Contains(msg, "i/o timeout") || strings.Contains(msg, "no route to host")
}
