package txn

import (
	"github.com/kvtx/kvtx/wire"
)

// The request checks that the coordinator makes before it sends anything anywhere, and that a
// participant makes again on what reaches it: both refuse the same requests, with the same
// errors, whoever sends them.

// checkRead checks the keys of a read against l.
func checkRead(l Limits, keys [][]byte) error {
	if len(keys) == 0 {
		return wire.Errorf(wire.CodeBadRequest, "get needs at least one key")
	}
	if len(keys) > l.MaxTxnOps {
		return wire.Errorf(wire.CodeTooLarge, "get of %d keys exceeds the limit of %d (max_txn_ops)", len(keys), l.MaxTxnOps)
	}
	for _, k := range keys {
		if err := checkKey(l, k); err != nil {
			return err
		}
	}
	return nil
}

// checkTxn checks a transaction, or the part of one that a shard executes, against l: it is
// not empty, its operations and compares are of known kinds, and every key, value and the
// whole are within the limits.
func checkTxn(l Limits, cmps []wire.Compare, ops []wire.Op) error {
	n := len(ops) + len(cmps)
	if n == 0 {
		return wire.Errorf(wire.CodeBadRequest, "empty transaction: no operations and no compares")
	}
	if n > l.MaxTxnOps {
		return wire.Errorf(wire.CodeTooLarge, "transaction of %d operations and compares exceeds the limit of %d (max_txn_ops)", n, l.MaxTxnOps)
	}
	total := 0
	for i, op := range ops {
		if op.Kind != wire.OpPut && op.Kind != wire.OpDelete {
			return wire.Errorf(wire.CodeBadRequest, "operation %d: unknown kind %d", i, op.Kind)
		}
		if err := checkKey(l, op.Key); err != nil {
			return err
		}
		if len(op.Value) > l.MaxValueBytes {
			return wire.Errorf(wire.CodeTooLarge, "value of %d bytes for key %q exceeds the limit of %d bytes (max_value_bytes)", len(op.Value), shortKey(op.Key), l.MaxValueBytes)
		}
		if op.Kind == wire.OpDelete && len(op.Value) > 0 {
			return wire.Errorf(wire.CodeBadRequest, "operation %d: a delete carries no value", i)
		}
		total += len(op.Key) + len(op.Value)
	}
	for i, cmp := range cmps {
		if cmp.Kind < wire.CmpValueEqual || cmp.Kind > wire.CmpMissing {
			return wire.Errorf(wire.CodeBadRequest, "compare %d: unknown kind %d", i, cmp.Kind)
		}
		if err := checkKey(l, cmp.Key); err != nil {
			return err
		}
		if len(cmp.Value) > l.MaxValueBytes {
			return wire.Errorf(wire.CodeTooLarge, "compare value of %d bytes exceeds the limit of %d bytes (max_value_bytes)", len(cmp.Value), l.MaxValueBytes)
		}
		total += len(cmp.Key) + len(cmp.Value)
	}
	if total > l.MaxTxnBytes {
		return wire.Errorf(wire.CodeTooLarge, "transaction of %d bytes exceeds the limit of %d bytes (max_txn_bytes)", total, l.MaxTxnBytes)
	}
	return nil
}

// checkKey checks one key against l.
func checkKey(l Limits, k []byte) error {
	if len(k) == 0 {
		return wire.Errorf(wire.CodeBadRequest, "empty key")
	}
	if len(k) > l.MaxKeyBytes {
		return wire.Errorf(wire.CodeTooLarge, "key of %d bytes exceeds the limit of %d bytes (max_key_bytes)", len(k), l.MaxKeyBytes)
	}
	return nil
}

// shortKey returns k for an error message, cut after 32 bytes.
func shortKey(k []byte) string {
	if len(k) > 32 {
		return string(k[:32]) + "…"
	}
	return string(k)
}
