package backup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/kvtx/kvtx/txn"
	"github.com/kvtx/kvtx/txn/client"
	"github.com/kvtx/kvtx/wire"
)

// RestoreOptions tune Restore. A zero field takes the default in its comment.
type RestoreOptions struct {
	// Force restores into a cluster that holds data: the backup's versions are written over
	// what is there. Keys the backup does not hold stay, and a version the cluster holds
	// above a restored one still hides it.
	Force bool
	// BatchKeys and BatchBytes bound one restore request (defaults 1,000 keys and 1 MiB; a
	// batch holds one key at least).
	BatchKeys, BatchBytes int
	// Parallel is how many batches are in flight at once (default 4).
	Parallel int
	// Retries is how often a batch that failed in a way that may be retried is sent again
	// (default 5): writing a batch twice is harmless.
	Retries int
	// Progress, if set, is called as the file is verified ("verify") and then restored
	// ("restore"), with the keys and bytes done so far in that phase.
	Progress func(phase string, keys, bytes int64)
}

func (o *RestoreOptions) setDefaults() {
	if o.BatchKeys <= 0 {
		o.BatchKeys = 1000
	}
	o.BatchKeys = min(o.BatchKeys, txn.MaxRestoreKeys)
	if o.BatchBytes <= 0 {
		o.BatchBytes = 1 << 20
	}
	if o.Parallel <= 0 {
		o.Parallel = 4
	}
	if o.Retries <= 0 {
		o.Retries = 5
	}
}

// ErrNothingWritten wraps the errors of a Restore that stopped before it wrote anything: a
// corrupt file, a cluster that is not empty, a master that cannot be reached.
var ErrNothingWritten = errors.New("nothing written")

// Restore restores the backup file at path into the cluster cl talks to, which may have any
// number of nodes: every key gets the value and version it had at the backup's timestamp,
// and the oracle is raised above that timestamp first, so that new writes get higher
// versions. It verifies the whole file before it writes anything (a damaged file is an error
// matching ErrCorrupt and ErrNothingWritten); the master refuses a cluster whose nodes hold
// any key (client.ErrNotEmpty) unless opts.Force. Each batch is durable on its nodes when it
// is acknowledged; a restore that fails half-way may be run again with Force.
func Restore(ctx context.Context, cl *client.Client, path string, opts RestoreOptions) (*Summary, error) {
	opts.setDefaults()
	start := time.Now()
	var verifyProgress func(keys, bytes int64)
	if opts.Progress != nil {
		verifyProgress = func(keys, bytes int64) { opts.Progress("verify", keys, bytes) }
	}
	m, err := Verify(path, verifyProgress)
	if err != nil {
		return nil, fmt.Errorf("%w; %w", err, ErrNothingWritten)
	}
	states, err := cl.RestoreBegin(ctx, m.BackupTS, opts.Force)
	if err != nil {
		return nil, fmt.Errorf("%w; %w", err, ErrNothingWritten)
	}
	r, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	batches := make(chan []client.KeyValue)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		written int64
		bytes   int64
	)
	for range opts.Parallel {
		wg.Go(func() {
			for b := range batches {
				n, err := restoreBatch(ctx, cl, m.BackupTS, b, opts.Retries)
				if err != nil {
					cancel(err)
					continue // drain, so that the reader is never stuck
				}
				mu.Lock()
				written += int64(n)
				for _, kv := range b {
					bytes += int64(len(kv.Key) + len(kv.Value))
				}
				if opts.Progress != nil {
					opts.Progress("restore", written, bytes)
				}
				mu.Unlock()
			}
		})
	}
	var batch []client.KeyValue
	size := 0
	send := func() error {
		select {
		case batches <- batch:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		batch, size = nil, 0
		return nil
	}
	readErr := r.Records(func(_ int, rec Record) error {
		if len(batch) > 0 && (len(batch) >= opts.BatchKeys || size+len(rec.Key)+len(rec.Value) > opts.BatchBytes) {
			if err := send(); err != nil {
				return err
			}
		}
		batch = append(batch, client.KeyValue{Key: rec.Key, Value: rec.Value, Version: rec.Version})
		size += len(rec.Key) + len(rec.Value)
		return nil
	})
	if readErr == nil && len(batch) > 0 {
		readErr = send()
	}
	close(batches)
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return nil, fmt.Errorf("backup: restore of %s stopped after %d keys (run it again with force): %w", path, written, err)
	}
	if readErr != nil {
		return nil, fmt.Errorf("backup: restore of %s stopped after %d keys (run it again with force): %w", path, written, readErr)
	}
	if written != m.Keys {
		return nil, fmt.Errorf("backup: restore of %s wrote %d keys, the backup holds %d", path, written, m.Keys)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	nodes := make([]string, len(states))
	for i, s := range states {
		nodes[i] = s.Name
	}
	return &Summary{Manifest: m, Path: path, FileBytes: st.Size(), Duration: time.Since(start), Nodes: nodes}, nil
}

// restoreBatch sends one batch, again when its failure leaves it safe to (always, short of
// a refusal: a batch written twice is the same batch).
func restoreBatch(ctx context.Context, cl *client.Client, backupTS uint64, b []client.KeyValue, retries int) (int, error) {
	for attempt := 0; ; attempt++ {
		n, err := cl.Restore(ctx, backupTS, b)
		if err == nil {
			return n, nil
		}
		var ce *client.Error
		again := errors.As(err, &ce) && (ce.Retryable() || ce.Code == wire.CodeUnknownOutcome) && ce.Code != wire.CodeCompareFailed
		if attempt >= retries || !again || ctx.Err() != nil {
			return 0, err
		}
		select {
		case <-ctx.Done():
			return 0, err
		case <-time.After(time.Duration(attempt+1) * 200 * time.Millisecond):
		}
	}
}
