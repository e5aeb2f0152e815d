package lossy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// readyTimeout bounds how long Start waits for the server's ready line.
const readyTimeout = 10 * time.Second

// stopTimeout bounds how long Stop waits for the server to exit after SIGTERM before it kills it.
const stopTimeout = 10 * time.Second

// Available returns nil if this process can mount (it is root and /dev/fuse opens), else an
// error of one line saying why. Tests call t.Fatal on it: a missing FUSE is a broken machine,
// not a reason to skip.
func Available() error {
	if uid := os.Geteuid(); uid != 0 {
		return fmt.Errorf("lossyfs: mounting needs root and /dev/fuse: running as uid %d", uid)
	}
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("lossyfs: mounting needs root and /dev/fuse: %w", err)
	}
	return f.Close()
}

// ReadyLine is the line `lossyfs serve` prints once the mount is usable.
func ReadyLine(backing, mountpoint string) string {
	return fmt.Sprintf("lossyfs: serving %s at %s", backing, mountpoint)
}

// Build builds the lossyfs binary into dir and returns its path. It runs `go build` in the
// module root, so it needs the go command and the source tree (as tests have).
func Build(dir string) (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("lossyfs: build: cannot find the source tree")
	}
	bin := filepath.Join(dir, "lossyfs")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/lossyfs")
	cmd.Dir = filepath.Join(filepath.Dir(file), "..", "..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("lossyfs: build: %w\n%s", err, out)
	}
	return bin, nil
}

// Process is a `lossyfs serve` running as a child process.
type Process struct {
	// Backing and Mountpoint are the absolute paths served.
	Backing, Mountpoint string

	cmd    *exec.Cmd
	stderr *tailBuffer
	exited chan struct{} // closed when the process has exited; waitErr is set then
	// waitErr is what Wait returned.
	waitErr error
	stopped sync.Once
	stopErr error
}

// Start starts `bin serve --backing backing mountpoint` and returns once the mount is usable
// (the ready line came, within 10 s). The server's standard error goes to this process's, and
// its last lines into Start's and Stop's errors.
func Start(bin, backing, mountpoint string) (*Process, error) {
	var err error
	p := &Process{stderr: &tailBuffer{max: 8 << 10}, exited: make(chan struct{})}
	if p.Backing, err = filepath.Abs(backing); err != nil {
		return nil, err
	}
	if p.Mountpoint, err = filepath.Abs(mountpoint); err != nil {
		return nil, err
	}
	p.cmd = exec.Command(bin, "serve", "--backing", p.Backing, p.Mountpoint)
	p.cmd.Stderr = io.MultiWriter(os.Stderr, p.stderr)
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("lossyfs: start: %w", err)
	}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		first := true
		for sc.Scan() {
			if first {
				ready <- sc.Text()
				first = false
			}
		}
		if first {
			close(ready)
		}
		io.Copy(io.Discard, out)
	}()
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	want := ReadyLine(p.Backing, p.Mountpoint)
	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	select {
	case line, ok := <-ready:
		if ok && line == want {
			return p, nil
		}
		p.cmd.Process.Kill()
		<-p.exited
		return nil, fmt.Errorf("lossyfs: serve %s did not start (%v, first line %q): %s",
			p.Mountpoint, p.waitErr, line, p.stderr.String())
	case <-timer.C:
		p.Stop()
		return nil, fmt.Errorf("lossyfs: serve %s not ready after %v: %s", p.Mountpoint, readyTimeout, p.stderr.String())
	}
}

// Crash makes the server forget everything not durable (see Server.Crash) and returns once the
// mount shows only the durable state. Kill whatever uses the mount first, and wait for it.
func (p *Process) Crash() (Summary, error) { return RequestCrash(p.Mountpoint) }

// Status reports what the server holds for undo.
func (p *Process) Status() (Status, error) { return RequestStatus(p.Mountpoint) }

// Stop sends SIGTERM, waits for the server to exit (killing it after 10 s), and makes sure
// nothing stays mounted at the mountpoint, detaching lazily what does. It returns an error if the
// server did not exit cleanly. It is safe to call twice.
func (p *Process) Stop() error {
	p.stopped.Do(func() { p.stopErr = p.stop() })
	return p.stopErr
}

func (p *Process) stop() error {
	var errs []error
	select {
	case <-p.exited:
		errs = append(errs, fmt.Errorf("lossyfs: server of %s had exited: %v", p.Mountpoint, p.waitErr))
	default:
		p.cmd.Process.Signal(syscall.SIGTERM)
		timer := time.NewTimer(stopTimeout)
		select {
		case <-p.exited:
			if p.waitErr != nil {
				errs = append(errs, fmt.Errorf("lossyfs: server of %s: %v", p.Mountpoint, p.waitErr))
			}
		case <-timer.C:
			p.cmd.Process.Kill()
			<-p.exited
			errs = append(errs, fmt.Errorf("lossyfs: server of %s ignored SIGTERM for %v", p.Mountpoint, stopTimeout))
		}
		timer.Stop()
	}
	for i := 0; i < 10; i++ {
		mounted, err := Mounted(p.Mountpoint)
		if err != nil {
			errs = append(errs, err)
			break
		}
		if !mounted {
			break
		}
		if err := unix.Unmount(p.Mountpoint, unix.MNT_DETACH); err != nil {
			errs = append(errs, fmt.Errorf("lossyfs: unmount %s: %w", p.Mountpoint, err))
			break
		}
	}
	if sock, err := SocketPath(p.Mountpoint); err == nil {
		os.Remove(sock) // left behind only by a server that did not exit cleanly
	}
	if len(errs) > 0 && p.stderr.Len() > 0 {
		errs = append(errs, fmt.Errorf("server's standard error ends with: %s", p.stderr.String()))
	}
	return errors.Join(errs...)
}

// Mounted reports whether something is mounted at the absolute path mountpoint (in this
// process's mount namespace).
func Mounted(mountpoint string) (bool, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		// Fields: id parent major:minor root mountpoint ...; the mountpoint escapes space, tab,
		// newline and backslash in octal.
		f := strings.Fields(line)
		if len(f) > 4 && unescapeMountinfo(f[4]) == mountpoint {
			return true, nil
		}
	}
	return false, nil
}

func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &c); err == nil {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf bytes.Buffer
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf.Write(p)
	if over := t.buf.Len() - t.max; over > 0 {
		t.buf.Next(over)
	}
	return len(p), nil
}

func (t *tailBuffer) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.buf.Len()
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(t.buf.String())
}
