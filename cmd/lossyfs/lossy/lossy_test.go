package lossy_test

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kvtx/kvtx/cmd/lossyfs/lossy"
)

const page = 4096

func TestWriteAfterFsyncIsForgottenWrittenAndFsyncedSurvives(t *testing.T) {
	fx := mount(t, nil)
	p := fx.path("f")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("hello"); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	syncDir(t, fx.mp)
	if _, err := f.WriteString(", world"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	wantFile(t, p, []byte("hello, world"))

	sum := fx.crash()
	wantFile(t, p, []byte("hello"))
	if sum.FilesRestored != 1 {
		t.Errorf("FilesRestored = %d, want 1", sum.FilesRestored)
	}
}

func TestOverwriteWithoutFsyncRevertsToOldBytes(t *testing.T) {
	fx := mount(t, nil)
	p := fx.path("f")
	old := concat(fill('a', 3*page), fill('z', 100))
	durableFile(t, p, old)

	writeAt(t, p, fill('b', 5000), 2000)      // across the first two pages
	writeAt(t, p, fill('c', 1000), 3*page+50) // the partial last page and past the end
	writeAt(t, p, fill('d', 10), 10*page)     // far past the end
	if st := fx.status(); st.DirtyFiles != 1 || st.SavedBytes != 2*page+100 {
		t.Errorf("status %+v, want 1 dirty file and %d bytes saved", st, 2*page+100)
	}

	fx.crash()
	wantFile(t, p, old)
}

func TestFdatasyncCountsAsFsync(t *testing.T) {
	fx := mount(t, nil)
	p := fx.path("f")
	durableFile(t, p, fill('a', 2*page))
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(fill('b', 3*page), 100); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		t.Fatal(err)
	}
	f.Close()

	fx.crash()
	wantFile(t, p, concat(fill('a', 100), fill('b', 3*page)))
}

// The kernel follows each O_SYNC or O_DSYNC write with an fsync.
func TestSyncOpenFlagsCountAsFsync(t *testing.T) {
	fx := mount(t, nil)
	for _, flag := range []int{os.O_SYNC, syscall.O_DSYNC} {
		p := fx.path("f" + strconv.Itoa(flag))
		durableFile(t, p, fill('a', page))
		f, err := os.OpenFile(p, os.O_RDWR|flag, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt(fill('b', 10), 100); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	fx.crash()
	for _, flag := range []int{os.O_SYNC, syscall.O_DSYNC} {
		wantFile(t, fx.path("f"+strconv.Itoa(flag)), concat(fill('a', 100), fill('b', 10), fill('a', page-110)))
	}
}

// The writer is a child process: the mmap writes it made with msync survive, the others are
// forgotten although the kernel still held them dirty when the child was killed.
func TestMmapWritesSurviveOnlyWhenSynced(t *testing.T) {
	fx := mount(t, nil)
	p := fx.path("f")
	durableFile(t, p, fill('a', 3*page))

	c := startChild(t)
	c.do("open %s", p)
	c.do("mmap %d", 3*page)
	c.do("poke 0 b %d", page)
	c.do("msync 0 %d", page)
	c.do("poke %d c %d", page, page)
	c.do("poke %d d 10", 2*page)
	// The kernel's page cache shows every write before the crash.
	wantFile(t, p, concat(fill('b', page), fill('c', page), fill('d', 10), fill('a', page-10)))
	c.kill()

	fx.crash()
	wantFile(t, p, concat(fill('b', page), fill('a', 2*page)))
}

// fsync on the descriptor also writes back dirty mmap pages. The server is another process, so
// this test process may map the mount itself.
func TestMmapWritesFollowedByFsyncSurvive(t *testing.T) {
	fx := mount(t, nil)
	p := fx.path("f")
	durableFile(t, p, fill('a', 2*page))
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, 2*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	copy(mem[page:], fill('m', page))
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	unix.Munmap(mem)
	f.Close()

	fx.crash()
	wantFile(t, p, concat(fill('a', page), fill('m', page)))
}

// A mount still in use at the crash is detached lazily: the holder keeps the old, frozen mount,
// whose dirty pages never reach the backing files, and the new mount shows the durable state.
func TestCrashDetachesABusyMountAndDropsItsDirtyPages(t *testing.T) {
	fx := mount(t, nil)
	p := fx.path("f")
	durableFile(t, p, fill('a', page))
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	copy(mem, fill('x', page))

	fx.crash()
	wantFile(t, p, fill('a', page))
	// Letting go of the old mount flushes the page to the frozen old server: dropped.
	unix.Munmap(mem)
	f.Close()
	wantFile(t, p, fill('a', page))
	wantFile(t, filepath.Join(fx.backing, "f"), fill('a', page))
}

func TestTruncateDownWithoutFsyncBringsTheTailBack(t *testing.T) {
	fx := mount(t, nil)
	p := fx.path("f")
	old := concat(fill('a', page), fill('b', page), fill('c', page), fill('d', 10))
	durableFile(t, p, old)
	if err := os.Truncate(p, 5000); err != nil {
		t.Fatal(err)
	}
	writeAt(t, p, fill('x', 2*page), 6000) // after the cut: must not hide the old tail either

	fx.crash()
	wantFile(t, p, old)
}

func TestTruncateUpWithoutFsyncReverts(t *testing.T) {
	fx := mount(t, nil)
	p := fx.path("f")
	durableFile(t, p, fill('a', 100))
	if err := os.Truncate(p, 1<<20); err != nil {
		t.Fatal(err)
	}
	writeAt(t, p, fill('x', 10), 1<<19)

	fx.crash()
	wantFile(t, p, fill('a', 100))
}

// Badger truncates its files to hundreds of MiB; a cut must find their data without reading
// the holes, and a crash must not fill them in.
func TestSparseFileTruncateSavesOnlyItsData(t *testing.T) {
	fx := mount(t, nil)
	p := fx.path("f")
	const size, dataAt = 1 << 30, 512 << 20
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(fill('x', page), dataAt); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	syncDir(t, fx.mp)
	if err := f.Truncate(0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	// The page at 0 (the cut's first page, a hole: saved as zeros, no copy) and the data page.
	if st := fx.status(); st.SavedPages != 2 || st.SavedBytes != page {
		t.Errorf("status %+v, want 2 pages and %d bytes saved", st, page)
	}

	fx.crash()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != size {
		t.Fatalf("size %d, want %d", fi.Size(), size)
	}
	g, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	buf := make([]byte, page)
	if _, err := g.ReadAt(buf, dataAt); err != nil || string(buf) != string(fill('x', page)) {
		t.Fatalf("data page: %v %s", err, summarize(buf))
	}
	if st := statOf(t, filepath.Join(fx.backing, "f")); st.Blocks*512 > 1<<20 {
		t.Errorf("backing file has %d bytes allocated: the holes were filled", st.Blocks*512)
	}
}

func TestNewFileNeedsItsDirectorySynced(t *testing.T) {
	fx := mount(t, nil)
	d := fx.path("d")
	mkdir(t, d)
	syncDir(t, fx.mp)

	writeFile(t, filepath.Join(d, "unsynced-dir"), []byte("a"), true)
	wantFile(t, filepath.Join(d, "unsynced-dir"), []byte("a"))
	syncDir(t, fx.mp) // the parent of d, not d: does not count
	fx.crash()
	wantMissing(t, filepath.Join(d, "unsynced-dir"))

	writeFile(t, filepath.Join(d, "both"), []byte("b"), true)
	writeFile(t, filepath.Join(d, "name-only"), []byte("c"), false)
	syncDir(t, d)
	writeFile(t, filepath.Join(d, "after"), []byte("d"), true)
	fx.crash()
	wantFile(t, filepath.Join(d, "both"), []byte("b"))
	wantFile(t, filepath.Join(d, "name-only"), nil) // its name is durable, its data is not
	wantMissing(t, filepath.Join(d, "after"))
}

func TestRenameNeedsItsDirectorySynced(t *testing.T) {
	fx := mount(t, nil)
	for _, d := range []string{"unsynced", "synced", "over"} {
		mkdir(t, fx.path(d))
	}
	syncDir(t, fx.mp)
	durableFile(t, fx.path("unsynced/old"), []byte("1"))
	durableFile(t, fx.path("synced/old"), []byte("2"))
	durableFile(t, fx.path("over/src"), []byte("src"))
	durableFile(t, fx.path("over/dst"), []byte("dst"))

	rename(t, fx.path("unsynced/old"), fx.path("unsynced/new"))
	rename(t, fx.path("synced/old"), fx.path("synced/new"))
	syncDir(t, fx.path("synced"))
	rename(t, fx.path("over/src"), fx.path("over/dst"))
	wantFile(t, fx.path("over/dst"), []byte("src"))

	fx.crash()
	wantFile(t, fx.path("unsynced/old"), []byte("1"))
	wantMissing(t, fx.path("unsynced/new"))
	wantFile(t, fx.path("synced/new"), []byte("2"))
	wantMissing(t, fx.path("synced/old"))
	wantFile(t, fx.path("over/src"), []byte("src"))
	wantFile(t, fx.path("over/dst"), []byte("dst"))
}

func TestUnlinkNeedsItsDirectorySynced(t *testing.T) {
	fx := mount(t, nil)
	for _, d := range []string{"unsynced", "synced"} {
		mkdir(t, fx.path(d))
	}
	syncDir(t, fx.mp)
	durableFile(t, fx.path("unsynced/f"), []byte("durable"))
	durableFile(t, fx.path("synced/f"), []byte("x"))

	writeAt(t, fx.path("unsynced/f"), []byte("DUR"), 0) // not synced: comes back without it
	remove(t, fx.path("unsynced/f"))
	remove(t, fx.path("synced/f"))
	syncDir(t, fx.path("synced"))

	sum := fx.crash()
	wantFile(t, fx.path("unsynced/f"), []byte("durable"))
	wantMissing(t, fx.path("synced/f"))
	if sum.EntriesRestored != 1 {
		t.Errorf("EntriesRestored = %d, want 1", sum.EntriesRestored)
	}
}

func TestDirectoriesFollowTheirParentsListings(t *testing.T) {
	fx := mount(t, func(b string) {
		// Present at serve start, so durable.
		os.MkdirAll(filepath.Join(b, "a", "b", "c"), 0o755)
		os.WriteFile(filepath.Join(b, "a", "b", "c", "file"), []byte("F"), 0o644)
		os.Mkdir(filepath.Join(b, "gone"), 0o750)
		os.Mkdir(filepath.Join(b, "a", "b", "src"), 0o755)
		os.WriteFile(filepath.Join(b, "a", "b", "src", "f"), []byte("s"), 0o644)
		os.Mkdir(filepath.Join(b, "a", "b", "dst"), 0o700)
	})
	// A new subtree whose top was never made durable in b.
	mkdir(t, fx.path("a/b/n"))
	mkdir(t, fx.path("a/b/n/m"))
	durableFile(t, fx.path("a/b/n/m/f"), []byte("m"))
	syncDir(t, fx.path("a/b/n"))
	// A new subtree made durable top down.
	mkdir(t, fx.path("p"))
	syncDir(t, fx.mp)
	mkdir(t, fx.path("p/q"))
	durableFile(t, fx.path("p/q/f"), []byte("q"))
	syncDir(t, fx.path("p"))
	// A durable subtree removed without syncing b: it comes back whole.
	remove(t, fx.path("a/b/c/file"))
	if err := os.Remove(fx.path("a/b/c")); err != nil {
		t.Fatal(err)
	}
	// A durable directory removed with its parent synced; syncing it once removed records
	// nothing and does not fail.
	gone, err := os.Open(fx.path("gone"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(fx.path("gone")); err != nil {
		t.Fatal(err)
	}
	if err := gone.Sync(); err != nil {
		t.Errorf("fsync of a removed directory: %v", err)
	}
	gone.Close()
	syncDir(t, fx.mp)
	// A durable directory renamed over a durable empty one, not synced: both come back.
	// (os.Rename refuses to replace a directory.)
	if err := unix.Rename(fx.path("a/b/src"), fx.path("a/b/dst")); err != nil {
		t.Fatal(err)
	}
	wantFile(t, fx.path("a/b/dst/f"), []byte("s"))

	fx.crash()
	wantMissing(t, fx.path("a/b/n"))
	wantFile(t, fx.path("p/q/f"), []byte("q"))
	wantFile(t, fx.path("a/b/c/file"), []byte("F"))
	wantMissing(t, fx.path("gone"))
	wantFile(t, fx.path("a/b/src/f"), []byte("s"))
	if names, err := os.ReadDir(fx.path("a/b/dst")); err != nil || len(names) != 0 {
		t.Errorf("a/b/dst: %v %v, want an empty directory", names, err)
	}
	if fi, err := os.Stat(fx.path("a/b/c")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("a/b/c: %v %v, want a directory with mode 0755", fi.Mode(), err)
	}
}

func TestSecondCrashStartsFromTheFirstOnesDurableState(t *testing.T) {
	fx := mount(t, func(b string) { os.WriteFile(filepath.Join(b, "f"), []byte("v0"), 0o644) })
	writeAt(t, fx.path("f"), []byte("v1"), 0)
	writeFile(t, fx.path("g"), []byte("g"), true)
	fx.crash()
	wantFile(t, fx.path("f"), []byte("v0"))
	wantMissing(t, fx.path("g"))

	writeFile(t, fx.path("f"), []byte("v2"), true)
	durableFile(t, fx.path("h"), []byte("h"))
	writeAt(t, fx.path("h"), []byte("H"), 0)
	fx.crash()
	wantFile(t, fx.path("f"), []byte("v2"))
	wantFile(t, fx.path("h"), []byte("h"))

	if err := fx.proc.Stop(); err != nil {
		t.Fatal(err)
	}
	if mounted, err := lossy.Mounted(fx.mp); err != nil || mounted {
		t.Fatalf("after Stop: mounted=%v, %v", mounted, err)
	}
	wantMissing(t, filepath.Join(fx.backing, lossy.StateDir))
	wantFile(t, filepath.Join(fx.backing, "f"), []byte("v2"))
}

func TestStateDirIsHiddenFromTheMount(t *testing.T) {
	fx := mount(t, nil)
	names, err := os.ReadDir(fx.mp)
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 0 {
		t.Errorf("mount lists %v, want nothing", names)
	}
	if _, err := os.Stat(fx.path(lossy.StateDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat %s: %v, want ENOENT", lossy.StateDir, err)
	}
	if err := os.Mkdir(fx.path(lossy.StateDir), 0o755); !errors.Is(err, syscall.EPERM) {
		t.Errorf("mkdir %s: %v, want EPERM", lossy.StateDir, err)
	}
	if _, err := os.Stat(filepath.Join(fx.backing, lossy.StateDir, "ino")); err != nil {
		t.Errorf("backing state: %v", err)
	}
}

// Badger on the mount, with SyncWrites: what it acknowledged survives a power cut.
func TestBadgerKeepsSyncedKeysAcrossACrash(t *testing.T) {
	fx := mount(t, nil)
	db := fx.path("db")
	mkdir(t, db)
	syncDir(t, fx.mp)
	c := startChild(t)
	c.do("badger-open %s", db)
	const keys = 50
	for i := 0; i < keys; i++ {
		c.do("badger-put k%d v%d", i, i)
	}
	c.kill()
	fx.crash()

	c = startChild(t)
	c.do("badger-open %s", db)
	for i := 0; i < keys; i++ {
		if got := c.do("badger-get k%d", i); got != "v"+strconv.Itoa(i) {
			t.Errorf("k%d = %q after the crash, want v%d", i, got, i)
		}
	}
	c.do("badger-close")
}
