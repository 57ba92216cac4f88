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
	for {
		var ownRefs, otherRefs []ObjectRef
		for k, r := range pending {
			if own[k] {
				ownRefs = append(ownRefs, r)
			} else {
				otherRefs = append(otherRefs, r)
			}
		}
		live, err := c.live(ctx, bundle, ownRefs)
		if err != nil && ctx.Err() == nil && !isTransient(err) {
			return err
		}
		for _, r := range otherRefs {
			if u, err := c.get(ctx, r); err == nil {
				live[r.key()] = u
			} else if !apierrors.IsNotFound(err) && !isTransient(err) && ctx.Err() == nil {
				return fmt.Errorf("health check %s: %w", r, err)
			}
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
