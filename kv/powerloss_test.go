package kv

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/kvtx/kvtx/cmd/lossyfs/lossy"
)

func TestMain(m *testing.M) {
	if os.Getenv(powerLossEnv) != "" {
		os.Exit(powerLossChild())
	}
	os.Exit(m.Run())
}

// TestPowerLossKeepsEveryAcknowledgedWrite runs the real store on a file system that forgets
// every write not made durable by an fsync (lossyfs), with random Applies (with compares, and
// compare-only), Prepares, Commits, CommitNoSyncs, Syncs, Aborts and Gets from concurrent
// goroutines in a child process, small values and values at and under Badger's value-log
// threshold, memtables and value-log files small enough to rotate. At a random instant it
// SIGKILLs the child and cuts the power, reopens the store and checks:
//   - every call that returned nil is fully there: an Apply's writes at its commit timestamp,
//     a Prepare still prepared (or finished by a Commit or Abort that had begun), a Commit's
//     writes, an Abort's absence; a CommitNoSync once a later Sync returned;
//   - nothing is half there: every version in the store belongs to a transaction all of whose
//     writes are there at that version;
//   - no reply depended on a write that is gone: each value a Get returned, each value a failed
//     compare reported, and each value or version a compare-only Apply saw hold, is in the
//     store at that version.
//
// It repeats for KVTX_POWERLOSS_CYCLES cycles (default 3) on the same store, each starting
// from what the last one left; KVTX_POWERLOSS_SEED replays a run.
func TestPowerLossKeepsEveryAcknowledgedWrite(t *testing.T) {
	if err := lossy.Available(); err != nil {
		t.Fatal(err)
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("KVTX_POWERLOSS_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	cycles := 3
	if s := os.Getenv("KVTX_POWERLOSS_CYCLES"); s != "" {
		cycles, _ = strconv.Atoi(s)
	}
	t.Logf("seed %d (KVTX_POWERLOSS_SEED replays it), %d cycles", seed, cycles)
	rng := rand.New(rand.NewPCG(seed, 0))

	bin, err := lossy.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	mnt := t.TempDir()
	fs, err := lossy.Start(bin, t.TempDir(), mnt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := fs.Stop(); err != nil {
			t.Error(err)
		}
	})
	dir := filepath.Join(mnt, "store")
	h := newPLHistory()
	for cycle := range cycles {
		run := time.Duration(300+rng.IntN(1700)) * time.Millisecond
		redo := filepath.Join(t.TempDir(), "redo")
		h.writeRedo(t, redo)
		events := runPowerLossChild(t, dir, redo, seed+uint64(cycle), uint64(cycle+1)*1_000_000_000, run)
		sum, err := fs.Crash()
		if err != nil {
			t.Fatalf("cycle %d: power cut: %v", cycle, err)
		}
		h.add(events)
		t.Logf("cycle %d: killed after %v, %d calls logged; power cut: %+v", cycle, run, len(events), sum)
		h.check(t, dir)
		if t.Failed() {
			return
		}
	}
	t.Logf("checked: %s", h.counts())
}

// runPowerLossChild runs the child on dir for d, SIGKILLs it and returns what it logged.
func runPowerLossChild(t *testing.T, dir, redo string, seed, base uint64, d time.Duration) []plEvent {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), powerLossEnv+"="+dir, powerLossRedoEnv+"="+redo,
		powerLossSeedEnv+"="+strconv.FormatUint(seed, 10), powerLossBaseEnv+"="+strconv.FormatUint(base, 10))
	// A pipe of our own, not cmd.StdoutPipe: Wait closes that one as soon as the child exits,
	// which can drop the last lines the child wrote before the reader got them, and the
	// checks would then miss calls that happened.
	stdout, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdout.Close()
	cmd.Stdout, cmd.Stderr = w, os.Stderr
	err = cmd.Start()
	w.Close() // the child holds the write end now
	if err != nil {
		t.Fatal(err)
	}
	lines := make(chan []plEvent, 1)
	go func() {
		var evs []plEvent
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var e plEvent
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				break // a line cut by the kill
			}
			evs = append(evs, e)
		}
		lines <- evs
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		t.Fatalf("the power-loss child exited before it was killed: %v", err)
	case <-time.After(d):
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-exited
	return <-lines
}

// plTxn is what the log says of one transaction.
type plTxn struct {
	id       uint64
	call     string // apply or prepare
	ops      []plOp
	cmps     []plCmp
	acked    bool   // the Apply or Prepare returned nil
	failed   string // its error class, if it returned one
	applyTS  uint64 // an acked Apply's commit timestamp
	finish   string // the Commit, CommitNoSync or Abort begun for a prepared one ("" if none)
	finishTS uint64
	finished bool // that call returned nil
	synced   bool // a Sync began after an acked CommitNoSync and returned nil
}

// plHistory accumulates every cycle's log.
type plHistory struct {
	txns      map[uint64]*plTxn
	reads     []plReply           // states a reply reported: Get values and failed compares' actual values
	seen      []plCmp             // compares a compare-only Apply reported holding
	noSync    []uint64            // acked CommitNoSyncs of the cycle
	redo      map[uint64]plFinish // decisions to send again, for transactions prepared again
	checked   int                 // acknowledged calls checked, over all cycles
	prepLeft  int                 // transactions found still prepared after the last cut
	versions  int                 // versions found in the store after the last cut
	ackedTxns int
}

func newPLHistory() *plHistory {
	return &plHistory{txns: map[uint64]*plTxn{}, redo: map[uint64]plFinish{}}
}

// plFinish is a decision the coordinator sends again for a transaction prepared again after a
// power cut: commit (with or without a sync) at ts, or abort.
type plFinish struct {
	call string
	ts   uint64
}

// comes reports whether a decision to be sent again commits a write of key (at version, unless
// 0; with the value of digest, unless ""): the store does not hold it yet, but will.
func (h *plHistory) comes(key string, version uint64, digest string) bool {
	for id, f := range h.redo {
		if f.call == "abort" || version != 0 && f.ts != version {
			continue
		}
		for _, op := range h.txns[id].ops {
			if op.Key == key && !op.Del && (digest == "" || plDigest(plValue(id, key, op.Size)) == digest) {
				return true
			}
		}
	}
	return false
}

// writeRedo writes the decisions to be sent again for the next child, one "id call ts" a line.
func (h *plHistory) writeRedo(t *testing.T, path string) {
	t.Helper()
	var b strings.Builder
	for id, f := range h.redo {
		fmt.Fprintf(&b, "%d %s %d\n", id, f.call, f.ts)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (h *plHistory) add(events []plEvent) {
	h.noSync = h.noSync[:0]
	covers := map[uint64][]uint64{} // Sync call → the acked CommitNoSyncs before it began
	for _, e := range events {
		switch e.Call {
		case "apply", "prepare":
			if e.Begin {
				h.txns[e.ID] = &plTxn{id: e.ID, call: e.Call, ops: e.Ops, cmps: e.Cmps}
				continue
			}
			tx := h.txns[e.ID]
			if e.Err != "" {
				tx.failed = e.Err
				if e.Err == "cmp" {
					h.reads = append(h.reads, plReply{plRead: e.Reads[0], from: fmt.Sprintf("%s %d's failed compare", e.Call, e.ID)})
				}
				continue
			}
			tx.acked = true
			if e.Call == "apply" {
				tx.applyTS = e.Res
				if len(tx.ops) == 0 {
					h.seen = append(h.seen, tx.cmps...)
				}
			}
		case "commit", "commitnosync", "abort":
			tx := h.txns[e.ID]
			if tx == nil { // a transaction recovered from an earlier cycle's log
				panic(fmt.Sprintf("finish of unknown transaction %d", e.ID))
			}
			if e.Begin {
				tx.finish, tx.finishTS, tx.finished, tx.synced = e.Call, e.TS, false, false
				continue
			}
			if e.Err == "" {
				tx.finished = true
				if e.Call == "commitnosync" {
					h.noSync = append(h.noSync, tx.id)
				}
			}
		case "sync":
			if e.Begin {
				covers[e.ID] = slices.Clone(h.noSync)
			} else if e.Err == "" {
				for _, id := range covers[e.ID] {
					h.txns[id].synced = true
				}
			}
		case "get":
			if !e.Begin && e.Err == "" {
				for _, r := range e.Reads {
					h.reads = append(h.reads, plReply{plRead: r, from: fmt.Sprintf("get %d at %d", e.ID, e.TS)})
				}
			}
		}
	}
}

// plReply is a state of a key that the reply of call from reported.
type plReply struct {
	plRead
	from string
}

// plVersion is one version of a user key found in the store.
type plVersion struct {
	key     string
	ts      uint64
	deleted bool
	value   []byte
}

// check opens the store in dir after a power cut and checks it against the history.
func (h *plHistory) check(t *testing.T, dir string) {
	t.Helper()
	s, err := Open(plStoreOptions(dir))
	if err != nil {
		t.Fatalf("the store does not open after a power cut: %v", err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			t.Errorf("close after checking: %v", err)
		}
	}()
	versions := h.readVersions(t, s)
	prepared := map[uint64]bool{}
	for _, p := range s.Prepared() {
		prepared[p.TxnID] = true
	}
	h.prepLeft, h.versions = len(prepared), len(versions)

	// Every version belongs to a logged transaction, which is there whole at that version.
	byKey := map[string][]plVersion{}
	at := map[uint64]uint64{} // transaction id → the version its writes are at
	for _, v := range versions {
		byKey[v.key] = append(byKey[v.key], v)
		if v.deleted {
			continue
		}
		id, ok := plValueID(v.value)
		tx := h.txns[id]
		if !ok || tx == nil {
			t.Errorf("version %d of %s holds a value no logged transaction wrote (%.40q)", v.ts, v.key, v.value)
			continue
		}
		if prev, ok := at[id]; ok && prev != v.ts {
			t.Errorf("transaction %d's writes are at two versions, %d and %d", id, prev, v.ts)
		}
		at[id] = v.ts
	}
	claimed := map[[2]any]bool{} // (key, ts) of every version some present transaction wrote
	for id, ts := range at {
		tx := h.txns[id]
		for _, op := range tx.ops {
			claimed[[2]any{op.Key, ts}] = true
			v, ok := versionAt(byKey[op.Key], ts)
			switch {
			case !ok:
				t.Errorf("transaction %d is half there: its write of %s at %d is missing", id, op.Key, ts)
			case op.Del != v.deleted || !op.Del && string(v.value) != string(plValue(id, op.Key, op.Size)):
				t.Errorf("transaction %d's write of %s at %d is not what it wrote", id, op.Key, ts)
			}
		}
		if prepared[id] {
			t.Errorf("transaction %d is both prepared and committed at %d", id, ts)
		}
		if tx.call == "apply" && tx.acked && tx.applyTS != ts {
			t.Errorf("apply %d acknowledged at %d is at %d", id, tx.applyTS, ts)
		}
		if tx.call == "prepare" && (tx.finish == "abort" || tx.finish == "" || tx.finishTS != ts) {
			t.Errorf("prepared transaction %d is committed at %d, but the log has %q at %d", id, ts, tx.finish, tx.finishTS)
		}
		if tx.failed != "" && tx.failed != "other" { // these fail before anything is written
			t.Errorf("transaction %d failed (%s) but its writes are at %d", id, tx.failed, ts)
		}
	}
	for _, v := range versions {
		if v.deleted && !claimed[[2]any{v.key, v.ts}] {
			t.Errorf("a delete of %s at %d belongs to no transaction that is there: half of a transaction", v.key, v.ts)
		}
	}

	// Every acknowledged call is there.
	for id, tx := range h.txns {
		_, present := at[id]
		switch {
		case tx.call == "apply" && tx.acked && len(tx.ops) > 0:
			h.checked++
			if !present {
				t.Errorf("apply %d acknowledged at %d is lost", id, tx.applyTS)
			}
		case tx.call == "prepare" && tx.acked:
			h.checked++
			switch {
			case tx.finish == "" && !prepared[id]:
				t.Errorf("prepare %d acknowledged, never finished, is not prepared after the power cut (committed: %v)", id, present)
			case tx.finish == "abort" && tx.finished && (prepared[id] || present):
				t.Errorf("abort %d acknowledged, but the transaction is prepared %v, present %v", id, prepared[id], present)
			case tx.finish == "commit" && tx.finished && !present:
				t.Errorf("commit %d at %d acknowledged (synced) is lost (prepared: %v)", id, tx.finishTS, prepared[id])
			case tx.finish == "commitnosync" && tx.finished && !present && !prepared[id]:
				t.Errorf("commit %d at %d applied without a sync is neither there nor prepared again", id, tx.finishTS)
			case tx.finish == "commitnosync" && tx.synced && !present:
				t.Errorf("commit %d at %d, synced by a later Sync, is lost (prepared: %v)", id, tx.finishTS, prepared[id])
			}
		}
	}
	clear(h.redo)
	for id := range prepared {
		tx := h.txns[id]
		if tx == nil || tx.call != "prepare" || !tx.acked && tx.failed != "" {
			t.Errorf("transaction %d is prepared after the power cut but was never prepared (or its Prepare failed)", id)
			continue
		}
		// Prepared again. A Commit or Abort that had begun was decided by the coordinator, which
		// keeps its decision until a Sync confirms it and sends it again: the next cycle's child
		// does that, at the same commit timestamp. Until then, what readers saw of a commit
		// applied without a sync is still to come.
		if tx.finish != "" {
			h.redo[id] = plFinish{call: tx.finish, ts: tx.finishTS}
		}
		tx.finish, tx.finishTS, tx.finished, tx.synced = "", 0, false, false
	}
	// A Prepare that returned nothing and left nothing is gone for good: it can no longer be
	// prepared, and its outcome is settled (not there).

	// No reply depended on a write that is gone.
	for _, r := range h.reads {
		if !r.Found {
			continue // "missing" is not tied to a version that could be checked
		}
		h.checked++
		v, ok := versionAt(byKey[r.Key], r.Version)
		if (!ok || v.deleted || plDigest(v.value) != r.Digest) && !h.comes(r.Key, r.Version, r.Digest) {
			t.Errorf("%s reported %s at version %d (value %s), which the store does not hold after the power cut", r.from, r.Key, r.Version, r.Digest)
		}
	}
	for _, c := range h.seen {
		switch c.Kind {
		case CmpValueEqual:
			h.checked++
			if !slices.ContainsFunc(byKey[c.Key], func(v plVersion) bool { return !v.deleted && plDigest(v.value) == c.Digest }) &&
				!h.comes(c.Key, 0, c.Digest) {
				t.Errorf("a compare-only transaction saw %s hold value %s, which no version of it holds after the power cut", c.Key, c.Digest)
			}
		case CmpVersionEqual:
			if c.Version == 0 {
				continue
			}
			h.checked++
			if _, ok := versionAt(byKey[c.Key], c.Version); !ok && !h.comes(c.Key, c.Version, "") {
				t.Errorf("a compare-only transaction saw %s at version %d, which the store does not hold after the power cut", c.Key, c.Version)
			}
		}
	}
	h.reads, h.seen = h.reads[:0], h.seen[:0]
}

// readVersions lists every version of every user key, deletions included.
func (h *plHistory) readVersions(t *testing.T, s *Store) []plVersion {
	t.Helper()
	txn := s.db.NewTransactionAt(math.MaxUint64, false)
	defer txn.Discard()
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{tagData}, AllVersions: true})
	defer it.Close()
	var out []plVersion
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		v := plVersion{key: string(item.Key()[1:]), ts: item.Version(), deleted: item.IsDeletedOrExpired()}
		if !v.deleted {
			var err error
			if v.value, err = valueOf(s.db, item); err != nil {
				t.Fatalf("version %d of %s cannot be read after the power cut: %v", v.ts, v.key, err)
			}
		}
		out = append(out, v)
	}
	return out
}

func versionAt(vs []plVersion, ts uint64) (plVersion, bool) {
	for _, v := range vs {
		if v.ts == ts {
			return v, true
		}
	}
	return plVersion{}, false
}

func (h *plHistory) counts() string {
	var applies, prepares, finished int
	for _, tx := range h.txns {
		if !tx.acked {
			continue
		}
		if tx.call == "apply" {
			applies++
		} else {
			prepares++
		}
		if tx.finished {
			finished++
		}
	}
	return fmt.Sprintf("%d acknowledged applies, %d acknowledged prepares (%d finished), %d acknowledged results and replies checked, %d versions and %d prepared transactions in the store at the end",
		applies, prepares, finished, h.checked, h.versions, h.prepLeft)
}
