/* SPDX-License-Identifier: MIT */
/*
 * image_file.c - raw and qcow2 image files behind one interface (see
 * image_file.h).
 *
 * Every path is first opened here with O_NONBLOCK and checked with fstat,
 * so that a FIFO or a directory given by mistake is refused instead of
 * hanging or failing later with a confusing message; only then is a
 * qcow2 image handed to the library, which opens it again itself.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "blockctl.h"
#include "image_file.h"

/* Bytes read to recognise a qcow2 image. */
#define PROBE_BYTES 8

int image_format_parse(const char *name, enum image_format *format)
{
	if (strcmp(name, "raw") == 0) {
		*format = IMAGE_FORMAT_RAW;
		return 0;
	}
	if (strcmp(name, "qcow2") == 0) {
		*format = IMAGE_FORMAT_QCOW2;
		return 0;
	}
	return -EINVAL;
}

const char *image_format_name(enum image_format format)
{
	switch (format) {
	case IMAGE_FORMAT_RAW:
		return "raw";
	case IMAGE_FORMAT_QCOW2:
		return "qcow2";
	default:
		return "auto";
	}
}

static int file_errno(const char *path, const char *what, int err)
{
	char message[512];

	if (what)
		snprintf(message, sizeof(message), "%s: %s", what, strerror(err));
	else
		snprintf(message, sizeof(message), "%s", strerror(err));
	cli_file_error(path, message);
	return -err;
}

/* Opens path without blocking and makes sure it holds an image at all. */
static int open_checked(const char *path, int flags, int *out_fd)
{
	struct stat st;
	int fd;

	fd = open(path, flags | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return file_errno(path, NULL, errno);
	if (fstat(fd, &st) < 0) {
		int err = errno;

		close(fd);
		return file_errno(path, NULL, err);
	}
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
		close(fd);
		cli_file_error(path, "not a regular file or block device");
		return -EINVAL;
	}
	/* Reads and writes from here on block as usual. */
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0) {
		int err = errno;

		close(fd);
		return file_errno(path, NULL, err);
	}
	*out_fd = fd;
	return 0;
}

static int pread_full(int fd, void *buf, size_t len, uint64_t off, size_t *got)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, (char *)buf + done, len - done, (off_t)(off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		done += (size_t)n;
	}
	*got = done;
	return 0;
}

static int pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pwrite(fd, (const char *)buf + done, len - done, (off_t)(off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;
		done += (size_t)n;
	}
	return 0;
}

static int probe_format(const char *path, int fd, enum image_format *format)
{
	unsigned char buf[PROBE_BYTES];
	size_t got;
	int ret;

	ret = pread_full(fd, buf, sizeof(buf), 0, &got);
	if (ret < 0)
		return file_errno(path, "reading the header", -ret);
	*format = got >= 4 && qcow_probe(buf, got) ? IMAGE_FORMAT_QCOW2 : IMAGE_FORMAT_RAW;
	return 0;
}

static int open_raw(struct image_file *f, int fd)
{
	off_t end = lseek(fd, 0, SEEK_END);

	if (end < 0)
		return file_errno(f->path, NULL, errno);
	f->fd = fd;
	f->size_bytes = (uint64_t)end;
	return 0;
}

static int open_qcow2(struct image_file *f, unsigned flags, const char *snapshot)
{
	struct qcow_open_opts opts = {
	    .path = f->path,
	    .flags = ((flags & IMAGE_OPEN_WRITE) ? QCOW_OPEN_RDWR : 0) |
	             ((flags & IMAGE_OPEN_NO_BACKING) ? QCOW_OPEN_NO_BACKING : 0) |
	             ((flags & IMAGE_OPEN_REPAIR) ? QCOW_OPEN_REPAIR : 0) |
	             ((flags & IMAGE_OPEN_NO_PROBE) ? QCOW_OPEN_NO_PROBE : 0),
	    .snapshot = snapshot,
	};
	struct qcow_info info;
	char err[1024] = "";
	int ret;

	ret = qcow_open(&opts, &f->qcow, err, sizeof(err));
	if (ret < 0) {
		cli_file_error(f->path, err[0] ? err : strerror(-ret));
		return ret;
	}
	qcow_get_info(f->qcow, &info);
	f->size_bytes = info.size_bytes;
	return 0;
}

static void image_file_init(struct image_file *f, const char *path, bool writable)
{
	memset(f, 0, sizeof(*f));
	f->path = path;
	f->fd = -1;
	f->writable = writable;
}

/* snapshot: NULL, or the snapshot to show (read-only qcow2 opens only). */
static int open_any(struct image_file *f, const char *path, enum image_format format,
                    unsigned flags, const char *snapshot)
{
	bool writable = flags & IMAGE_OPEN_WRITE;
	int fd = -1, ret;

	image_file_init(f, path, writable);
	ret = open_checked(path, writable ? O_RDWR : O_RDONLY, &fd);
	if (ret < 0)
		return ret;
	ret = probe_format(path, fd, &f->format);
	if (ret < 0)
		goto out_close;
	if (format == IMAGE_FORMAT_QCOW2 && f->format != IMAGE_FORMAT_QCOW2) {
		cli_file_error(path, "not a qcow2 image (no qcow2 magic)");
		ret = -EINVAL;
		goto out_close;
	}
	if (format == IMAGE_FORMAT_RAW)
		f->format = IMAGE_FORMAT_RAW;
	if (f->format == IMAGE_FORMAT_RAW && snapshot) {
		cli_file_error(path, "a raw image has no snapshots");
		ret = -EINVAL;
		goto out_close;
	}
	if (f->format == IMAGE_FORMAT_RAW) {
		ret = open_raw(f, fd);
		if (ret < 0)
			goto out_close;
		return 0;
	}
	close(fd);
	return open_qcow2(f, flags, snapshot);

out_close:
	close(fd);
	return ret;
}

int image_file_open(struct image_file *f, const char *path, enum image_format format,
                    unsigned flags)
{
	return open_any(f, path, format, flags, NULL);
}

int image_file_open_snapshot(struct image_file *f, const char *path, enum image_format format,
                             const char *snapshot)
{
	return open_any(f, path, format, 0, snapshot);
}

int image_file_create_raw(struct image_file *f, const char *path, uint64_t size_bytes)
{
	int fd, err;

	image_file_init(f, path, true);
	f->format = IMAGE_FORMAT_RAW;
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0644);
	if (fd < 0)
		return file_errno(path, NULL, errno);
	if (ftruncate(fd, (off_t)size_bytes) < 0) {
		err = errno;
		close(fd);
		unlink(path);
		return file_errno(path, "setting the size", err);
	}
	f->fd = fd;
	f->size_bytes = size_bytes;
	return 0;
}

int image_file_create_qcow2(struct image_file *f, const struct qcow_create_opts *opts)
{
	char err[1024] = "";
	int ret;

	ret = qcow_create(opts, err, sizeof(err));
	if (ret < 0) {
		cli_file_error(opts->path, err[0] ? err : strerror(-ret));
		return ret;
	}
	image_file_init(f, opts->path, true);
	f->format = IMAGE_FORMAT_QCOW2;
	ret = open_qcow2(f, IMAGE_OPEN_WRITE | IMAGE_OPEN_NO_BACKING, NULL);
	if (ret < 0)
		unlink(opts->path);
	return ret;
}

int image_file_read(struct image_file *f, void *buf, uint64_t off, size_t len)
{
	size_t got;
	int ret;

	if (f->format == IMAGE_FORMAT_QCOW2) {
		ret = qcow_read(f->qcow, buf, off, len);
		if (ret < 0)
			cli_file_error(f->path, qcow_last_error(f->qcow));
		return ret;
	}
	ret = pread_full(f->fd, buf, len, off, &got);
	if (ret < 0)
		return file_errno(f->path, "read", -ret);
	/* A file that shrank under us reads as zeros past its end. */
	memset((char *)buf + got, 0, len - got);
	return 0;
}

int image_file_write(struct image_file *f, const void *buf, uint64_t off, size_t len)
{
	int ret;

	if (f->format == IMAGE_FORMAT_QCOW2) {
		ret = qcow_write(f->qcow, buf, off, len);
		if (ret < 0)
			cli_file_error(f->path, qcow_last_error(f->qcow));
		return ret;
	}
	ret = pwrite_full(f->fd, buf, len, off);
	if (ret < 0)
		return file_errno(f->path, "write", -ret);
	return 0;
}

int image_file_write_compressed(struct image_file *f, const void *buf, uint64_t off, size_t len)
{
	int ret;

	if (f->format != IMAGE_FORMAT_QCOW2) {
		cli_file_error(f->path, "only qcow2 images hold compressed clusters");
		return -EINVAL;
	}
	ret = qcow_write_compressed(f->qcow, buf, off, len);
	if (ret < 0)
		cli_file_error(f->path, qcow_last_error(f->qcow));
	return ret;
}

/* Raw files: data and holes as the file system reports them. */
static int raw_status(struct image_file *f, uint64_t off, uint64_t len, struct qcow_extent *ext)
{
	off_t data, hole;

	*ext = (struct qcow_extent){.offset = off, .length = len, .flags = QCOW_EXTENT_DATA};
	data = lseek(f->fd, (off_t)off, SEEK_DATA);
	if (data < 0 && errno == ENXIO) {
		/* Nothing but a hole from off to the end of the file. */
		ext->flags = QCOW_EXTENT_ZERO;
		return 0;
	}
	if (data < 0)
		return 0; /* no SEEK_DATA here: all data */
	if ((uint64_t)data > off) {
		ext->flags = QCOW_EXTENT_ZERO;
		if ((uint64_t)data - off < len)
			ext->length = (uint64_t)data - off;
		return 0;
	}
	hole = lseek(f->fd, (off_t)off, SEEK_HOLE);
	if (hole > data && (uint64_t)hole - off < len)
		ext->length = (uint64_t)hole - off;
	return 0;
}

int image_file_status(struct image_file *f, uint64_t off, uint64_t len, struct qcow_extent *ext)
{
	int ret;

	if (f->format == IMAGE_FORMAT_RAW)
		return raw_status(f, off, len, ext);
	ret = qcow_block_status(f->qcow, off, len, ext);
	if (ret < 0) {
		cli_file_error(f->path, qcow_last_error(f->qcow));
		return ret;
	}
	/* A bad extent would make the callers loop forever or skip data. */
	if (ext->offset != off || ext->length == 0 || ext->length > len) {
		char message[256];

		snprintf(message, sizeof(message),
		         "block status at offset %llu returned a bad extent (%llu+%llu)",
		         (unsigned long long)off, (unsigned long long)ext->offset,
		         (unsigned long long)ext->length);
		cli_file_error(f->path, message);
		return -EIO;
	}
	return 0;
}

int image_file_close(struct image_file *f)
{
	int ret = 0;

	if (f->format == IMAGE_FORMAT_QCOW2 && f->qcow) {
		ret = qcow_close(f->qcow);
		f->qcow = NULL;
		if (ret < 0)
			file_errno(f->path, "closing", -ret);
	}
	if (f->fd >= 0) {
		if (f->writable && fsync(f->fd) < 0 && errno != EINVAL)
			ret = file_errno(f->path, "fsync", errno);
		if (close(f->fd) < 0 && ret == 0)
			ret = file_errno(f->path, "closing", errno);
		f->fd = -1;
	}
	return ret;
}

void image_file_abandon(struct image_file *f)
{
	if (f->qcow)
		qcow_abandon(f->qcow);
	f->qcow = NULL;
	if (f->fd >= 0)
		close(f->fd);
	f->fd = -1;
}

int image_file_disk_usage(const char *path, uint64_t *bytes)
{
	struct stat st;

	if (stat(path, &st) < 0)
		return file_errno(path, NULL, errno);
	*bytes = (uint64_t)st.st_blocks * 512;
	return 0;
}
