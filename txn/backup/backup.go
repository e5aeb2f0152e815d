package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/kvtx/kvtx/txn"
	"github.com/kvtx/kvtx/txn/client"
)

// Options tune Backup. A zero field takes the default in its comment.
type Options struct {
	// PageKeys is the most keys one scan page fetches (default 1,000; at most
	// txn.MaxScanLimit).
	PageKeys int
	// PageBytes bounds one scan page's keys and values (default and most txn.MaxScanBytes).
	PageBytes int
	// Progress, if set, is called after each page with the keys and bytes written so far.
	Progress func(keys, bytes int64)
	// Retries is how often a page that failed with a retryable error (a lock held past the
	// lock wait, a node unavailable) is read again, at the same timestamp (default 10).
	Retries int
}

func (o *Options) setDefaults() {
	if o.PageKeys <= 0 {
		o.PageKeys = 1000
	}
	o.PageKeys = min(o.PageKeys, txn.MaxScanLimit)
	if o.PageBytes <= 0 || o.PageBytes > txn.MaxScanBytes {
		o.PageBytes = txn.MaxScanBytes
	}
	if o.Retries <= 0 {
		o.Retries = 10
	}
}

// Summary describes a backup file that was written, verified or restored.
type Summary struct {
	// Manifest is the file's manifest.
	Manifest *Manifest
	// Path is the file; FileBytes its size.
	Path      string
	FileBytes int64
	// Duration is how long the operation took.
	Duration time.Duration
	// Nodes, after a restore, are the target cluster's nodes in shard order.
	Nodes []string
}

// ErrExists: Backup was asked to write a file that already exists; nothing was written.
var ErrExists = errors.New("backup: file exists")

// Backup writes every key of the cluster that cl talks to, at one snapshot timestamp, to a
// new file at path (an existing file is refused with ErrExists). It runs while the cluster
// serves writes: the file holds exactly the state that a read at the backup's timestamp
// sees, never half of a transaction. The file appears whole or not at all: the sections are
// written to temporary files beside it, then the file is assembled, synced and linked into
// place. Memory is bounded by one scan page and one compressor per shard.
func Backup(ctx context.Context, cl *client.Client, path string, opts Options) (*Summary, error) {
	opts.setDefaults()
	start := time.Now()
	if _, err := os.Lstat(path); err == nil {
		return nil, fmt.Errorf("%w: %s", ErrExists, path)
	}
	nodes, err := sourceNodes(ctx, cl)
	if err != nil {
		return nil, err
	}
	sm := txn.NewShardMap(nodes)
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	var temps []*os.File
	defer func() {
		for _, f := range temps {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	newTemp := func() (*os.File, error) {
		f, err := os.CreateTemp(dir, "."+base+".tmp-*")
		if err != nil {
			return nil, fmt.Errorf("backup: %w", err)
		}
		temps = append(temps, f)
		return f, nil
	}
	writers := make([]*sectionWriter, len(nodes))
	for i := range nodes {
		f, err := newTemp()
		if err != nil {
			return nil, err
		}
		if writers[i], err = newSectionWriter(f); err != nil {
			return nil, err
		}
	}
	m := &Manifest{Format: Format, Created: start.UTC().Truncate(time.Second), ShardMap: ShardMap{Hash: ShardHash, Nodes: nodes}}
	var from []byte
	for {
		page, ts, more, err := scanPage(ctx, cl, from, m.BackupTS, opts)
		if err != nil {
			return nil, err
		}
		m.BackupTS = ts
		for _, kv := range page {
			if err := writers[sm.Shard(kv.Key)].add(Record{Key: kv.Key, Value: kv.Value, Version: kv.Version}); err != nil {
				return nil, err
			}
			m.Keys++
			m.Bytes += int64(len(kv.Key) + len(kv.Value))
		}
		if opts.Progress != nil {
			opts.Progress(m.Keys, m.Bytes)
		}
		if !more || len(page) == 0 {
			break
		}
		from = append(bytes.Clone(page[len(page)-1].Key), 0)
	}
	for i, w := range writers {
		sec, err := w.close(nodes[i])
		if err != nil {
			return nil, err
		}
		m.Shards = append(m.Shards, sec)
	}
	header, err := encodeHeader(m)
	if err != nil {
		return nil, err
	}
	out, err := newTemp()
	if err != nil {
		return nil, err
	}
	size, err := assemble(out, header, temps[:len(nodes)])
	if err != nil {
		return nil, err
	}
	if err := os.Link(out.Name(), path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("%w: %s", ErrExists, path)
		}
		return nil, fmt.Errorf("backup: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return nil, err
	}
	return &Summary{Manifest: m, Path: path, FileBytes: size, Duration: time.Since(start)}, nil
}

// assemble writes header and then each section's temporary file into out, and syncs it.
func assemble(out *os.File, header []byte, sections []*os.File) (int64, error) {
	if _, err := out.Write(header); err != nil {
		return 0, fmt.Errorf("backup: %w", err)
	}
	size := int64(len(header))
	for _, f := range sections {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return 0, fmt.Errorf("backup: %w", err)
		}
		n, err := io.Copy(out, f)
		if err != nil {
			return 0, fmt.Errorf("backup: %w", err)
		}
		size += n
	}
	if err := out.Sync(); err != nil {
		return 0, fmt.Errorf("backup: %w", err)
	}
	return size, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("backup: sync %s: %w", dir, err)
	}
	return nil
}

// sourceNodes returns the cluster's nodes in shard order, as the master reports them
// (itself first, then its nodes in shard order).
func sourceNodes(ctx context.Context, cl *client.Client) ([]string, error) {
	procs, err := cl.Status(ctx)
	if err != nil {
		return nil, err
	}
	var nodes []string
	for _, p := range procs {
		if p.Role == "node" {
			nodes = append(nodes, p.Name)
		}
	}
	if len(nodes) == 0 {
		return nil, errors.New("backup: the master reports no nodes")
	}
	return nodes, nil
}

// scanPage reads one page from just after the last key at ts (0: a fresh timestamp, which
// becomes the backup's), retrying what is safe to retry at the same timestamp.
func scanPage(ctx context.Context, cl *client.Client, from []byte, ts uint64, opts Options) ([]client.KeyValue, uint64, bool, error) {
	for attempt := 0; ; attempt++ {
		page, v, more, err := cl.ScanPage(ctx, from, nil, opts.PageKeys, client.ScanAt(ts), client.ScanPageBytes(opts.PageBytes))
		if err == nil {
			return page, v, more, nil
		}
		var ce *client.Error
		if attempt >= opts.Retries || !errors.As(err, &ce) || !ce.Retryable() || ctx.Err() != nil {
			return nil, 0, false, err
		}
		select {
		case <-ctx.Done():
			return nil, 0, false, err
		case <-time.After(time.Duration(attempt+1) * 100 * time.Millisecond):
		}
	}
}
