package txn

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// TxnLog is a process's human-readable transaction log, one line per protocol event:
//
//	2026-11-26T09:30:00.123456Z txn=42 event=prepare shards=node1,node2
//
// so that an operator can follow one transaction across the master's and the nodes' logs with
// grep. It is for people, not for recovery: lines are written without fsync. A nil *TxnLog
// writes nothing.
type TxnLog struct {
	mu sync.Mutex
	f  *os.File
	w  *bufio.Writer
}

// TxnLogName is the file name of the transaction log inside a data directory.
const TxnLogName = "txn.log"

// OpenTxnLog opens (appending) the transaction log in dir.
func OpenTxnLog(dir string) (*TxnLog, error) {
	f, err := os.OpenFile(filepath.Join(dir, TxnLogName), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("txn: open transaction log: %w", err)
	}
	return &TxnLog{f: f, w: bufio.NewWriterSize(f, 64<<10)}, nil
}

// Event writes one line: the event name, the transaction and the shards involved, plus
// optional key=value details.
func (l *TxnLog) Event(txnID uint64, event string, shards []string, details ...string) {
	if l == nil {
		return
	}
	var b strings.Builder
	b.WriteString(time.Now().UTC().Format("2006-01-02T15:04:05.000000Z"))
	fmt.Fprintf(&b, " txn=%d event=%s", txnID, event)
	if len(shards) > 0 {
		b.WriteString(" shards=")
		b.WriteString(strings.Join(shards, ","))
	}
	for _, d := range details {
		b.WriteByte(' ')
		b.WriteString(d)
	}
	b.WriteByte('\n')
	l.mu.Lock()
	l.w.WriteString(b.String())
	// Flush at once when nothing else is queued, so the file is current for a reader and a
	// killed process loses at most the lines of one burst.
	l.w.Flush()
	l.mu.Unlock()
}

// Close flushes and closes the log.
func (l *TxnLog) Close() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.w.Flush()
	return l.f.Close()
}
