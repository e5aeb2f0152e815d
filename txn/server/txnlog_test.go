package server

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The transaction log has one line per event, in the documented format, with a UTC timestamp
// at microsecond precision that reads back as the time the event was logged.
func TestTxnLogWritesOneTimestampedLinePerEvent(t *testing.T) {
	dir := t.TempDir()
	l, err := openTxnLog(dir, txnLogMaxBytes)
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	l.Event(42, "prepare", []string{"node1", "node2"})
	l.Event(42, "decision", []string{"node1", "node2"}, "outcome=committed", "commit_ts=77")
	// A different second, and a time whose microseconds have leading zeros.
	for _, ts := range []time.Time{time.Date(2026, 1, 2, 3, 4, 5, 7_000, time.UTC), time.Date(2026, 1, 2, 3, 4, 6, 999_999_000, time.FixedZone("x", 3600))} {
		got := string(l.appendTime(nil, ts))
		if want := ts.UTC().Format("2006-01-02T15:04:05.000000Z"); got != want {
			t.Errorf("appendTime(%v) = %q, want %q", ts, got, want)
		}
	}
	l.Event(43, "commit", nil)
	after := time.Now()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, txnLogName))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	want := []string{
		` txn=42 event=prepare shards=node1,node2$`,
		` txn=42 event=decision shards=node1,node2 outcome=committed commit_ts=77$`,
		` txn=43 event=commit$`,
	}
	if len(lines) != len(want) {
		t.Fatalf("log has %d lines, want %d:\n%s", len(lines), len(want), data)
	}
	for i, line := range lines {
		if !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z` + want[i]).MatchString(line) {
			t.Errorf("line %d: %q does not match %q", i, line, want[i])
			continue
		}
		at, err := time.Parse("2006-01-02T15:04:05.000000Z", line[:27])
		if err != nil || at.Before(before.Truncate(time.Microsecond)) || at.After(after) {
			t.Errorf("line %d: time %v (%v) not between %v and %v", i, at, err, before, after)
		}
	}
}

// The log never takes more than twice its limit: past it, txn.log becomes txn.log.1 and a new
// txn.log begins, across a restart too; every line stays whole, and the newest are kept.
func TestTxnLogRotatesAtItsLimit(t *testing.T) {
	dir := t.TempDir()
	const limit = 4 << 10
	l, err := openTxnLog(dir, limit)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 500 { // about 60 bytes a line: several rotations
		l.Event(uint64(i), "prepare", []string{"node1", "node2"})
		if i == 250 { // a restart appends to the log it finds
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if l, err = openTxnLog(dir, limit); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Fatalf("files %v, want txn.log and txn.log.1", entries)
	}
	var last string
	for _, name := range []string{txnLogName + ".1", txnLogName} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if len(data) > limit || len(data) == 0 || data[len(data)-1] != '\n' {
			t.Fatalf("%s holds %d bytes (limit %d), last byte %q", name, len(data), limit, data[len(data)-1:])
		}
		lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
		last = lines[len(lines)-1]
	}
	if !strings.Contains(last, " txn=499 event=prepare") {
		t.Fatalf("the newest line is %q, want txn 499's", last)
	}
}

func BenchmarkTxnLogEvent(b *testing.B) {
	l, err := openTxnLog(b.TempDir(), txnLogMaxBytes)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	shards := []string{"node1", "node2"}
	b.ReportAllocs()
	for b.Loop() {
		l.Event(1234567, "decision", shards, "outcome=committed")
	}
}
