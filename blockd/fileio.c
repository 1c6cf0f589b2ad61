/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "fileio.h"

/* The library's POSIX ops on the buffered descriptor, plus a direct one for bulk writes. */
struct fileio {
	void *posix; /* qcow_posix_ops context owning the buffered descriptor */
	int dfd;     /* O_DIRECT, or -1 */
};

bool fileio_direct_ok(const void *buf, uint64_t off, size_t len)
{
	return len >= FILEIO_DIRECT_MIN && (uintptr_t)buf % FILEIO_DIRECT_ALIGN == 0 &&
	       off % FILEIO_DIRECT_ALIGN == 0 && len % FILEIO_DIRECT_ALIGN == 0;
}

static int fio_pread(void *ctx, void *buf, size_t len, uint64_t off)
{
	struct fileio *f = ctx;

	return qcow_posix_ops.pread(f->posix, buf, len, off);
}

static int fio_pwrite(void *ctx, const void *buf, size_t len, uint64_t off)
{
	struct fileio *f = ctx;
	const uint8_t *p = buf;

	while (f->dfd >= 0 && fileio_direct_ok(p, off, len)) {
		ssize_t n = pwrite(f->dfd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	/* Small or unaligned (or the unaligned rest of a short direct write): buffered. */
	return len ? qcow_posix_ops.pwrite(f->posix, p, len, off) : 0;
}

static int fio_sync(void *ctx)
{
	struct fileio *f = ctx;

	return qcow_posix_ops.sync(f->posix);
}

static int fio_punch_hole(void *ctx, uint64_t off, uint64_t len)
{
	struct fileio *f = ctx;

	return qcow_posix_ops.punch_hole(f->posix, off, len);
}

static int fio_allocate(void *ctx, uint64_t off, uint64_t len)
{
	struct fileio *f = ctx;

	return qcow_posix_ops.allocate(f->posix, off, len);
}

static int fio_truncate(void *ctx, uint64_t size)
{
	struct fileio *f = ctx;

	return qcow_posix_ops.truncate(f->posix, size);
}

static int fio_get_size(void *ctx, uint64_t *size)
{
	struct fileio *f = ctx;

	return qcow_posix_ops.get_size(f->posix, size);
}

static void fio_close(void *ctx)
{
	struct fileio *f = ctx;

	qcow_posix_ops.close(f->posix);
	if (f->dfd >= 0)
		close(f->dfd);
	free(f);
}

const struct qcow_io_ops fileio_ops = {
    .pread = fio_pread,
    .pwrite = fio_pwrite,
    .sync = fio_sync,
    .punch_hole = fio_punch_hole,
    .allocate = fio_allocate,
    .truncate = fio_truncate,
    .get_size = fio_get_size,
    .close = fio_close,
};

int fileio_open(int fd, void **ctx, int *direct_fd)
{
	struct fileio *f = malloc(sizeof(*f));
	char proc[64];
	int dup_fd, err;

	if (!f)
		return -ENOMEM;
	dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (dup_fd < 0) {
		err = -errno;
		free(f);
		return err;
	}
	err = qcow_posix_adopt(dup_fd, &f->posix);
	if (err < 0) {
		close(dup_fd);
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
