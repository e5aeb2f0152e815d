package txn

import (
	"bytes"
	"context"
	"slices"

	"github.com/kvtx/kvtx/kv"
	"github.com/kvtx/kvtx/wire"
)

// Page bounds of a scan. A page holds at most MaxScanLimit keys; the master gives each shard
// an equal share of the page's byte budget, so that a page costs the master about
// MaxScanBytes whatever the number of shards (and each shard's reply fits in a frame).
const (
	DefaultScanLimit = 1000
	MaxScanLimit     = 10_000
	MaxScanBytes     = 4 << 20
	minShardBytes    = 64 << 10
)

// checkScan checks a scan's bounds and fills in its page defaults.
func checkScan(l Limits, req *wire.ScanRequest) error {
	for _, k := range [][]byte{req.Start, req.End} {
		if len(k) > l.MaxKeyBytes {
			return wire.Errorf(wire.CodeTooLarge, "scan bound of %d bytes exceeds the key limit of %d bytes (max_key_bytes)", len(k), l.MaxKeyBytes)
		}
	}
	if req.Limit < 0 || req.MaxBytes < 0 {
		return wire.Errorf(wire.CodeBadRequest, "scan limit %d and byte budget %d must not be negative", req.Limit, req.MaxBytes)
	}
	if req.Limit == 0 {
		req.Limit = DefaultScanLimit
	}
	req.Limit = min(req.Limit, MaxScanLimit)
	if req.MaxBytes == 0 || req.MaxBytes > MaxScanBytes {
		req.MaxBytes = MaxScanBytes
	}
	return nil
}

// Scan reads one page of the keys in [Start, End) at one read timestamp across every shard
// and merges them in key order. Each shard reads its part at that timestamp, waiting for the
// locks of transactions that could commit at or below it, so a page never holds half of a
// transaction, and every page read at the same ReadTS sees the same snapshot. The page stops
// at the first key past which some shard has not reported yet; More says keys remain.
func (c *Coordinator) Scan(ctx context.Context, req *wire.ScanRequest) (*wire.ScanReply, error) {
	r := *req
	if err := checkScan(c.cfg.Limits, &r); err != nil {
		return nil, err
	}
	ts, err := c.readTS(ctx, r.ReadTS)
	if err != nil {
		return nil, err
	}
	names := c.cfg.Shards.Names()
	shardReq := wire.ScanRequest{Start: r.Start, End: r.End, ReadTS: ts, Limit: r.Limit, KeysOnly: r.KeysOnly,
		MaxBytes: max(r.MaxBytes/len(names), minShardBytes)}
	pages := make([]wire.ScanReply, len(names))
	errs := make([]error, len(names))
	fanOut(c.cfg.Runtime, len(names), func(i int) {
		if err := c.call(ctx, names[i], &shardReq, &pages[i]); err != nil {
			errs[i] = readError(names[i], err)
		}
	})
	if err := firstError(errs); err != nil {
		return nil, err
	}
	values, more := mergePages(pages, r.Limit, r.MaxBytes)
	return &wire.ScanReply{Values: values, ReadTS: ts, More: more}, nil
}

// mergePages merges the shards' pages of one range (their keys are disjoint) into one page in
// key order: up to the smallest last key of a shard that has more (past it, that shard's keys
// are unknown yet), then cut at limit keys and, after at least one key, at maxBytes.
func mergePages(pages []wire.ScanReply, limit, maxBytes int) ([]wire.KeyValue, bool) {
	var bound []byte
	more := false
	var all []wire.KeyValue
	for _, p := range pages {
		if p.More && len(p.Values) > 0 {
			last := p.Values[len(p.Values)-1].Key
			if !more || bytes.Compare(last, bound) < 0 {
				bound = last
			}
			more = true
		}
		all = append(all, p.Values...)
	}
	slices.SortFunc(all, func(a, b wire.KeyValue) int { return bytes.Compare(a.Key, b.Key) })
	out := all[:0]
	size := 0
	for _, v := range all {
		if more && bytes.Compare(v.Key, bound) > 0 || len(out) >= limit || len(out) > 0 && size >= maxBytes {
			return out, true
		}
		size += len(v.Key) + len(v.Value)
		out = append(out, v)
	}
	return out, more
}

// readTS is the timestamp a read runs at: a fresh one for 0, else ts, which must not be in
// the future (no write can still land at or below a timestamp the oracle has handed out).
func (c *Coordinator) readTS(ctx context.Context, ts uint64) (uint64, error) {
	if ts == 0 {
		var err error
		if ts, err = c.oracle.Next(ctx); err != nil {
			return 0, wire.Errorf(wire.CodeInternal, "allocate read timestamp: %v", err)
		}
	} else if ts > c.oracle.Last() {
		return 0, wire.Errorf(wire.CodeBadRequest, "read timestamp %d is in the future", ts)
	} else if safe := c.safePoint.Load(); ts < safe {
		return 0, wire.Errorf(wire.CodeCompacted, "version %d is compacted: the GC safe point is %d (gc.retention %v)", ts, safe, c.cfg.GCRetention)
	}
	return ts, nil
}

// scan serves a node's part of a scan: its keys of the range, at the master's timestamp.
func (p *Participant) scan(ctx context.Context, req *wire.ScanRequest) (*wire.ScanReply, error) {
	if req.ReadTS == 0 {
		return nil, wire.Errorf(wire.CodeBadRequest, "a node scan needs a read timestamp")
	}
	r := *req
	if err := checkScan(p.cfg.Limits, &r); err != nil {
		return nil, err
	}
	if err := p.checkTS(ctx, "read timestamp", r.ReadTS); err != nil {
		return nil, err
	}
	vals, more, err := p.cfg.Store.Scan(ctx, r.Start, r.End, r.ReadTS, kv.ScanOptions{Limit: r.Limit, MaxBytes: r.MaxBytes, KeysOnly: r.KeysOnly})
	if err != nil {
		return nil, storeError(err)
	}
	out := make([]wire.KeyValue, len(vals))
	for i, v := range vals {
		out[i] = wire.KeyValue{Key: v.Key, Value: v.Value, Version: v.Version, Found: v.Found}
	}
	return &wire.ScanReply{Values: out, ReadTS: r.ReadTS, More: more}, nil
}
