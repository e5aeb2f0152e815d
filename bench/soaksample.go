package bench

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ProcSample is one process at one moment.
type ProcSample struct {
	// Disk is the space its data directory takes on disk, as du counts it: allocated blocks,
	// so that Badger's preallocated, sparse memtable WAL files count for what is written.
	Disk int64 `json:"disk_bytes"`
	// TxnLog is the part of Disk that the transaction log (txn.log, for people) takes.
	TxnLog int64 `json:"txn_log_bytes"`
	// Tables and Memtables count the Badger table (.sst) and memtable WAL (.mem) files in it.
	Tables    int `json:"sst_files"`
	Memtables int `json:"mem_files"`
	// RSS and Anon are VmRSS and RssAnon of /proc/PID/status.
	RSS  int64 `json:"rss_bytes"`
	Anon int64 `json:"rss_anon_bytes"`
	// Heap is the Go heap in use (go_memstats_heap_inuse_bytes), part of Anon.
	Heap int64 `json:"heap_inuse_bytes"`
	// Goroutines is the go_goroutines the process exports.
	Goroutines int `json:"goroutines"`
	// Err says what could not be measured (empty: everything was).
	Err string `json:"error,omitempty"`
}

// Store is the part of the data directory that is not the transaction log: the Badger store,
// its identity file and the like.
func (s ProcSample) Store() int64 { return s.Disk - s.TxnLog }

// sampleProcess measures p; what fails to be measured is left 0 and named in Err.
func sampleProcess(p SoakProcess) ProcSample {
	var s ProcSample
	var errs []error
	var err error
	if s.Disk, s.TxnLog, s.Tables, s.Memtables, err = diskUsage(p.DataDir); err != nil {
		errs = append(errs, err)
	}
	if s.RSS, s.Anon, err = ResidentMemory(p.PID); err != nil {
		errs = append(errs, err)
	}
	if v, err := scrapeGauges(p.MetricsAddr, "go_goroutines", "go_memstats_heap_inuse_bytes"); err != nil {
		errs = append(errs, err)
	} else {
		s.Goroutines, s.Heap = int(v[0]), int64(v[1])
	}
	if err := errors.Join(errs...); err != nil {
		s.Err = err.Error()
	}
	return s
}

// txnLogFile is the transaction log's name in a data directory.
const txnLogFile = "txn.log"

// diskUsage returns the bytes allocated to the files under dir (st_blocks × 512, as du counts
// them), those of its transaction log, and how many Badger tables and memtable WAL files it
// holds. A file that goes while it walks (Badger deletes tables after a compaction) is skipped.
func diskUsage(dir string) (bytes, txnLog int64, tables, memtables int, err error) {
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && path != dir {
				return nil
			}
			return err
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		n := info.Size()
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			n = st.Blocks * 512
		}
		bytes += n
		if d.Name() == txnLogFile {
			txnLog += n
		}
		switch filepath.Ext(path) {
		case ".sst":
			tables++
		case ".mem":
			memtables++
		}
		return nil
	})
	if err != nil {
		return 0, 0, 0, 0, fmt.Errorf("bench: disk usage of %s: %w", dir, err)
	}
	return bytes, txnLog, tables, memtables, nil
}

// ResidentMemory returns VmRSS and RssAnon of process pid, in bytes (Linux only).
func ResidentMemory(pid int) (rss, anon int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("bench: memory of process %d: %w", pid, err)
	}
	defer f.Close()
	v, err := parseStatusKB(f, "VmRSS", "RssAnon")
	if err != nil {
		return 0, 0, fmt.Errorf("bench: memory of process %d: %w", pid, err)
	}
	return v[0], v[1], nil
}

// parseStatusKB returns the values, in bytes, of the named "Name:  N kB" lines of a
// /proc/PID/status file, in the order asked; a missing one is an error.
func parseStatusKB(r io.Reader, names ...string) ([]int64, error) {
	out := make([]int64, len(names))
	found := make([]bool, len(names))
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		for i, want := range names {
			if name != want {
				continue
			}
			f := strings.Fields(rest)
			if len(f) != 2 || f[1] != "kB" {
				return nil, fmt.Errorf("unexpected line %q", sc.Text())
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("line %q: %w", sc.Text(), err)
			}
			out[i], found[i] = kb<<10, true
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for i, ok := range found {
		if !ok {
			return nil, fmt.Errorf("no %s line", names[i])
		}
	}
	return out, nil
}

// metricsClient scrapes the processes' metrics.
var metricsClient = &http.Client{Timeout: 5 * time.Second}

// scrapeGauges reads unlabelled metrics from the Prometheus metrics served at addr, in the
// order asked.
func scrapeGauges(addr string, names ...string) ([]float64, error) {
	resp, err := metricsClient.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, fmt.Errorf("bench: scrape %s: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("bench: scrape %s: %s", addr, resp.Status)
	}
	v, err := parseGauges(resp.Body, names...)
	if err != nil {
		return nil, fmt.Errorf("bench: scrape %s: %w", addr, err)
	}
	return v, nil
}

// parseGauges returns the values of unlabelled metrics in a Prometheus text exposition, in the
// order asked; a missing one is an error.
func parseGauges(r io.Reader, names ...string) ([]float64, error) {
	out := make([]float64, len(names))
	found := make([]bool, len(names))
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		for i, want := range names {
			if name == want {
				f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
				if err != nil {
					return nil, fmt.Errorf("%s %q: %w", name, v, err)
				}
				out[i], found[i] = f, true
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for i, ok := range found {
		if !ok {
			return nil, fmt.Errorf("no %s", names[i])
		}
	}
	return out, nil
}

// line is the sample as one log line.
func (s SoakSample) line(names []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "t=%3.0fs ops %d", s.At.Seconds(), s.Ops)
	for i, p := range s.Procs {
		fmt.Fprintf(&b, " | %s store %s (%d sst %d mem) log %s rss %s anon %s heap %s gor %d", names[i], mib(p.Store()), p.Tables, p.Memtables, mib(p.TxnLog), mib(p.RSS), mib(p.Anon), mib(p.Heap), p.Goroutines)
		if i > 0 && i-1 < len(s.Written) {
			fmt.Fprintf(&b, " written %s live %s", mib(s.Written[i-1]), mib(s.Live[i-1]))
		}
		if p.Err != "" {
			fmt.Fprintf(&b, " (%s)", p.Err)
		}
	}
	return b.String()
}

// mib prints bytes in MiB.
func mib(n int64) string { return fmt.Sprintf("%.0fM", float64(n)/(1<<20)) }
