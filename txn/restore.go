package txn

import (
	"context"
	"fmt"
	"math"
	"strings"

	"github.com/kvtx/kvtx/kv"
	"github.com/kvtx/kvtx/wire"
)

// MaxRestoreKeys bounds the keys of one RestoreRequest; its keys and values together are
// bounded by max_txn_bytes, as a transaction's are.
const MaxRestoreKeys = 10_000

// RestoreStorage is what a participant needs of its shard to serve a restore; *kv.Store
// implements it. A store without it refuses restores.
type RestoreStorage interface {
	RestoreState() (kv.RestoreState, error)
	Restore(ctx context.Context, vals []kv.Value) error
}

var _ RestoreStorage = (*kv.Store)(nil)

// RestoreBegin opens the restore of a backup taken at req.BackupTS: it asks every node what
// it holds and refuses with CodeNotEmpty when one holds a lock or a prepared transaction, or
// (unless req.Force) any version of any key; then it makes its oracle durably observe
// BackupTS, so that every timestamp it hands out afterwards, and so every later write's
// version, is above the backup's. Nothing else changes, so it is safe to repeat.
func (c *Coordinator) RestoreBegin(ctx context.Context, req *wire.RestoreBeginRequest) (*wire.RestoreBeginReply, error) {
	if req.BackupTS == 0 || req.BackupTS > math.MaxUint64/2 {
		return nil, wire.Errorf(wire.CodeBadRequest, "restore of a backup at timestamp %d: want one in [1, 2^63]", req.BackupTS)
	}
	names := c.cfg.Shards.Names()
	states := make([]wire.RestoreNodeState, len(names))
	errs := make([]error, len(names))
	fanOut(c.cfg.Runtime, len(names), func(i int) {
		var rep wire.RestoreBeginReply
		err := c.call(ctx, names[i], &wire.RestoreBeginRequest{BackupTS: req.BackupTS}, &rep)
		if err == nil && len(rep.Nodes) != 1 {
			err = wire.Errorf(wire.CodeInternal, "%s described %d nodes, want itself", names[i], len(rep.Nodes))
		}
		if err != nil {
			errs[i] = readError(names[i], err)
			return
		}
		states[i] = rep.Nodes[0]
		states[i].Name = names[i]
	})
	if err := firstError(errs); err != nil {
		return nil, err
	}
	var locked, holding []string
	for _, st := range states {
		if st.Locks > 0 || st.Prepared > 0 {
			locked = append(locked, fmt.Sprintf("%s (%d locks, %d prepared transactions)", st.Name, st.Locks, st.Prepared))
		}
		if st.HasData {
			holding = append(holding, st.Name)
		}
	}
	if len(locked) > 0 {
		return nil, wire.Errorf(wire.CodeNotEmpty, "the cluster is running transactions: %s; restore into a cluster at rest", strings.Join(locked, ", "))
	}
	if len(holding) > 0 && !req.Force {
		return nil, wire.Errorf(wire.CodeNotEmpty, "the cluster holds data (keys on %s): restore into an empty cluster, or force the restore to write the backup over it", strings.Join(holding, ", "))
	}
	if err := c.oracle.Observe(ctx, req.BackupTS); err != nil {
		return nil, wire.Errorf(wire.CodeInternal, "raise the oracle above the backup's timestamp %d: %v", req.BackupTS, err)
	}
	c.log.Info("restore begun", "backup_ts", req.BackupTS, "force", req.Force, "nodes_with_data", len(holding))
	return &wire.RestoreBeginReply{Nodes: states, OracleTS: c.oracle.Last()}, nil
}

// Restore writes a batch of a backup: each key at its own version, routed by this cluster's
// shard map, whatever the shard map of the cluster the backup came from. It refuses a batch
// for a restore that RestoreBegin has not opened (its oracle is below BackupTS), over the
// limits, or with a version outside [1, BackupTS], before anything is written; it replies
// once every node has made its part durable. A batch that fails may have been written in
// part, on some nodes: send it again.
func (c *Coordinator) Restore(ctx context.Context, req *wire.RestoreRequest) (*wire.RestoreReply, error) {
	if err := checkRestore(c.cfg.Limits, req); err != nil {
		return nil, err
	}
	if last := c.oracle.Last(); req.BackupTS > last {
		return nil, wire.Errorf(wire.CodeBadRequest, "restore at timestamp %d not begun: the oracle is at %d (RestoreBegin first)", req.BackupTS, last)
	}
	names := c.cfg.Shards.Names()
	parts := make([][]wire.KeyValue, len(names))
	for _, v := range req.Values {
		s := c.cfg.Shards.Shard(v.Key)
		parts[s] = append(parts[s], v)
	}
	var busy []int
	for s := range parts {
		if len(parts[s]) > 0 {
			busy = append(busy, s)
		}
	}
	errs := make([]error, len(busy))
	written := make([]int, len(busy))
	fanOut(c.cfg.Runtime, len(busy), func(i int) {
		s := busy[i]
		var rep wire.RestoreReply
		if err := c.call(ctx, names[s], &wire.RestoreRequest{BackupTS: req.BackupTS, Values: parts[s]}, &rep); err != nil {
			errs[i] = restoreError(names[s], err)
			return
		}
		written[i] = rep.Keys
	})
	if err := firstError(errs); err != nil {
		return nil, err
	}
	total := 0
	for _, n := range written {
		total += n
	}
	return &wire.RestoreReply{Keys: total}, nil
}

// restoreError names the node a restore batch failed on.
func restoreError(node string, err error) error {
	werr, ok := readError(node, err).(*wire.Error)
	if !ok {
		return err
	}
	out := *werr
	out.Message = fmt.Sprintf("restore on %s: %s", node, werr.Message)
	return &out
}

// checkRestore checks a restore batch against l: at most MaxRestoreKeys keys and
// max_txn_bytes of keys and values, every key and value within its limit, every version in
// [1, BackupTS].
func checkRestore(l Limits, req *wire.RestoreRequest) error {
	if req.BackupTS == 0 {
		return wire.Errorf(wire.CodeBadRequest, "restore batch without the backup's timestamp")
	}
	if len(req.Values) > MaxRestoreKeys {
		return wire.Errorf(wire.CodeTooLarge, "restore batch of %d keys exceeds the limit of %d", len(req.Values), MaxRestoreKeys)
	}
	total := 0
	for _, v := range req.Values {
		if err := checkKey(l, v.Key); err != nil {
			return err
		}
		if len(v.Value) > l.MaxValueBytes {
			return wire.Errorf(wire.CodeTooLarge, "value of %d bytes for key %q exceeds the limit of %d bytes (max_value_bytes)", len(v.Value), shortKey(v.Key), l.MaxValueBytes)
		}
		if v.Version == 0 || v.Version > req.BackupTS {
			return wire.Errorf(wire.CodeBadRequest, "key %q at version %d: a backup at %d holds versions 1 to %d", shortKey(v.Key), v.Version, req.BackupTS, req.BackupTS)
		}
		total += len(v.Key) + len(v.Value)
	}
	if total > l.MaxTxnBytes {
		return wire.Errorf(wire.CodeTooLarge, "restore batch of %d bytes exceeds the limit of %d bytes (max_txn_bytes)", total, l.MaxTxnBytes)
	}
	return nil
}

// restoreStore returns the node's store as a RestoreStorage, or an error for one that is not.
func (p *Participant) restoreStore() (RestoreStorage, error) {
	rs, ok := p.cfg.Store.(RestoreStorage)
	if !ok {
		return nil, wire.Errorf(wire.CodeUnknownMessage, "node %s cannot restore: its store does not support it", p.cfg.Name)
	}
	return rs, nil
}

// restoreBegin reports what this node holds.
func (p *Participant) restoreBegin() (*wire.RestoreBeginReply, error) {
	rs, err := p.restoreStore()
	if err != nil {
		return nil, err
	}
	st, err := rs.RestoreState()
	if err != nil {
		return nil, storeError(err)
	}
	return &wire.RestoreBeginReply{Nodes: []wire.RestoreNodeState{{Name: p.cfg.Name, HasData: st.HasData, Locks: st.Locks, Prepared: st.Prepared}}}, nil
}

// restore writes this node's part of a restore batch, checked again as the master did, and
// replies once it is durable.
func (p *Participant) restore(ctx context.Context, req *wire.RestoreRequest) (*wire.RestoreReply, error) {
	rs, err := p.restoreStore()
	if err != nil {
		return nil, err
	}
	if err := checkRestore(p.cfg.Limits, req); err != nil {
		return nil, err
	}
	if err := p.checkTS(ctx, "backup timestamp", req.BackupTS); err != nil {
		return nil, err
	}
	vals := make([]kv.Value, len(req.Values))
	for i, v := range req.Values {
		if err := p.checkShard(v.Key); err != nil {
			return nil, err
		}
		vals[i] = kv.Value{Key: v.Key, Value: v.Value, Version: v.Version, Found: true}
	}
	if err := rs.Restore(ctx, vals); err != nil {
		return nil, storeError(err)
	}
	return &wire.RestoreReply{Keys: len(vals)}, nil
}
