package txn

import (
	"context"
	"testing"

	"github.com/kvtx/kvtx/wire"
)

// A restore batch is refused before RestoreBegin and with a version above the backup's; once
// begun, it routes every key to its node at its own version, the oracle hands out timestamps
// above the backup's, and a second RestoreBegin finds data and refuses unless forced.
func TestRestoreRoutesKeysAtTheirVersionsAndRaisesTheOracle(t *testing.T) {
	c := newTestCluster(t, 3)
	ctx := context.Background()
	const backupTS = 5_000_000
	keys := c.keys("r/")
	batch := &wire.RestoreRequest{BackupTS: backupTS}
	for i, k := range keys {
		batch.Values = append(batch.Values, wire.KeyValue{Key: k, Value: []byte{byte('a' + i)}, Version: uint64(100 + i)})
	}
	if _, err := c.coord.Restore(ctx, batch); wire.CodeOf(err) != wire.CodeBadRequest {
		t.Fatalf("restore before RestoreBegin: %v, want bad_request", err)
	}
	if _, err := c.coord.RestoreBegin(ctx, &wire.RestoreBeginRequest{BackupTS: backupTS}); err != nil {
		t.Fatal(err)
	}
	bad := &wire.RestoreRequest{BackupTS: backupTS, Values: []wire.KeyValue{{Key: keys[0], Value: []byte("x"), Version: backupTS + 1}}}
	if _, err := c.coord.Restore(ctx, bad); wire.CodeOf(err) != wire.CodeBadRequest {
		t.Fatalf("restore of a version above the backup: %v, want bad_request", err)
	}
	rep, err := c.coord.Restore(ctx, batch)
	if err != nil || rep.Keys != len(keys) {
		t.Fatalf("restore: %+v %v, want %d keys", rep, err, len(keys))
	}
	got, err := c.coord.Get(ctx, &wire.GetRequest{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	if got.ReadTS <= backupTS {
		t.Fatalf("read timestamp %d after the restore is not above the backup's %d", got.ReadTS, backupTS)
	}
	for i, v := range got.Values {
		if !v.Found || v.Version != uint64(100+i) || string(v.Value) != string(rune('a'+i)) {
			t.Fatalf("key %s: %+v, want %q at version %d", keys[i], v, string(rune('a'+i)), 100+i)
		}
	}
	if _, err := c.coord.RestoreBegin(ctx, &wire.RestoreBeginRequest{BackupTS: backupTS}); wire.CodeOf(err) != wire.CodeNotEmpty {
		t.Fatalf("RestoreBegin into a cluster with data: %v, want not_empty", err)
	}
	if _, err := c.coord.RestoreBegin(ctx, &wire.RestoreBeginRequest{BackupTS: backupTS, Force: true}); err != nil {
		t.Fatalf("forced RestoreBegin: %v", err)
	}
}
