package wire

import (
	"context"
	"sync"
	"time"
)

// admission is a server's budget of requests in flight, server-wide: the bytes of their bodies
// and their number, from the moment a frame's header is read until its handler returns. A
// request is admitted when it fits, or when nothing is in flight at all (so one request larger
// than the budget still gets through, alone); requests that do not fit wait in arrival order,
// so a large one is not starved by a stream of small ones. Protocol-lane requests are counted
// but never wait (Lane): they free what the others wait for, and their sender bounds them with
// its own budget on the client requests it serves.
type admission struct {
	maxBytes    int64
	maxRequests int

	mu       sync.Mutex
	bytes    int64
	requests int
	queue    []*admitWaiter // FIFO of requests waiting for room
}

// admitWaiter is one request waiting for room. ready is closed once it was admitted.
type admitWaiter struct {
	n        int64
	ready    chan struct{}
	admitted bool // guarded by admission.mu
}

func newAdmission(maxBytes int64, maxRequests int) *admission {
	return &admission{maxBytes: maxBytes, maxRequests: maxRequests}
}

// fits reports whether a request of n bytes may start now; a.mu is held.
func (a *admission) fits(n int64) bool {
	if a.requests == 0 {
		return true
	}
	return a.requests < a.maxRequests && a.bytes+n <= a.maxBytes
}

func (a *admission) take(n int64) {
	a.bytes += n
	a.requests++
}

// force counts a request of n bytes at once, fitting or not.
func (a *admission) force(n int64) {
	a.mu.Lock()
	a.take(n)
	a.mu.Unlock()
}

// acquire admits a request of n bytes, waiting for room in turn behind those already waiting
// until it fits, ctx ends or, if wait is positive, wait has passed. It reports whether the
// request was admitted; if so, release(n) must follow.
func (a *admission) acquire(ctx context.Context, n int64, wait time.Duration) bool {
	a.mu.Lock()
	if len(a.queue) == 0 && a.fits(n) {
		a.take(n)
		a.mu.Unlock()
		return true
	}
	w := &admitWaiter{n: n, ready: make(chan struct{})}
	a.queue = append(a.queue, w)
	a.mu.Unlock()

	var timeout <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-w.ready:
		return true
	case <-timeout:
	case <-ctx.Done():
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if w.admitted {
		return true // admitted as the wait ended
	}
	for i, q := range a.queue {
		if q == w {
			a.queue = append(a.queue[:i], a.queue[i+1:]...)
			break
		}
	}
	a.admitQueued() // its leaving may let the next one in
	return false
}

// release returns a request of n bytes to the budget and admits those waiting that now fit.
func (a *admission) release(n int64) {
	a.mu.Lock()
	a.bytes -= n
	a.requests--
	a.admitQueued()
	a.mu.Unlock()
}

// admitQueued admits waiting requests in order while the first fits; a.mu is held.
func (a *admission) admitQueued() {
	for len(a.queue) > 0 && a.fits(a.queue[0].n) {
		w := a.queue[0]
		a.queue[0] = nil
		a.queue = a.queue[1:]
		a.take(w.n)
		w.admitted = true
		close(w.ready)
	}
}

// InFlight is a snapshot of a server's admission budget.
type InFlight struct {
	Bytes    int64 // bytes of request bodies read and not yet answered
	Requests int   // requests read and not yet answered
	Waiting  int   // requests whose header was read, waiting for room
}

func (a *admission) snapshot() InFlight {
	a.mu.Lock()
	defer a.mu.Unlock()
	return InFlight{Bytes: a.bytes, Requests: a.requests, Waiting: len(a.queue)}
}
