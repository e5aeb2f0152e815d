package lossy

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// StateDir is the directory in the backing root where the server keeps its own state. It is
// hidden from the mount and removed when the server stops.
const StateDir = ".lossyfs"

// Under StateDir: inoDir holds one hard link per file a durable listing names, by inode number;
// dirsDir holds removed directories, so their inode numbers are not reused while a durable
// listing may still name them; rebuildDir is where a crash assembles the durable tree.
const (
	inoDir     = "ino"
	dirsDir    = "dirs"
	rebuildDir = "rebuild"
)

// dirent is one name of a durable directory listing.
type dirent struct {
	ino      uint64
	mode     uint32 // type and permission bits
	uid, gid uint32
}

func (e dirent) isDir() bool { return e.mode&unix.S_IFMT == unix.S_IFDIR }

// listing is a directory's entries by name.
type listing map[string]dirent

// generation is the durability state of one mount, from serve start or the last crash until the
// next crash. Lock order: gate first; mu and an undoLog's mu are never held together.
type generation struct {
	root    string // the backing directory
	rootIno uint64
	dev     uint64

	// gate is held shared by every operation that changes the backing tree and exclusively by
	// freeze, so once freeze returns no change is in flight and none will start.
	gate   sync.RWMutex
	frozen bool // guarded by gate

	mu struct {
		sync.Mutex
		// files holds the undo log of each file written or resized since serve start; a file
		// with none is durable as it is.
		files map[uint64]*undoLog
		// dirs holds each directory's listing at its last fsync, by inode number; a directory
		// with none was created since and has an empty durable listing.
		dirs map[uint64]listing
		// refs counts the durable names of each non-directory; those above zero have a link in
		// inoDir.
		refs map[uint64]int
	}
}

func (g *generation) stateDir() string { return filepath.Join(g.root, StateDir) }
func (g *generation) inoPath(ino uint64) string {
	return filepath.Join(g.root, StateDir, inoDir, strconv.FormatUint(ino, 10))
}

// newGeneration takes everything in the backing directory root as durable: it records every
// directory's listing and links every file into the graveyard.
func newGeneration(root string) (*generation, error) {
	g := &generation{root: root}
	g.mu.files = make(map[uint64]*undoLog)
	g.mu.dirs = make(map[uint64]listing)
	g.mu.refs = make(map[uint64]int)

	var st unix.Stat_t
	if err := unix.Stat(root, &st); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil, fmt.Errorf("%s is not a directory", root)
	}
	g.rootIno, g.dev = st.Ino, st.Dev

	sd := g.stateDir()
	if err := os.MkdirAll(sd, 0o700); err != nil {
		return nil, err
	}
	for _, d := range []string{inoDir, dirsDir, rebuildDir} {
		if err := os.RemoveAll(filepath.Join(sd, d)); err != nil {
			return nil, err
		}
	}
	for _, d := range []string{inoDir, dirsDir} {
		if err := os.Mkdir(filepath.Join(sd, d), 0o700); err != nil {
			return nil, err
		}
	}
	if err := g.scan(root, g.rootIno); err != nil {
		return nil, err
	}
	return g, nil
}

func (g *generation) scan(dir string, ino uint64) error {
	l, err := g.readListing(dir, ino)
	if err != nil {
		return err
	}
	if err := g.setListingLocked(dir, ino, l); err != nil {
		return err
	}
	for name, e := range l {
		if e.isDir() {
			if err := g.scan(filepath.Join(dir, name), e.ino); err != nil {
				return err
			}
		}
	}
	return nil
}

// readListing reads the backing directory dir (whose inode is ino) as a listing, leaving out
// StateDir in the root.
func (g *generation) readListing(dir string, ino uint64) (listing, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	l := make(listing, len(names))
	for _, name := range names {
		if ino == g.rootIno && name == StateDir {
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstatat(int(f.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			return nil, err
		}
		if st.Dev != g.dev {
			return nil, fmt.Errorf("%s spans file systems: %s is on another one",
				g.root, filepath.Join(dir, name))
		}
		l[name] = dirent{ino: st.Ino, mode: st.Mode, uid: st.Uid, gid: st.Gid}
	}
	return l, nil
}

// setListingLocked makes l the durable listing of directory ino (at backing path dir): it links
// each file l names into the graveyard and drops the graveyard links no durable listing needs
// any longer. g.mu must be held, or g not yet shared.
func (g *generation) setListingLocked(dir string, ino uint64, l listing) error {
	for name, e := range l {
		if e.isDir() {
			continue
		}
		if g.mu.refs[e.ino] == 0 {
			err := unix.Linkat(unix.AT_FDCWD, filepath.Join(dir, name), unix.AT_FDCWD, g.inoPath(e.ino), 0)
			if err != nil && !errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("link %s into %s: %w", filepath.Join(dir, name), StateDir, err)
			}
			var st unix.Stat_t
			if err := unix.Lstat(g.inoPath(e.ino), &st); err != nil {
				return err
			}
			if st.Ino != e.ino {
				return fmt.Errorf("%s changed while its directory was synced", filepath.Join(dir, name))
			}
		}
		g.mu.refs[e.ino]++
	}
	for _, e := range g.mu.dirs[ino] {
		if e.isDir() {
			continue
		}
		if g.mu.refs[e.ino]--; g.mu.refs[e.ino] <= 0 {
			delete(g.mu.refs, e.ino)
			if err := unix.Unlink(g.inoPath(e.ino)); err != nil && !errors.Is(err, unix.ENOENT) {
				return err
			}
		}
	}
	g.mu.dirs[ino] = l
	return nil
}

// syncDir makes the current listing of directory ino (at backing path dir) durable. The
// listing is read under g.mu, so that of two concurrent syncs of one directory the later
// listing is the one that stays: read outside it, an older listing could overwrite a newer
// one and take back entries an earlier fsync had made durable.
func (g *generation) syncDir(dir string, ino uint64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	l, err := g.readListing(dir, ino)
	if err != nil {
		return err
	}
	return g.setListingLocked(dir, ino, l)
}

// undo returns the undo log of file ino, creating one (the file is durable as it is now, of size
// size()) if there is none.
func (g *generation) undo(ino uint64, size func() (int64, error)) (*undoLog, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if u := g.mu.files[ino]; u != nil {
		return u, nil
	}
	sz, err := size()
	if err != nil {
		return nil, err
	}
	u := newUndoLog(sz)
	g.mu.files[ino] = u
	return u, nil
}

// existingUndo returns the undo log of file ino, or nil if it has none.
func (g *generation) existingUndo(ino uint64) *undoLog {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.mu.files[ino]
}

// created records that inode ino was just created: a file's durable contents are empty, a
// directory's durable listing is empty. The inode number may be one a removed inode had, whose
// state no durable listing needs (those are pinned in the graveyard).
func (g *generation) created(ino uint64, mode uint32) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.mu.dirs, ino)
	delete(g.mu.files, ino)
	if mode&unix.S_IFMT == unix.S_IFREG {
		g.mu.files[ino] = newUndoLog(0)
	}
}

// freeze stops every later change to the backing tree; it returns once none is in flight.
func (g *generation) freeze() {
	g.gate.Lock()
	g.frozen = true
	g.gate.Unlock()
}

// enter is called by every operation that changes the backing tree; it returns false if the
// generation is frozen and the change must be skipped. If it returns true, the caller must call
// g.gate.RUnlock when done.
func (g *generation) enter() bool {
	g.gate.RLock()
	if g.frozen {
		g.gate.RUnlock()
		return false
	}
	return true
}

// Status is what a running server holds for undo.
type Status struct {
	// DirtyFiles counts files written or resized since their last fsync.
	DirtyFiles int
	// SavedPages counts the pages saved for undo, pages of zeros included.
	SavedPages int
	// SavedBytes counts the old file contents held in memory (pages of zeros excluded).
	SavedBytes int64
}

func (g *generation) status() Status {
	g.mu.Lock()
	logs := make([]*undoLog, 0, len(g.mu.files))
	for _, u := range g.mu.files {
		logs = append(logs, u)
	}
	g.mu.Unlock()
	var s Status
	for _, u := range logs {
		u.mu.Lock()
		if u.touched {
			s.DirtyFiles++
		}
		s.SavedPages += len(u.saved)
		s.SavedBytes += u.savedBytes
		u.mu.Unlock()
	}
	return s
}

func sortedNames(l listing) []string {
	names := make([]string, 0, len(l))
	for n := range l {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
