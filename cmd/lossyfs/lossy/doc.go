// Package lossy is a FUSE passthrough file system that can forget, on command, everything that
// was not made durable, as a power cut would: tests of fsync discipline that SIGKILL cannot give,
// since SIGKILL leaves the kernel's page cache intact.
//
// # Durability model
//
// Strict POSIX, the weakest a correct program may assume:
//
//   - A file's data and size are durable once the file was fsynced or fdatasynced after they
//     were written. That includes writes the kernel makes from dirty shared mmap pages:
//     msync(MS_SYNC) reaches FUSE as WRITEs then FSYNC.
//   - A creation, rename, removal, mkdir or rmdir is durable once its directory was fsynced. The
//     durable namespace of a directory is its listing at its last fsync; at serve start,
//     everything in the backing directory counts as durable. A rename between directories is
//     two changes: the new name is durable when the new parent is synced, the old name gone when
//     the old parent is.
//
// A crash forgets everything else: each file's contents and size go back to its last fsync, each
// directory's entries to its listing at its last fsync (a name never made durable disappears; a
// durable name whose file was unlinked or renamed comes back with that file's durable contents),
// and whatever the kernel still holds dirty (mmap pages written and never synced) is dropped.
// Metadata other than size (mode, owner, times, extended attributes) is not modelled: it keeps
// its latest value. A directory that two durable listings name (renamed, only the new parent
// synced) comes back once, at its first name in path order; a journaling file system would have
// kept one of the two, too.
//
// # Design
//
// The mount is go-fuse's loopback over the backing directory, so the backing tree is always a
// normal, readable tree; the server's own state lives in StateDir in the backing root, hidden
// from the mount. A file's identity is its backing inode number.
//
//   - Namespace: on a directory's fsync the server records its listing (name, inode, mode). Each
//     file a recorded listing names is hard-linked into StateDir/ino/<inode> (the graveyard), so
//     unlinking it or renaming over it never loses an inode a durable listing still names; a
//     removed directory is moved into StateDir/dirs instead, which keeps its inode number from
//     being reused while a durable listing may name it.
//   - Data: an undo log per file. It keeps the file's size at its last fsync, the smallest size
//     it has had since, and the old contents of each 4 KiB page below that smallest size that a
//     WRITE, hole punch or truncation has overwritten since (saved before the change reaches the
//     backing file; a truncation finds the data it drops with SEEK_DATA and SEEK_HOLE, so holes
//     of a sparse file are never read, and all-zero pages cost no copy). An fsync drops the
//     saved pages. Memory is therefore the pages dirtied since the last fsync: fine for tests,
//     not for a production-sized working set. The backing file itself is never synced.
//
// # Crash
//
// Server.Crash, after the processes that used the mount are dead: (1) it freezes the mount: from
// then on writes and size changes report success and change nothing, namespace changes fail with
// EIO; (2) it unmounts: the kernel's writeback of dirty mmap pages at unmount arrives frozen and
// is dropped; a busy mount is retried for about half a second, then detached lazily (whoever
// still holds it keeps talking to the frozen old mount); (3) it undoes each durable file through
// its graveyard link (truncate to the smallest size, truncate to the durable size, write the
// saved pages back, punching holes for zero pages); (4) it assembles the durable tree in
// StateDir/rebuild from directories made anew (mode and owner as recorded) and graveyard links,
// and swaps it in for the root's contents; (5) it takes the result as the new durable state, as
// at serve start, and mounts again at the same mountpoint with a fresh kernel cache. Unmounting
// and mounting again is simpler to prove than invalidating the kernel's cache in place: nothing
// of the old page cache, dentry cache or attribute cache can survive it.
//
// # Use from tests
//
// The server must run as its own process: a thread of the serving process blocked in a page
// fault on the mount is invisible to the Go scheduler and can deadlock the server. Build builds
// the lossyfs binary, Start runs `lossyfs serve` and waits until the mount is usable, and a
// Process's Crash and Stop drive it; Available says whether the machine can mount at all.
package lossy
