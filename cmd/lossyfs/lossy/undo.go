package lossy

import (
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// pageSize is the unit in which old file contents are saved.
const pageSize = 4096

// zeroPage backs every saved page whose old contents were all zeros, so such a page costs a slice
// header and no copy; restoring it punches a hole.
var zeroPage [pageSize]byte

// undoLog is what one file needs to go back to its contents at its last fsync.
//
// Invariant: for every byte offset b < minSize, the byte at b as of the last fsync is either in the
// saved page holding b, or still in the backing file at b. Bytes in [minSize, durableSize) that
// are in no saved page were zeros (holes) at the last fsync. Restoring is therefore: truncate to
// minSize, truncate to durableSize, write the saved pages back.
type undoLog struct {
	mu sync.Mutex
	// durableSize is the file's size at its last fsync.
	durableSize int64
	// minSize is the smallest size the file has had since its last fsync (at most durableSize).
	minSize int64
	// saved maps a page's offset to that page's contents at the last fsync, cut at minSize as it
	// was when the page was saved. A slice of zeroPage means the page was all zeros.
	saved map[int64][]byte
	// savedBytes counts the bytes held in saved, zero pages excluded.
	savedBytes int64
	// touched says the file was written or resized since its last fsync.
	touched bool
}

func newUndoLog(size int64) *undoLog {
	return &undoLog{durableSize: size, minSize: size}
}

func isZeroPage(b []byte) bool { return len(b) > 0 && &b[0] == &zeroPage[0] }

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// savePageLocked saves the page at off (page aligned, below minSize) unless it is saved already,
// reading its first min(pageSize, minSize-off) bytes from fd. u.mu must be held.
func (u *undoLog) savePageLocked(fd int, off int64) error {
	if _, ok := u.saved[off]; ok {
		return nil
	}
	n := min(pageSize, u.minSize-off)
	buf := make([]byte, n)
	if err := preadFull(fd, buf, off); err != nil {
		return fmt.Errorf("save page at %d: %w", off, err)
	}
	if u.saved == nil {
		u.saved = make(map[int64][]byte)
	}
	if allZero(buf) {
		u.saved[off] = zeroPage[:n]
	} else {
		u.saved[off] = buf
		u.savedBytes += n
	}
	return nil
}

// beforeWriteLocked saves what a write of [off, end) is about to overwrite. u.mu must be held.
func (u *undoLog) beforeWriteLocked(fd int, off, end int64) error {
	u.touched = true
	end = min(end, u.minSize)
	for p := off &^ (pageSize - 1); p < end; p += pageSize {
		if err := u.savePageLocked(fd, p); err != nil {
			return err
		}
	}
	return nil
}

// beforeTruncateLocked saves what cutting the file to size is about to drop: the page holding
// size and every page with data in [size, minSize), found with SEEK_DATA and SEEK_HOLE so holes
// are never read. u.mu must be held.
func (u *undoLog) beforeTruncateLocked(fd int, size int64) error {
	u.touched = true
	if size >= u.minSize {
		return nil
	}
	first := size &^ (pageSize - 1)
	if err := u.savePageLocked(fd, first); err != nil {
		return err
	}
	for off := first + pageSize; off < u.minSize; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) || (err == nil && data >= u.minSize) {
			break
		}
		if err != nil {
			// No SEEK_DATA on the backing file system: treat the rest as data.
			data = off
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			hole = u.minSize
		}
		hole = min(hole, u.minSize)
		for p := data &^ (pageSize - 1); p < hole; p += pageSize {
			if err := u.savePageLocked(fd, p); err != nil {
				return err
			}
		}
		off = (hole + pageSize - 1) &^ (pageSize - 1)
	}
	u.minSize = size
	return nil
}

// syncedLocked records that the file's current contents, of the given size, are durable. u.mu
// must be held.
func (u *undoLog) syncedLocked(size int64) {
	u.durableSize, u.minSize = size, size
	u.saved, u.savedBytes, u.touched = nil, 0, false
}

// restore puts the file open at fd back to its contents at its last fsync and returns how many
// bytes that changed: pages written back plus bytes cut from or added to its end.
func (u *undoLog) restore(fd int) (int64, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, err
	}
	undone := st.Size - u.durableSize
	if undone < 0 {
		undone = -undone
	}
	if err := unix.Ftruncate(fd, u.minSize); err != nil {
		return 0, fmt.Errorf("truncate to %d: %w", u.minSize, err)
	}
	if err := unix.Ftruncate(fd, u.durableSize); err != nil {
		return 0, fmt.Errorf("truncate to %d: %w", u.durableSize, err)
	}
	for off, b := range u.saved {
		undone += int64(len(b))
		if isZeroPage(b) {
			err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, int64(len(b)))
			if err == nil {
				continue
			}
		}
		if err := pwriteFull(fd, b, off); err != nil {
			return 0, fmt.Errorf("write back page at %d: %w", off, err)
		}
	}
	return undone, nil
}

func preadFull(fd int, buf []byte, off int64) error {
	for len(buf) > 0 {
		n, err := unix.Pread(fd, buf, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			// Past the end: the rest reads as zeros.
			clear(buf)
			return nil
		}
		buf, off = buf[n:], off+int64(n)
	}
	return nil
}

func pwriteFull(fd int, buf []byte, off int64) error {
	for len(buf) > 0 {
		n, err := unix.Pwrite(fd, buf, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		buf, off = buf[n:], off+int64(n)
	}
	return nil
}
