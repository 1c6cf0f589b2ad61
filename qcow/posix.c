/* SPDX-License-Identifier: MIT */
/*
 * posix.c - qcow_io_ops over a plain file descriptor.  Writable opens take
 * an exclusive flock and read-only opens a shared one, so two processes
 * never write one image at once (and nobody writes an image another
 * process reads as a backing file); qemu's own byte-range locks are
 * honoured and taken too, so qemu and we refuse each other the same way.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

struct posix_file {
	int fd;
};

static int posix_pread(void *ctx, void *buf, size_t len, uint64_t off)
{
	struct posix_file *f = ctx;
	uint8_t *p = buf;

	while (len > 0) {
		ssize_t n = pread(f->fd, p, len, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0) {
			memset(p, 0, len); /* past the end of the file */
			return 0;
		}
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

static int posix_pwrite(void *ctx, const void *buf, size_t len, uint64_t off)
{
	struct posix_file *f = ctx;
	const uint8_t *p = buf;

	while (len > 0) {
		ssize_t n = pwrite(f->fd, p, len, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

static int posix_sync(void *ctx)
{
	struct posix_file *f = ctx;

	return fdatasync(f->fd) < 0 ? -errno : 0;
}

static int posix_punch_hole(void *ctx, uint64_t off, uint64_t len)
{
	struct posix_file *f = ctx;

	if (fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) <
	    0)
		return -errno;
	return 0;
}

static int posix_allocate(void *ctx, uint64_t off, uint64_t len)
{
	struct posix_file *f = ctx;

	/* Unwritten extents: they read as zeros, and the size stays. */
	while (fallocate(f->fd, FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	return 0;
}

static int posix_truncate(void *ctx, uint64_t size)
{
	struct posix_file *f = ctx;

	return ftruncate(f->fd, (off_t)size) < 0 ? -errno : 0;
}

static int posix_get_size(void *ctx, uint64_t *size)
{
	struct posix_file *f = ctx;
	struct stat st;

	if (fstat(f->fd, &st) < 0)
		return -errno;
	*size = (uint64_t)st.st_size;
	return 0;
}

static void posix_close(void *ctx)
{
	struct posix_file *f = ctx;

	close(f->fd);
	free(f);
}

const struct qcow_io_ops qcow_posix_ops = {
    .pread = posix_pread,
    .pwrite = posix_pwrite,
    .sync = posix_sync,
    .punch_hole = posix_punch_hole,
    .allocate = posix_allocate,
    .truncate = posix_truncate,
    .get_size = posix_get_size,
    .close = posix_close,
};

/*
 * qemu's image locking, so that qemu and we keep out of each other's way:
 * byte 100 + i is read-locked (an OFD lock) by every process holding
 * permission i, byte 200 + i by every process that does not let others
 * have it.  Permission 0 is "consistent read", 1 is "write".
 */
#define QEMU_PERM_BASE   100
#define QEMU_SHARED_BASE 200
#define QEMU_PERM_READ   0
#define QEMU_PERM_WRITE  1

static bool qemu_byte_locked(int fd, off_t byte)
{
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1};

	return fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
}

static int qemu_lock_byte(int fd, off_t byte)
{
	struct flock fl = {.l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1};

	return fcntl(fd, F_OFD_SETLK, &fl) == 0 ? 0 : -errno;
}

int qcow_posix_lock(int fd, bool writable)
{
	if (flock(fd, (writable ? LOCK_EX : LOCK_SH) | LOCK_NB) < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	/* A writer elsewhere (qemu holding "write"), or, to write, one that forbids it. */
	if (qemu_byte_locked(fd, QEMU_PERM_BASE + QEMU_PERM_WRITE) ||
	    (writable && qemu_byte_locked(fd, QEMU_SHARED_BASE + QEMU_PERM_WRITE)))
		goto busy;
	/* We read consistently, may write, and let nobody else write meanwhile. */
	if (qemu_lock_byte(fd, QEMU_PERM_BASE + QEMU_PERM_READ) == -EAGAIN ||
	    (writable && qemu_lock_byte(fd, QEMU_PERM_BASE + QEMU_PERM_WRITE) == -EAGAIN) ||
	    qemu_lock_byte(fd, QEMU_SHARED_BASE + QEMU_PERM_WRITE) == -EAGAIN)
		goto busy;
	return 0;
busy:
	flock(fd, LOCK_UN);
	return -EAGAIN;
}

int qcow_posix_open(const char *path, int open_flags, void **ctx)
{
	struct posix_file *f;
	bool writable = (open_flags & O_ACCMODE) != O_RDONLY;
	int fd, err;

	fd = open(path, open_flags | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	err = qcow_posix_lock(fd, writable);
	if (err < 0)
		goto out_close;
	f = malloc(sizeof(*f));
	if (!f) {
		err = -ENOMEM;
		goto out_close;
	}
	f->fd = fd;
	*ctx = f;
	return 0;

out_close:
	close(fd);
	return err;
}

int qcow_posix_adopt(int fd, void **ctx)
{
	struct posix_file *f = malloc(sizeof(*f));

	if (!f)
		return -ENOMEM;
	f->fd = fd;
	*ctx = f;
	return 0;
}
