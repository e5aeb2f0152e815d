package server

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvtx/kvtx/txn"
)

// txnLog is a process's human-readable transaction log, one line per protocol event:
//
//	2026-11-26T09:30:00.123456Z txn=42 event=prepare shards=node1,node2
//
// so that an operator can follow one transaction across the master's and the nodes' logs with
// grep. It is for people, not for recovery: lines are buffered and written at most
// txnLogFlushInterval later (or when the buffer fills), never fsynced, so a killed process
// loses at most its last interval of lines. It takes at most twice maxBytes on disk: past
// maxBytes, txn.log becomes txn.log.1 (replacing the one before) and a new txn.log begins.
type txnLog struct {
	mu       sync.Mutex
	path     string
	f        *os.File
	w        *bufio.Writer
	size     int64 // bytes written to f, buffered ones included
	maxBytes int64
	dirty    bool
	stop     chan struct{}
	done     chan struct{}
	// second caches the formatted date and time of the current second, so that a line
	// formats only its microseconds.
	second atomic.Pointer[formattedSecond]
}

// formattedSecond is "2006-01-02T15:04:05." for the Unix second unix.
type formattedSecond struct {
	unix   int64
	prefix string
}

// txnLogFlushInterval is how often buffered transaction-log lines reach the file.
const txnLogFlushInterval = 100 * time.Millisecond

// txnLogName is the file name of the transaction log inside a data directory.
const txnLogName = "txn.log"

// txnLogMaxBytes is the size at which the transaction log rotates (about 500,000 events).
const txnLogMaxBytes = 64 << 20

var _ txn.TxnLog = (*txnLog)(nil)

// openTxnLog opens (appending) the transaction log in dir, which rotates past maxBytes.
func openTxnLog(dir string, maxBytes int64) (*txnLog, error) {
	l := &txnLog{path: filepath.Join(dir, txnLogName), maxBytes: maxBytes, stop: make(chan struct{}), done: make(chan struct{})}
	if err := l.open(); err != nil {
		return nil, err
	}
	go l.flusher()
	return l, nil
}

// open opens (appending) the file at l.path.
func (l *txnLog) open() error {
	f, err := os.OpenFile(l.path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("server: open transaction log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("server: open transaction log: %w", err)
	}
	l.f, l.size = f, fi.Size()
	if l.w == nil {
		l.w = bufio.NewWriterSize(f, 64<<10)
	} else {
		l.w.Reset(f)
	}
	return nil
}

// rotateLocked moves the full log to txn.log.1 and starts a new one. On failure the log
// goes on in the old file (a log for people is not worth failing a write for).
func (l *txnLog) rotateLocked() {
	l.w.Flush()
	if err := os.Rename(l.path, l.path+".1"); err != nil {
		l.size = 0 // try again after another maxBytes
		return
	}
	old := l.f
	if err := l.open(); err != nil {
		l.size = 0
		return
	}
	old.Close()
}

func (l *txnLog) flusher() {
	defer close(l.done)
	t := time.NewTicker(txnLogFlushInterval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.mu.Lock()
			if l.dirty {
				l.w.Flush()
				l.dirty = false
			}
			l.mu.Unlock()
		}
	}
}

// Event implements txn.TxnLog: it writes one line.
func (l *txnLog) Event(txnID uint64, event string, shards []string, details ...string) {
	var arr [256]byte
	b := l.appendTime(arr[:0], time.Now())
	b = append(b, " txn="...)
	b = strconv.AppendUint(b, txnID, 10)
	b = append(b, " event="...)
	b = append(b, event...)
	for i, s := range shards {
		if i == 0 {
			b = append(b, " shards="...)
		} else {
			b = append(b, ',')
		}
		b = append(b, s...)
	}
	for _, d := range details {
		b = append(b, ' ')
		b = append(b, d...)
	}
	b = append(b, '\n')
	l.mu.Lock()
	if l.size+int64(len(b)) > l.maxBytes {
		l.rotateLocked()
	}
	l.w.Write(b)
	l.size += int64(len(b))
	l.dirty = true
	l.mu.Unlock()
}

// appendTime appends t in UTC as 2006-01-02T15:04:05.000000Z.
func (l *txnLog) appendTime(b []byte, t time.Time) []byte {
	t = t.UTC()
	sec := l.second.Load()
	if sec == nil || sec.unix != t.Unix() {
		sec = &formattedSecond{unix: t.Unix(), prefix: t.Format("2006-01-02T15:04:05.")}
		l.second.Store(sec)
	}
	b = append(b, sec.prefix...)
	us := t.Nanosecond() / 1000
	for div := 100000; div > 0; div /= 10 {
		b = append(b, byte('0'+us/div%10))
	}
	return append(b, 'Z')
}

// Close flushes and closes the log.
func (l *txnLog) Close() error {
	close(l.stop)
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	l.w.Flush()
	return l.f.Close()
}
