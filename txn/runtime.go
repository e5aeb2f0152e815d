package txn

import (
	"context"
	"sync"
	"time"

	"github.com/kvtx/kvtx/wire"
)

// Runtime is how the protocol code runs background work, reads the clock, waits and bounds
// its requests: every protocol timeout and interval is measured on it. The default,
// RealRuntime, uses goroutines and the wall clock. The deterministic simulator runs everything
// inline on a virtual clock, so that one seed always produces one schedule.
//
// Protocol code must never hold a mutex across a Runtime call or a Transport call: the
// simulator may run other protocol code from inside them.
type Runtime interface {
	// Go runs f in the background.
	Go(f func())
	// Now reads the clock that protocol timeouts are measured on.
	Now() time.Time
	// Sleep waits for d, or until ctx is done (then it returns ctx.Err()).
	Sleep(ctx context.Context, d time.Duration) error
	// Wait waits until done is closed, d has passed or ctx is done, and reports whether done
	// was closed.
	Wait(ctx context.Context, done <-chan struct{}, d time.Duration) bool
	// WithTimeout returns a copy of ctx that is done d from now, or when ctx is; its Err is
	// then context.DeadlineExceeded, and its Deadline is on this clock. The caller must call
	// cancel once it no longer needs the context.
	WithTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc)
}

// RealRuntime runs background work on pooled goroutines and measures time with the wall clock.
type RealRuntime struct{}

var _ Runtime = RealRuntime{}

// workers run RealRuntime's background work: fan-outs to the participants run on goroutines
// whose stacks have already grown for the codec.
var workers = wire.NewWorkerPool(30 * time.Second)

// Go implements Runtime.
func (RealRuntime) Go(f func()) { workers.Go(f) }

// Now implements Runtime.
func (RealRuntime) Now() time.Time { return time.Now() }

// Sleep implements Runtime.
func (RealRuntime) Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Wait implements Runtime.
func (RealRuntime) Wait(ctx context.Context, done <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

// WithTimeout implements Runtime.
func (RealRuntime) WithTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d)
}

// fanOut runs f(0), ..., f(n-1) concurrently through rt and returns when every call has
// returned. The last call runs on the calling goroutine, which would only wait otherwise: one
// goroutine hand-off fewer on the commit path.
func fanOut(rt Runtime, n int, f func(i int)) {
	var wg sync.WaitGroup
	for i := range n - 1 {
		wg.Add(1)
		rt.Go(func() {
			defer wg.Done()
			f(i)
		})
	}
	if n > 0 {
		f(n - 1)
	}
	wg.Wait()
}
