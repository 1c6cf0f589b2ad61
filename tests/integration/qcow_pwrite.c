/* SPDX-License-Identifier: MIT */
/*
 * qcow_pwrite - a test helper that changes an image through the qcow
 * library, so scripts can hand the result to qemu-img.
 *
 *   qcow_pwrite IMAGE OFFSET DATAFILE      write DATAFILE's bytes at OFFSET
 *   qcow_pwrite IMAGE OFFSET -z LENGTH     write zeroes (may unmap)
 *   qcow_pwrite IMAGE OFFSET -d LENGTH     discard
 *
 * The image is opened read-write (a dirty image is repaired by the open),
 * changed, flushed and closed.  Exit status 0 on success, 1 otherwise.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qcow.h"

static int usage(void)
{
	fprintf(stderr, "usage: qcow_pwrite IMAGE OFFSET DATAFILE | -z LENGTH | -d LENGTH\n");
	return 1;
}

static int parse_u64(const char *s, uint64_t *v)
{
	char *end;
	errno = 0;
	unsigned long long x = strtoull(s, &end, 0);
	if (errno || end == s || *end)
		return -EINVAL;
	*v = x;
	return 0;
}

static int load(const char *path, void **buf, size_t *len)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) < 0 || st.st_size <= 0) {
		close(fd);
		return -EINVAL;
	}
	*len = (size_t)st.st_size;
	*buf = malloc(*len);
	if (!*buf) {
		close(fd);
		return -ENOMEM;
	}
	ssize_t n = read(fd, *buf, *len);
	close(fd);
	if (n != (ssize_t)*len) {
		free(*buf);
		return -EIO;
	}
	return 0;
}

int main(int argc, char **argv)
{
	uint64_t off, len = 0;
	void *data = NULL;
	size_t dlen = 0;
	char mode = 'w';
	if (argc == 4) {
		if (parse_u64(argv[2], &off))
			return usage();
		int rc = load(argv[3], &data, &dlen);
		if (rc) {
			fprintf(stderr, "qcow_pwrite: %s: %s\n", argv[3], strerror(-rc));
			return 1;
		}
	} else if (argc == 5 && (!strcmp(argv[3], "-z") || !strcmp(argv[3], "-d"))) {
		if (parse_u64(argv[2], &off) || parse_u64(argv[4], &len))
			return usage();
		mode = argv[3][1];
	} else {
		return usage();
	}

	char err[1024] = "";
	struct qcow_open_opts o = {.path = argv[1], .flags = QCOW_OPEN_RDWR};
	struct qcow_image *img;
	int rc = qcow_open(&o, &img, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "qcow_pwrite: %s: %s (%s)\n", argv[1], err, strerror(-rc));
		free(data);
		return 1;
	}
	if (mode == 'w')
		rc = qcow_write(img, data, off, dlen);
	else if (mode == 'z')
		rc = qcow_write_zeroes(img, off, len, QCOW_ZERO_MAY_UNMAP);
	else
		rc = qcow_discard(img, off, len);
	if (rc)
		fprintf(stderr, "qcow_pwrite: %c at %s: %s (%s)\n", mode, argv[2],
		        qcow_last_error(img), strerror(-rc));
	free(data);
	int status = rc ? 1 : 0;
	if (!rc) {
		rc = qcow_flush(img);
		if (rc) {
			fprintf(stderr, "qcow_pwrite: flush: %s\n", strerror(-rc));
			status = 1;
		}
	}
	rc = qcow_close(img);
	if (rc) {
		fprintf(stderr, "qcow_pwrite: close: %s\n", strerror(-rc));
		status = 1;
	}
	return status;
}
