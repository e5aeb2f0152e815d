package wire

import (
	"sync"
	"time"
)

// WorkerPool runs functions on reusable goroutines: an idle worker takes the next function if
// there is one, otherwise a new worker starts, so a function never waits for another. A
// worker keeps the stack it grew, which spares request handlers that go deep (the msgpack
// codec's reflection) the cost of growing a fresh goroutine's stack on every request. A
// worker idle for longer than the pool's idle time exits; Close makes every idle worker exit.
type WorkerPool struct {
	work chan func()
	quit chan struct{}
	idle time.Duration
	once sync.Once
}

// NewWorkerPool returns a pool whose workers exit after idle without work.
func NewWorkerPool(idle time.Duration) *WorkerPool {
	return &WorkerPool{work: make(chan func()), quit: make(chan struct{}), idle: idle}
}

// Go runs f on an idle worker or a new one.
func (p *WorkerPool) Go(f func()) {
	select {
	case p.work <- f:
	default:
		go p.worker(f)
	}
}

func (p *WorkerPool) worker(f func()) {
	f()
	t := time.NewTimer(p.idle)
	defer t.Stop()
	for {
		select {
		case f := <-p.work:
			f()
			t.Reset(p.idle)
		case <-t.C:
			return
		case <-p.quit:
			return
		}
	}
}

// Close makes idle workers exit now and busy ones when their function returns. Go must not be
// called after Close.
func (p *WorkerPool) Close() {
	p.once.Do(func() { close(p.quit) })
}
