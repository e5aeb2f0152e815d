package lossy_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	badger "github.com/dgraph-io/badger/v4"
	"golang.org/x/sys/unix"

	"github.com/kvtx/kvtx/cmd/lossyfs/lossy"
)

// helperEnv, set in a child's environment, makes the test binary a scripted helper instead of
// running tests: it reads commands from standard input and answers each with one line.
const helperEnv = "LOSSYFS_TEST_HELPER"

var (
	bin      string // the lossyfs binary, built once
	setupErr error  // why bin could not be had; every test fails with it
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(runHelper(os.Stdin, os.Stdout))
	}
	dir, err := os.MkdirTemp("", "lossyfs-bin-")
	if err != nil {
		setupErr = err
	} else if setupErr = lossy.Available(); setupErr == nil {
		bin, setupErr = lossy.Build(dir)
	}
	code := m.Run()
	if dir != "" {
		os.RemoveAll(dir)
	}
	os.Exit(code)
}

// fixture is one lossyfs server over a fresh backing directory.
type fixture struct {
	t       *testing.T
	backing string
	mp      string
	proc    *lossy.Process
}

// mount starts a server over a backing directory prepared by fill (may be nil), and stops it,
// checking that nothing stays mounted, when the test ends.
func mount(t *testing.T, fill func(backing string)) *fixture {
	t.Helper()
	if setupErr != nil {
		t.Fatal(setupErr)
	}
	fx := &fixture{t: t, backing: t.TempDir(), mp: filepath.Join(t.TempDir(), "mnt")}
	if fill != nil {
		fill(fx.backing)
	}
	p, err := lossy.Start(bin, fx.backing, fx.mp)
	if err != nil {
		t.Fatal(err)
	}
	fx.proc = p
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Error(err)
		}
		if mounted, err := lossy.Mounted(fx.mp); err != nil || mounted {
			t.Errorf("after Stop: mounted=%v, %v", mounted, err)
		}
	})
	return fx
}

// path returns the path of rel on the mount.
func (fx *fixture) path(rel string) string { return filepath.Join(fx.mp, rel) }

func (fx *fixture) crash() lossy.Summary {
	fx.t.Helper()
	sum, err := fx.proc.Crash()
	if err != nil {
		fx.t.Fatal(err)
	}
	fx.t.Logf("crash: %v", sum)
	return sum
}

func (fx *fixture) status() lossy.Status {
	fx.t.Helper()
	st, err := fx.proc.Status()
	if err != nil {
		fx.t.Fatal(err)
	}
	return st
}

// writeFile creates (or truncates) path with data, fsyncs it if sync, and closes it.
func writeFile(t *testing.T, path string, data []byte, sync bool) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// durableFile writes path with data and makes it and its name durable.
func durableFile(t *testing.T, path string, data []byte) {
	t.Helper()
	writeFile(t, path, data, true)
	syncDir(t, filepath.Dir(path))
}

func writeAt(t *testing.T, path string, data []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
}

func syncDir(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

func mkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

func rename(t *testing.T, from, to string) {
	t.Helper()
	if err := os.Rename(from, to); err != nil {
		t.Fatal(err)
	}
}

func remove(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}

// wantFile fails unless path holds exactly want.
func wantFile(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: got %d bytes %s, want %d bytes %s", path, len(got), summarize(got), len(want), summarize(want))
	}
}

// summarize shows bytes as runs, "a×4096 b×10", so a mismatch in a page reads at a glance.
func summarize(b []byte) string {
	var parts []string
	for i := 0; i < len(b); {
		j := i
		for j < len(b) && b[j] == b[i] {
			j++
		}
		c := string(b[i])
		if b[i] < 0x20 || b[i] > 0x7e {
			c = fmt.Sprintf("\\x%02x", b[i])
		}
		parts = append(parts, fmt.Sprintf("%s×%d", c, j-i))
		i = j
		if len(parts) > 12 {
			parts = append(parts, "…")
			break
		}
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func wantMissing(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s: want it gone, got %v", path, err)
	}
}

func fill(c byte, n int) []byte { return bytes.Repeat([]byte{c}, n) }

func concat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// child is a helper process (this test binary with helperEnv set) driven line by line: it can
// mmap files on the mount and run Badger there, and the test can SIGKILL it at any point.
type child struct {
	t   *testing.T
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func startChild(t *testing.T) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{t: t, cmd: cmd, in: in, out: bufio.NewReader(out)}
	t.Cleanup(c.kill)
	return c
}

// do sends one command and returns the reply's payload, failing the test on an error reply.
func (c *child) do(format string, args ...any) string {
	c.t.Helper()
	if _, err := fmt.Fprintf(c.in, format+"\n", args...); err != nil {
		c.t.Fatalf("helper: %v", err)
	}
	line, err := c.out.ReadString('\n')
	if err != nil {
		c.t.Fatalf("helper: %s: no reply: %v", fmt.Sprintf(format, args...), err)
	}
	line = strings.TrimSpace(line)
	rest, ok := strings.CutPrefix(line, "ok")
	if !ok {
		c.t.Fatalf("helper: %s: %s", fmt.Sprintf(format, args...), line)
	}
	return strings.TrimSpace(rest)
}

// kill SIGKILLs the helper and waits for it, so it holds nothing on the mount afterwards.
func (c *child) kill() {
	if c.cmd.ProcessState != nil {
		return
	}
	c.cmd.Process.Signal(syscall.SIGKILL)
	c.cmd.Wait()
}

// runHelper is the helper process's command loop. Commands:
//
//	open PATH               open PATH read-write
//	mmap LEN                map the first LEN bytes of it shared, read-write
//	poke OFF CHAR N         write N copies of CHAR into the mapping at OFF
//	msync OFF LEN           msync(MS_SYNC) that range of the mapping
//	badger-open DIR         open Badger in DIR with SyncWrites
//	badger-put KEY VALUE    set KEY in its own transaction
//	badger-get KEY          reply "ok VALUE", or "ok -" if KEY is missing
//	badger-close            close Badger
func runHelper(r io.Reader, w io.Writer) int {
	var (
		f   *os.File
		mem []byte
		db  *badger.DB
	)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		args := strings.Fields(sc.Text())
		if len(args) == 0 {
			continue
		}
		reply, err := func() (string, error) {
			num := func(i int) int {
				n, _ := strconv.Atoi(args[i])
				return n
			}
			switch args[0] {
			case "open":
				var err error
				f, err = os.OpenFile(args[1], os.O_RDWR, 0)
				return "", err
			case "mmap":
				var err error
				mem, err = unix.Mmap(int(f.Fd()), 0, num(1), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
				return "", err
			case "poke":
				copy(mem[num(1):], bytes.Repeat([]byte(args[2]), num(3)))
				return "", nil
			case "msync":
				return "", unix.Msync(mem[num(1):num(1)+num(2)], unix.MS_SYNC)
			case "badger-open":
				var err error
				db, err = badger.Open(badger.DefaultOptions(args[1]).WithSyncWrites(true).WithLogger(nil))
				return "", err
			case "badger-put":
				return "", db.Update(func(txn *badger.Txn) error {
					return txn.Set([]byte(args[1]), []byte(args[2]))
				})
			case "badger-get":
				v := "-"
				err := db.View(func(txn *badger.Txn) error {
					item, err := txn.Get([]byte(args[1]))
					if errors.Is(err, badger.ErrKeyNotFound) {
						return nil
					}
					if err != nil {
						return err
					}
					b, err := item.ValueCopy(nil)
					v = string(b)
					return err
				})
				return v, err
			case "badger-close":
				return "", db.Close()
			}
			return "", fmt.Errorf("unknown command %q", args[0])
		}()
		if err != nil {
			fmt.Fprintf(w, "error %s\n", strings.ReplaceAll(err.Error(), "\n", "; "))
		} else {
			fmt.Fprintf(w, "ok %s\n", reply)
		}
	}
	return 0
}

// statOf returns the backing stat of path.
func statOf(t *testing.T, path string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st
}
