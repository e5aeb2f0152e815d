package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// PeakRSS returns the peak resident set size of process pid in bytes, from VmHWM in
// /proc/PID/status (Linux only).
func PeakRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("bench: peak RSS of process %d: %w", pid, err)
	}
	defer f.Close()
	return parseVmHWM(f, pid)
}

func parseVmHWM(f *os.File, pid int) (int64, error) {
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "VmHWM:") {
			continue
		}
		fields := strings.Fields(strings.TrimPrefix(line, "VmHWM:"))
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, fmt.Errorf("bench: peak RSS of process %d: unexpected line %q", pid, line)
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("bench: peak RSS of process %d: %w", pid, err)
		}
		return kb << 10, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("bench: peak RSS of process %d: %w", pid, err)
	}
	return 0, fmt.Errorf("bench: peak RSS of process %d: no VmHWM line", pid)
}

// clockTicks is USER_HZ, the unit of the CPU times in /proc/PID/stat: 100 on every Linux
// architecture Go supports.
const clockTicks = 100

// CPUTime returns the CPU time (user plus system) that process pid has used so far, from
// /proc/PID/stat (Linux only), with a resolution of 10 ms.
func CPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("bench: CPU time of process %d: %w", pid, err)
	}
	ticks, err := parseStatCPU(string(b))
	if err != nil {
		return 0, fmt.Errorf("bench: CPU time of process %d: %w", pid, err)
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// parseStatCPU returns utime+stime from the contents of /proc/PID/stat. The command name, in
// parentheses, may itself contain spaces and parentheses, so fields are counted after the last
// ')': utime and stime are fields 14 and 15 of the line, the 12th and 13th after it.
func parseStatCPU(stat string) (int64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("no command name in %q", stat)
	}
	f := strings.Fields(stat[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("%d fields after the command name, want at least 13", len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return utime + stime, nil
}

// EtcdServer runs a single-member etcd as a child process, so that the suite can restart it.
// It is not safe for concurrent use.
type EtcdServer struct {
	// Bin is the etcd binary (default "etcd" on $PATH).
	Bin string
	// DataDir holds etcd's data; its parent gets etcd's log file, etcd.log.
	DataDir string
	// ClientAddr and PeerAddr are host:port to listen on.
	ClientAddr, PeerAddr string

	cmd     *exec.Cmd
	exited  chan struct{}
	peakRSS int64 // the highest VmHWM of the processes stopped so far
}

// Start starts etcd and waits until it answers, up to 30 seconds.
func (e *EtcdServer) Start(ctx context.Context) error {
	if e.cmd != nil {
		return errors.New("bench: etcd already started")
	}
	bin := e.Bin
	if bin == "" {
		bin = "etcd"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return fmt.Errorf("bench: etcd binary %q not found (install Debian's etcd-server): %w", bin, err)
	}
	for _, addr := range []string{e.ClientAddr, e.PeerAddr} {
		if !portFree(addr) {
			return fmt.Errorf("bench: cannot start etcd: %s is in use", addr)
		}
	}
	if err := os.MkdirAll(e.DataDir, 0o700); err != nil {
		return fmt.Errorf("bench: etcd data directory: %w", err)
	}
	logPath := filepath.Join(filepath.Dir(e.DataDir), "etcd.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("bench: etcd log: %w", err)
	}
	defer logf.Close()
	client, peer := "http://"+e.ClientAddr, "http://"+e.PeerAddr
	cmd := exec.Command(path,
		"--name", "bench",
		"--data-dir", e.DataDir,
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "bench="+peer,
		"--log-level", "warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("bench: start etcd: %w", err)
	}
	e.cmd, e.exited = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(e.exited) }()

	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-e.exited:
			e.cmd = nil
			return fmt.Errorf("bench: etcd exited at start (%v): see %s", cmd.ProcessState, logPath)
		default:
		}
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := EtcdVersion(sctx, e.ClientAddr)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			e.Stop()
			return fmt.Errorf("bench: etcd did not answer on %s within 30s: %v (see %s)", e.ClientAddr, err, logPath)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// PID is the running etcd's process id, or 0.
func (e *EtcdServer) PID() int {
	if e.cmd == nil {
		return 0
	}
	return e.cmd.Process.Pid
}

// PeakRSS is the highest peak RSS, in bytes, of every etcd process this server has run so far
// (the running one included).
func (e *EtcdServer) PeakRSS() int64 {
	peak := e.peakRSS
	if pid := e.PID(); pid != 0 {
		if rss, err := PeakRSS(pid); err == nil {
			peak = max(peak, rss)
		}
	}
	return peak
}

// Stop stops etcd with SIGTERM, and SIGKILL after 10 seconds. It does nothing if etcd is not
// running.
func (e *EtcdServer) Stop() error {
	if e.cmd == nil {
		return nil
	}
	e.peakRSS = e.PeakRSS()
	e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.exited:
	case <-time.After(10 * time.Second):
		e.cmd.Process.Kill()
		<-e.exited
	}
	e.cmd = nil
	return nil
}

// Restart stops etcd and starts it again on the same data.
func (e *EtcdServer) Restart(ctx context.Context) error {
	if err := e.Stop(); err != nil {
		return err
	}
	return e.Start(ctx)
}

// portFree reports whether addr can be listened on now.
func portFree(addr string) bool {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	l.Close()
	return true
}
