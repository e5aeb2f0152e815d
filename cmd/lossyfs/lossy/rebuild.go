package lossy

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Summary says what a crash undid.
type Summary struct {
	// FilesRestored counts durable files whose contents or size went back to their last fsync.
	FilesRestored int
	// EntriesDropped counts names the tree had before the crash and has no longer (a directory's
	// subtree counts name by name).
	EntriesDropped int
	// EntriesRestored counts durable names that had been removed or renamed and came back.
	EntriesRestored int
	// BytesUndone counts the bytes written back from saved pages plus those cut from or added to
	// file ends.
	BytesUndone int64
}

// String is the one-line summary `lossyfs crash` prints.
func (s Summary) String() string {
	return fmt.Sprintf("restored %d files, dropped %d entries, brought back %d entries, undid %d bytes",
		s.FilesRestored, s.EntriesDropped, s.EntriesRestored, s.BytesUndone)
}

// treeEntry is what a path names, for comparing the tree before and after a crash: directories
// are recreated, so they compare by path alone.
type treeEntry struct {
	dir bool
	ino uint64
}

func (e treeEntry) same(o treeEntry) bool {
	return e.dir == o.dir && (e.dir || e.ino == o.ino)
}

// walkBacking lists the backing tree by path relative to root, StateDir left out.
func walkBacking(root string) (map[string]treeEntry, error) {
	tree := make(map[string]treeEntry)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		if rel == StateDir {
			return filepath.SkipDir
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		tree[rel] = treeEntry{dir: d.IsDir(), ino: st.Ino}
		return nil
	})
	return tree, err
}

// durableItem is one name of the durable tree, by path relative to the root.
type durableItem struct {
	rel string
	e   dirent
}

// durableTree lists the tree the durable listings describe, parents before children, and the
// files it names. A directory that two durable listings name (a directory renamed, with only the
// new parent synced) appears once, at the first name in path order.
func (g *generation) durableTreeLocked() ([]durableItem, map[uint64]bool) {
	var items []durableItem
	files := make(map[uint64]bool)
	visited := map[uint64]bool{g.rootIno: true}
	var walk func(ino uint64, rel string)
	walk = func(ino uint64, rel string) {
		l := g.mu.dirs[ino]
		for _, name := range sortedNames(l) {
			e := l[name]
			p := filepath.Join(rel, name)
			if !e.isDir() {
				items = append(items, durableItem{p, e})
				files[e.ino] = true
				continue
			}
			if visited[e.ino] {
				continue
			}
			visited[e.ino] = true
			items = append(items, durableItem{p, e})
			walk(e.ino, p)
		}
	}
	walk(g.rootIno, "")
	return items, files
}

// rebuild turns the backing tree into the durable state of g, which must be frozen and
// unmounted: it undoes the contents of every durable file, assembles the durable tree under
// StateDir from directories made anew and links from the graveyard, and swaps it in for the
// root's contents. Afterwards the backing tree is exactly what newGeneration will take as
// durable.
func (g *generation) rebuild() (Summary, error) {
	var sum Summary
	before, err := walkBacking(g.root)
	if err != nil {
		return sum, err
	}
	g.mu.Lock()
	items, files := g.durableTreeLocked()
	logs := make(map[uint64]*undoLog, len(g.mu.files))
	for ino, u := range g.mu.files {
		if files[ino] {
			logs[ino] = u
		}
	}
	g.mu.Unlock()

	for ino, u := range logs {
		if !u.touched {
			continue
		}
		fd, err := unix.Open(g.inoPath(ino), unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return sum, fmt.Errorf("open inode %d: %w", ino, err)
		}
		undone, err := u.restore(fd)
		unix.Close(fd)
		if err != nil {
			return sum, fmt.Errorf("restore inode %d: %w", ino, err)
		}
		sum.FilesRestored++
		sum.BytesUndone += undone
	}

	stage := filepath.Join(g.stateDir(), rebuildDir)
	if err := os.RemoveAll(stage); err != nil {
		return sum, err
	}
	if err := os.Mkdir(stage, 0o700); err != nil {
		return sum, err
	}
	for _, it := range items {
		p := filepath.Join(stage, it.rel)
		if !it.e.isDir() {
			if err := os.Link(g.inoPath(it.e.ino), p); err != nil {
				return sum, err
			}
			continue
		}
		if err := os.Mkdir(p, 0o700); err != nil {
			return sum, err
		}
		if err := unix.Chmod(p, it.e.mode&0o7777); err != nil {
			return sum, err
		}
		if err := unix.Lchown(p, int(it.e.uid), int(it.e.gid)); err != nil {
			return sum, err
		}
	}

	if err := replaceChildren(g.root, stage); err != nil {
		return sum, err
	}

	after, err := walkBacking(g.root)
	if err != nil {
		return sum, err
	}
	for p, e := range before {
		if a, ok := after[p]; !ok || !a.same(e) {
			sum.EntriesDropped++
		}
	}
	for p, e := range after {
		if b, ok := before[p]; !ok || !b.same(e) {
			sum.EntriesRestored++
		}
	}
	return sum, nil
}

// replaceChildren removes everything in root but StateDir and moves the children of stage (a
// directory inside it) in their place.
func replaceChildren(root, stage string) error {
	old, err := os.ReadDir(root)
	if err != nil {
		return err
	}
	for _, d := range old {
		if d.Name() == StateDir {
			continue
		}
		if err := os.RemoveAll(filepath.Join(root, d.Name())); err != nil {
			return err
		}
	}
	staged, err := os.ReadDir(stage)
	if err != nil {
		return err
	}
	for _, d := range staged {
		if err := os.Rename(filepath.Join(stage, d.Name()), filepath.Join(root, d.Name())); err != nil {
			return err
		}
	}
	if err := os.Remove(stage); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
