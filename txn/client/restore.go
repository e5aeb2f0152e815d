package client

import (
	"context"

	"github.com/kvtx/kvtx/wire"
)

// RestoreBegin opens the restore of a backup taken at backupTS: the master refuses, with an
// error matching ErrNotEmpty, a cluster whose nodes hold any version of any key (unless
// force) or any lock or prepared transaction; otherwise it durably raises its oracle above
// backupTS, so that every later write gets a higher version. It returns what each node held,
// in shard order. Safe to repeat.
func (c *Client) RestoreBegin(ctx context.Context, backupTS uint64, force bool) ([]wire.RestoreNodeState, error) {
	var rep wire.RestoreBeginReply
	if err := c.call(ctx, &wire.RestoreBeginRequest{BackupTS: backupTS, Force: force}, &rep, false); err != nil {
		return nil, err
	}
	return rep.Nodes, nil
}

// Restore writes one batch of a backup taken at backupTS, each key at its own version (Found
// is ignored), after RestoreBegin: the master routes the keys by the cluster's shard map and
// answers once every node has made its part durable. A batch holds at most
// txn.MaxRestoreKeys keys and max_txn_bytes of keys and values. Writing a batch again is
// harmless, so one that failed, even with an unknown outcome, may simply be sent again.
func (c *Client) Restore(ctx context.Context, backupTS uint64, vals []KeyValue) (int, error) {
	var rep wire.RestoreReply
	if err := c.call(ctx, &wire.RestoreRequest{BackupTS: backupTS, Values: vals}, &rep, true); err != nil {
		return 0, err
	}
	return rep.Keys, nil
}
