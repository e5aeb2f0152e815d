package main

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kvtx/kvtx/cmd/lossyfs/lossy"
)

// The commands end to end: serve prints its ready line, crash forgets what was not durable and
// prints a summary, status answers, SIGTERM unmounts and exits 0.
func TestServeCrashAndSIGTERM(t *testing.T) {
	if err := lossy.Available(); err != nil {
		t.Fatal(err)
	}
	bin, err := lossy.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	backing, mp := t.TempDir(), filepath.Join(t.TempDir(), "mnt")
	if err := os.WriteFile(filepath.Join(backing, "kept"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}

	serve := exec.Command(bin, "serve", "--backing", backing, mp)
	serve.Stderr = os.Stderr
	out, err := serve.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{}) // closed when serve has exited, with waitErr set
	var waitErr error
	go func() { waitErr = serve.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			serve.Process.Kill()
			<-exited
		}
		if mounted, _ := lossy.Mounted(mp); mounted {
			syscall.Unmount(mp, syscall.MNT_DETACH)
		}
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	select {
	case line := <-lines:
		if want := lossy.ReadyLine(backing, mp); line != want {
			t.Fatalf("serve printed %q, want %q", line, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve printed no ready line in 10 s")
	}

	if err := os.WriteFile(filepath.Join(mp, "lost"), []byte("lost"), 0o644); err != nil {
		t.Fatal(err)
	}
	crash, err := exec.Command(bin, "crash", mp).CombinedOutput()
	if err != nil {
		t.Fatalf("crash: %v: %s", err, crash)
	}
	if s := string(crash); !strings.HasPrefix(s, "lossyfs: crashed "+mp+": ") || strings.Count(s, "\n") != 1 {
		t.Errorf("crash printed %q, want one line of summary", s)
	}
	if _, err := os.Stat(filepath.Join(mp, "lost")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lost: %v after the crash, want it gone", err)
	}
	if b, err := os.ReadFile(filepath.Join(mp, "kept")); err != nil || string(b) != "kept" {
		t.Errorf("kept: %q, %v after the crash", b, err)
	}
	if status, err := exec.Command(bin, "status", mp).CombinedOutput(); err != nil ||
		!strings.Contains(string(status), "0 dirty files") {
		t.Errorf("status: %v: %s", err, status)
	}

	serve.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		if waitErr != nil {
			t.Fatalf("serve after SIGTERM: %v", waitErr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve still running 10 s after SIGTERM")
	}
	if mounted, err := lossy.Mounted(mp); err != nil || mounted {
		t.Fatalf("after SIGTERM: mounted=%v, %v", mounted, err)
	}
	if crash, err := exec.Command(bin, "crash", mp).CombinedOutput(); err == nil {
		t.Errorf("crash with no server succeeded: %s", crash)
	}
}
