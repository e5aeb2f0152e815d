package wire

import (
	"runtime"
	"sync"
	"testing"
	"time"
)

func TestWorkerPoolNeverMakesAFunctionWait(t *testing.T) {
	p := NewWorkerPool(time.Minute)
	defer p.Close()
	release := make(chan struct{})
	var started sync.WaitGroup
	for range 20 {
		started.Add(1)
		p.Go(func() {
			started.Done()
			<-release // every function blocks: each needs its own worker
		})
	}
	done := make(chan struct{})
	go func() { started.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a function waited for another to finish")
	}
	close(release)
}

func TestWorkerPoolReusesIdleWorkersAndCloseEndsThem(t *testing.T) {
	before := runtime.NumGoroutine()
	p := NewWorkerPool(time.Minute)
	for range 200 {
		var wg sync.WaitGroup
		wg.Add(1)
		p.Go(wg.Done)
		wg.Wait()
		time.Sleep(50 * time.Microsecond) // let the worker go back to waiting
	}
	if n := runtime.NumGoroutine() - before; n > 5 {
		t.Fatalf("200 sequential functions left %d goroutines: workers are not reused", n)
	}
	p.Close()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines left after Close", runtime.NumGoroutine()-before)
		}
		time.Sleep(time.Millisecond)
	}
}
