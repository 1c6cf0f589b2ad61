/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"

struct fileio {
	int fd;  /* buffered */
	int dfd; /* O_DIRECT, or -1 */
};

bool fileio_direct_ok(const void *buf, uint64_t off, size_t len)
{
	return len >= FILEIO_DIRECT_MIN && (uintptr_t)buf % FILEIO_DIRECT_ALIGN == 0 &&
	       off % FILEIO_DIRECT_ALIGN == 0 && len % FILEIO_DIRECT_ALIGN == 0;
}

static int fio_pread(void *ctx, void *buf, size_t len, uint64_t off)
{
	struct fileio *f = ctx;
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

static int fio_pwrite(void *ctx, const void *buf, size_t len, uint64_t off)
{
	struct fileio *f = ctx;
	const uint8_t *p = buf;
	int fd = f->dfd >= 0 && fileio_direct_ok(buf, off, len) ? f->dfd : f->fd;

	while (len > 0) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
		if (len % FILEIO_DIRECT_ALIGN)
			fd = f->fd; /* a short direct write left an unaligned rest */
	}
	return 0;
}

static int fio_sync(void *ctx)
{
	struct fileio *f = ctx;

	return fdatasync(f->fd) < 0 ? -errno : 0;
}

static int fio_punch_hole(void *ctx, uint64_t off, uint64_t len)
{
	struct fileio *f = ctx;

	if (fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) <
	    0)
		return -errno;
	return 0;
}

static int fio_truncate(void *ctx, uint64_t size)
{
	struct fileio *f = ctx;

	return ftruncate(f->fd, (off_t)size) < 0 ? -errno : 0;
}

static int fio_get_size(void *ctx, uint64_t *size)
{
	struct fileio *f = ctx;
	struct stat st;

	if (fstat(f->fd, &st) < 0)
		return -errno;
	*size = (uint64_t)st.st_size;
	return 0;
}

static void fio_close(void *ctx)
{
	struct fileio *f = ctx;

	close(f->fd);
	if (f->dfd >= 0)
		close(f->dfd);
	free(f);
}

const struct qcow_io_ops fileio_ops = {
    .pread = fio_pread,
    .pwrite = fio_pwrite,
    .sync = fio_sync,
    .punch_hole = fio_punch_hole,
    .truncate = fio_truncate,
    .get_size = fio_get_size,
    .close = fio_close,
};

int fileio_open(int fd, void **ctx, int *direct_fd)
{
	struct fileio *f = malloc(sizeof(*f));
	char proc[64];
	int err;

	if (!f)
		return -ENOMEM;
	f->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (f->fd < 0) {
		err = -errno;
		free(f);
		return err;
	}
	/*
	 * The same file for sure (not whatever the path names now); not
	 * locked: the store's lock on fd keeps other processes out.
	 */
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	f->dfd = open(proc, O_RDWR | O_DIRECT | O_CLOEXEC);
	*ctx = f;
	*direct_fd = f->dfd;
	return 0;
}
