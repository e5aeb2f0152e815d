package kv

import (
	"log/slog"
	"reflect"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/ristretto/v2/z"
)

// Badger's table builders (a memtable flush, a compaction) take their buffers from an
// allocator pool of the DB, which keeps up to eight allocators between builds and frees one
// only after two seconds without a build: under writes, never. An allocator keeps the buffers
// of the largest table it built, and a flush builds a whole memtable's table, so the pool comes
// to hold eight memtables' worth of buffers (about 1 GiB with 64 MiB memtables), and
// compactions, which take their allocators from it too, hold more. Badger neither exposes the
// pool nor lets it be switched off, so the store reaches it by reflection (builderPool) and
// empties it every drainInterval (drainBuilderPool): a builder then allocates afresh, and the
// garbage collector frees what it used once it is written.

// drainInterval is how often the builder pool is emptied.
const drainInterval = 100 * time.Millisecond

// poolSize is the most allocators Badger's pool keeps.
const poolSize = 8

// builderPool returns db's table-builder allocator pool, or nil if this version of Badger
// keeps it elsewhere (TestBuilderPoolIsReachable fails then). The pool is set when the DB is
// made and never changed, and its methods are safe for concurrent use.
func builderPool(db *badger.DB) *z.AllocatorPool {
	f := reflect.ValueOf(db).Elem().FieldByName("allocPool")
	if !f.IsValid() || f.Type() != reflect.TypeFor[*z.AllocatorPool]() {
		return nil
	}
	return (*z.AllocatorPool)(f.UnsafePointer())
}

// drainBuilderPool empties db's builder pool every drainInterval until db is closed. Without
// the pool (another Badger version) it logs a warning and returns.
func drainBuilderPool(db *badger.DB) {
	pool := builderPool(db)
	if pool == nil {
		slog.Default().Warn("kv: Badger's table-builder pool is out of reach; its memory is not bounded")
		return
	}
	t := time.NewTicker(drainInterval)
	defer t.Stop()
	for range t.C {
		if db.IsClosed() {
			return
		}
		drainPool(pool)
	}
}

// drainPool releases every allocator pool holds, for the garbage collector to free. Get takes a
// pooled one, or makes a small new one when the pool is empty.
func drainPool(pool *z.AllocatorPool) {
	for range poolSize {
		pool.Get(1, "kv-drain").Release()
	}
}
