package lossy

import (
	"context"
	"errors"
	"io"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// node is a loopback node that records, for the generation it belongs to, what each change does
// to durability. It overrides every loopback operation that changes the backing tree; the rest
// (lookup aside, which hides StateDir) pass through.
type node struct {
	*fs.LoopbackNode
	g   *generation
	log *log.Logger
}

var (
	_ fs.NodeWrapChilder    = (*node)(nil)
	_ fs.NodeLookuper       = (*node)(nil)
	_ fs.NodeCreater        = (*node)(nil)
	_ fs.NodeMknoder        = (*node)(nil)
	_ fs.NodeMkdirer        = (*node)(nil)
	_ fs.NodeSymlinker      = (*node)(nil)
	_ fs.NodeLinker         = (*node)(nil)
	_ fs.NodeTmpfiler       = (*node)(nil)
	_ fs.NodeUnlinker       = (*node)(nil)
	_ fs.NodeRmdirer        = (*node)(nil)
	_ fs.NodeRenamer        = (*node)(nil)
	_ fs.NodeOpener         = (*node)(nil)
	_ fs.NodeOpendirHandler = (*node)(nil)
	_ fs.NodeWriter         = (*node)(nil)
	_ fs.NodeWritever       = (*node)(nil)
	_ fs.NodeFsyncer        = (*node)(nil)
	_ fs.NodeSetattrer      = (*node)(nil)
	_ fs.NodeAllocater      = (*node)(nil)
	_ fs.NodeCopyFileRanger = (*node)(nil)
	_ fs.NodeSetxattrer     = (*node)(nil)
	_ fs.NodeRemovexattrer  = (*node)(nil)
	_ fs.FileReaddirenter   = (*dirHandle)(nil)
	_ fs.FileFsyncdirer     = (*dirHandle)(nil)
	_ fs.FileReleasedirer   = (*dirHandle)(nil)
	_ fs.FileSeekdirer      = (*dirHandle)(nil)
	_ fs.FileReader         = (*handle)(nil)
	_ fs.FileReleaser       = (*handle)(nil)
	_ fs.FileFlusher        = (*handle)(nil)
	_ fs.FileGetattrer      = (*handle)(nil)
	_ fs.FileStatxer        = (*handle)(nil)
	_ fs.FileLseeker        = (*handle)(nil)
)

// WrapChild makes every node the loopback creates one of ours.
func (n *node) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	return &node{LoopbackNode: ops.(*fs.LoopbackNode), g: n.g, log: n.log}
}

// path is the node's backing path. A node no longer in the tree (a removed directory still open)
// gets a path that does not exist, as the loopback's own operations do, never a wrong one.
func (n *node) path() string { return filepath.Join(n.RootData.Path, n.Path(n.Root())) }

func (n *node) isRoot() bool { return n.IsRoot() }

// ino is the node's backing inode number (the loopback uses it as the FUSE inode number when
// the backing tree is one file system, which newGeneration checks).
func (n *node) ino() uint64 {
	if n.isRoot() {
		return n.g.rootIno
	}
	return n.StableAttr().Ino
}

// hidden says whether name in this directory is the server's state directory.
func (n *node) hidden(name string) bool { return name == StateDir && n.isRoot() }

func (n *node) fail(op string, err error) syscall.Errno {
	n.log.Printf("lossyfs: %s %s: %v", op, n.path(), err)
	return syscall.EIO
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if n.hidden(name) {
		return nil, syscall.ENOENT
	}
	return n.LoopbackNode.Lookup(ctx, name, out)
}

// backingFlags are the open flags for a backing file: always readable (saving old pages reads
// them; the kernel enforces the caller's access mode), never O_TRUNC (truncation is recorded
// first), never O_DIRECT (FUSE hands over unaligned buffers), never O_SYNC or O_DSYNC (the
// kernel follows each such write with an FSYNC, which is what the model counts; the backing
// file's own durability does not matter).
func backingFlags(flags uint32) uint32 {
	if flags&syscall.O_ACCMODE == syscall.O_WRONLY {
		flags = flags&^syscall.O_ACCMODE | syscall.O_RDWR
	}
	return flags &^ (syscall.O_TRUNC | syscall.O_DIRECT | syscall.O_SYNC | syscall.O_DSYNC)
}

func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if n.hidden(name) {
		return nil, nil, 0, syscall.EPERM
	}
	if !n.g.enter() {
		return nil, nil, 0, syscall.EIO
	}
	defer n.g.gate.RUnlock()
	// O_EXCL: the kernel sends CREATE only for a name it found missing, so an existing file is
	// one the backing tree gained behind the server's back; truncating it unrecorded would lose
	// undo state.
	ch, fh, fuseFlags, errno := n.LoopbackNode.Create(ctx, name, backingFlags(flags)|syscall.O_EXCL, mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	n.g.created(out.Attr.Ino, out.Attr.Mode)
	return ch, newHandle(fh), fuseFlags, 0
}

func (n *node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if n.hidden(name) {
		return nil, syscall.EPERM
	}
	if !n.g.enter() {
		return nil, syscall.EIO
	}
	defer n.g.gate.RUnlock()
	ch, errno := n.LoopbackNode.Mknod(ctx, name, mode, rdev, out)
	if errno == 0 {
		n.g.created(out.Attr.Ino, out.Attr.Mode)
	}
	return ch, errno
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if n.hidden(name) {
		return nil, syscall.EPERM
	}
	if !n.g.enter() {
		return nil, syscall.EIO
	}
	defer n.g.gate.RUnlock()
	ch, errno := n.LoopbackNode.Mkdir(ctx, name, mode, out)
	if errno == 0 {
		n.g.created(out.Attr.Ino, out.Attr.Mode)
	}
	return ch, errno
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if n.hidden(name) {
		return nil, syscall.EPERM
	}
	if !n.g.enter() {
		return nil, syscall.EIO
	}
	defer n.g.gate.RUnlock()
	ch, errno := n.LoopbackNode.Symlink(ctx, target, name, out)
	if errno == 0 {
		n.g.created(out.Attr.Ino, out.Attr.Mode)
	}
	return ch, errno
}

func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if n.hidden(name) {
		return nil, syscall.EPERM
	}
	if !n.g.enter() {
		return nil, syscall.EIO
	}
	defer n.g.gate.RUnlock()
	return n.LoopbackNode.Link(ctx, target, name, out)
}

// Tmpfile is not supported: an O_TMPFILE inode could be linked in by LINK, which names no
// handle, and the model would gain a third way to create a file for no test that needs it.
func (n *node) Tmpfile(ctx context.Context, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EOPNOTSUPP
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	if n.hidden(name) {
		return syscall.ENOENT
	}
	if !n.g.enter() {
		return syscall.EIO
	}
	defer n.g.gate.RUnlock()
	return n.LoopbackNode.Unlink(ctx, name)
}

// pinDir moves the empty backing directory p into StateDir instead of removing it, so its inode
// number is not reused while a durable listing may still name it.
func (n *node) pinDir(p string) syscall.Errno {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return fs.ToErrno(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return syscall.ENOTDIR
	}
	empty, err := dirEmpty(p)
	if err != nil {
		return fs.ToErrno(err)
	}
	if !empty {
		return syscall.ENOTEMPTY
	}
	pinned := filepath.Join(n.g.stateDir(), dirsDir, strconv.FormatUint(st.Ino, 10))
	return fs.ToErrno(unix.Rename(p, pinned))
}

func dirEmpty(p string) (bool, error) {
	f, err := os.Open(p)
	if err != nil {
		return false, err
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if errors.Is(err, io.EOF) {
		return true, nil
	}
	return len(names) == 0, err
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	if n.hidden(name) {
		return syscall.ENOENT
	}
	if !n.g.enter() {
		return syscall.EIO
	}
	defer n.g.gate.RUnlock()
	return n.pinDir(filepath.Join(n.path(), name))
}

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	if n.hidden(name) || np.hidden(newName) {
		return syscall.EPERM
	}
	if !n.g.enter() {
		return syscall.EIO
	}
	defer n.g.gate.RUnlock()
	if flags != 0 {
		// RENAME_NOREPLACE and RENAME_EXCHANGE remove nothing.
		return n.LoopbackNode.Rename(ctx, name, newParent, newName, flags)
	}
	src, dst := filepath.Join(n.path(), name), filepath.Join(np.path(), newName)
	var sst, dst2 unix.Stat_t
	if err := unix.Lstat(dst, &dst2); err != nil || dst2.Mode&unix.S_IFMT != unix.S_IFDIR {
		// No directory is replaced: the loopback's rename removes at most a file, whose inode
		// the graveyard keeps if a durable listing names it.
		return n.LoopbackNode.Rename(ctx, name, newParent, newName, flags)
	}
	if err := unix.Lstat(src, &sst); err != nil {
		return fs.ToErrno(err)
	}
	if sst.Ino == dst2.Ino {
		return 0
	}
	if sst.Mode&unix.S_IFMT != unix.S_IFDIR {
		return syscall.EISDIR
	}
	// Replacing a directory: pin the old one first, as Rmdir does.
	if errno := n.pinDir(dst); errno != 0 {
		return errno
	}
	if err := unix.Rename(src, dst); err != nil {
		pinned := filepath.Join(n.g.stateDir(), dirsDir, strconv.FormatUint(dst2.Ino, 10))
		if err2 := unix.Rename(pinned, dst); err2 != nil {
			n.log.Printf("lossyfs: rename %s back to %s: %v", pinned, dst, err2)
		}
		return fs.ToErrno(err)
	}
	return 0
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, fuseFlags, errno := n.LoopbackNode.Open(ctx, backingFlags(flags))
	if errno != 0 {
		return nil, 0, errno
	}
	h := newHandle(fh)
	if flags&syscall.O_TRUNC != 0 && flags&syscall.O_ACCMODE != syscall.O_RDONLY && n.g.enter() {
		errno := n.truncate(h, 0)
		n.g.gate.RUnlock()
		if errno != 0 {
			h.Release(ctx)
			return nil, 0, errno
		}
	}
	return h, fuseFlags, 0
}

func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, fuseFlags, errno := n.LoopbackNode.OpendirHandle(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	return &dirHandle{inner: fh, n: n}, fuseFlags, 0
}

// undoFor returns the undo log of this node's file, open at fd.
func (n *node) undoFor(fd int) (*undoLog, error) {
	return n.g.undo(n.ino(), func() (int64, error) {
		var st unix.Stat_t
		err := unix.Fstat(fd, &st)
		return st.Size, err
	})
}

func (n *node) Write(ctx context.Context, f fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	return n.Writev(ctx, f, [][]byte{data}, off)
}

// Writev saves the durable pages the write overwrites, then writes. While frozen, it reports
// success and writes nothing: that is how the kernel's last writeback of dirty mmap pages, at
// unmount, is dropped.
func (n *node) Writev(ctx context.Context, f fs.FileHandle, data [][]byte, off int64) (uint32, syscall.Errno) {
	total := 0
	for _, b := range data {
		total += len(b)
	}
	h, ok := f.(*handle)
	if !ok {
		return 0, syscall.EBADF
	}
	if !n.g.enter() {
		return uint32(total), 0
	}
	defer n.g.gate.RUnlock()
	u, err := n.undoFor(h.fd)
	if err != nil {
		return 0, n.fail("write", err)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if err := u.beforeWriteLocked(h.fd, off, off+int64(total)); err != nil {
		return 0, n.fail("write", err)
	}
	var w int
	if len(data) == 1 {
		w, err = unix.Pwrite(h.fd, data[0], off)
	} else {
		w, err = unix.Pwritev(h.fd, data, off)
	}
	return uint32(max(w, 0)), fs.ToErrno(err)
}

// Fsync makes the file's current contents and size durable (fsync and fdatasync alike). The
// backing file itself is not synced: the machine does not lose power, the model does.
func (n *node) Fsync(ctx context.Context, f fs.FileHandle, flags uint32) syscall.Errno {
	if n.IsDir() {
		return n.syncDir()
	}
	if !n.g.enter() {
		return 0
	}
	defer n.g.gate.RUnlock()
	u := n.g.existingUndo(n.ino())
	if u == nil {
		return 0 // unchanged since serve start
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	var st unix.Stat_t
	var err error
	if h, ok := f.(*handle); ok {
		err = unix.Fstat(h.fd, &st)
	} else {
		err = unix.Lstat(n.path(), &st)
	}
	if err != nil {
		return n.fail("fsync", err)
	}
	u.syncedLocked(st.Size)
	return 0
}

func (n *node) syncDir() syscall.Errno {
	if !n.g.enter() {
		return 0
	}
	defer n.g.gate.RUnlock()
	if _, parent := n.Parent(); parent == nil && !n.isRoot() {
		return 0 // removed: nothing left to record
	}
	err := n.g.syncDir(n.path(), n.ino())
	if errors.Is(err, os.ErrNotExist) {
		return 0 // removed meanwhile
	}
	if err != nil {
		return n.fail("fsync directory", err)
	}
	return 0
}

// truncate sets the file's size, saving first what a cut drops. h may be nil (truncate by path).
// The caller has entered the generation.
func (n *node) truncate(h *handle, size int64) syscall.Errno {
	fd := -1
	if h != nil {
		fd = h.fd
	} else {
		var err error
		fd, err = unix.Open(n.path(), unix.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fs.ToErrno(err)
		}
		defer unix.Close(fd)
	}
	u, err := n.undoFor(fd)
	if err != nil {
		return n.fail("truncate", err)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if err := u.beforeTruncateLocked(fd, size); err != nil {
		return n.fail("truncate", err)
	}
	return fs.ToErrno(unix.Ftruncate(fd, size))
}

// Setattr records a size change; mode, owner and times pass through unrecorded. While frozen it
// changes nothing and reports the current attributes.
func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	h, _ := f.(*handle)
	var lf fs.FileHandle
	if h != nil {
		lf = h.lf
	}
	rest := *in
	if !n.g.enter() {
		rest.Valid = 0
		return n.LoopbackNode.Setattr(ctx, lf, &rest, out)
	}
	defer n.g.gate.RUnlock()
	if sz, ok := in.GetSize(); ok {
		if errno := n.truncate(h, int64(sz)); errno != 0 {
			return errno
		}
		rest.Valid &^= fuse.FATTR_SIZE
	}
	return n.LoopbackNode.Setattr(ctx, lf, &rest, out)
}

// Allocate supports what FUSE passes on (plain allocation, KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE),
// saving first what punching or zeroing overwrites.
func (n *node) Allocate(ctx context.Context, f fs.FileHandle, off, size uint64, mode uint32) syscall.Errno {
	h, ok := f.(*handle)
	if !ok {
		return syscall.EBADF
	}
	if !n.g.enter() {
		return 0
	}
	defer n.g.gate.RUnlock()
	u, err := n.undoFor(h.fd)
	if err != nil {
		return n.fail("fallocate", err)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	switch mode &^ unix.FALLOC_FL_KEEP_SIZE {
	case 0:
		u.touched = true
	case unix.FALLOC_FL_PUNCH_HOLE, unix.FALLOC_FL_ZERO_RANGE:
		if err := u.beforeWriteLocked(h.fd, int64(off), int64(off+size)); err != nil {
			return n.fail("fallocate", err)
		}
	default:
		return syscall.EOPNOTSUPP
	}
	return fs.ToErrno(unix.Fallocate(h.fd, mode, int64(off), int64(size)))
}

// CopyFileRange says ENOSYS, so the kernel copies with READ and WRITE, which are recorded.
func (n *node) CopyFileRange(ctx context.Context, fhIn fs.FileHandle, offIn uint64, out *fs.Inode, fhOut fs.FileHandle, offOut, length, flags uint64) (uint32, syscall.Errno) {
	return 0, syscall.ENOSYS
}

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if !n.g.enter() {
		return 0
	}
	defer n.g.gate.RUnlock()
	return n.LoopbackNode.Setxattr(ctx, attr, data, flags)
}

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	if !n.g.enter() {
		return 0
	}
	defer n.g.gate.RUnlock()
	return n.LoopbackNode.Removexattr(ctx, attr)
}

// handle is an open backing file. It forwards only what the node does not handle itself, and on
// purpose does not offer PassthroughFd: kernel passthrough would send reads and writes straight
// to the backing file, past the undo log.
type handle struct {
	lf *fs.LoopbackFile
	fd int
}

func newHandle(fh fs.FileHandle) *handle {
	lf := fh.(*fs.LoopbackFile)
	fd, _ := lf.PassthroughFd() // the descriptor, valid until Release
	return &handle{lf: lf, fd: fd}
}

func (h *handle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return h.lf.Read(ctx, dest, off)
}
func (h *handle) Release(ctx context.Context) syscall.Errno { return h.lf.Release(ctx) }
func (h *handle) Flush(ctx context.Context) syscall.Errno   { return h.lf.Flush(ctx) }
func (h *handle) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return h.lf.Getattr(ctx, out)
}
func (h *handle) Statx(ctx context.Context, flags, mask uint32, out *fuse.StatxOut) syscall.Errno {
	return h.lf.Statx(ctx, flags, mask, out)
}
func (h *handle) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	return h.lf.Lseek(ctx, off, whence)
}

// dirHandle is an open backing directory: its fsync records the durable listing, and in the
// root it leaves StateDir out.
type dirHandle struct {
	inner fs.FileHandle
	n     *node
}

func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	r, ok := d.inner.(fs.FileReaddirenter)
	if !ok {
		return nil, 0
	}
	for {
		de, errno := r.Readdirent(ctx)
		if errno != 0 || de == nil || !d.n.hidden(de.Name) {
			return de, errno
		}
	}
}

func (d *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno { return d.n.syncDir() }

func (d *dirHandle) Releasedir(ctx context.Context, flags uint32) {
	if r, ok := d.inner.(fs.FileReleasedirer); ok {
		r.Releasedir(ctx, flags)
	}
}

func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if s, ok := d.inner.(fs.FileSeekdirer); ok {
		return s.Seekdir(ctx, off)
	}
	return syscall.ENOTSUP
}
