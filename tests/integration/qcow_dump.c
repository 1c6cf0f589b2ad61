/* SPDX-License-Identifier: MIT */
/*
 * qcow_dump - writes the whole virtual disk of a qcow2 image, as the qcow
 * library reads it, raw to a file or stdout.  A test helper: the scripts
 * compare its output with `qemu-img convert -O raw`.
 *
 *   qcow_dump IMAGE [OUTPUT]     (OUTPUT "-" or absent: stdout)
 *
 * The image is opened read-only with its backing chain.  Runs of zeros are
 * skipped with lseek when the output is a regular file, so multi-GiB sparse
 * disks stay cheap.  Exit status 0 on success, 1 with a message otherwise.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qcow.h"

#define CHUNK (1u << 20)

static int write_all(int fd, const uint8_t *buf, size_t len)
{
	while (len) {
		ssize_t n = write(fd, buf, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

static bool all_zero(const uint8_t *buf, size_t len)
{
	return len == 0 || (buf[0] == 0 && memcmp(buf, buf + 1, len - 1) == 0);
}

int main(int argc, char **argv)
{
	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: qcow_dump IMAGE [OUTPUT]\n");
		return 1;
	}
	const char *out_path = argc == 3 ? argv[2] : "-";
	char err[1024] = "";
	struct qcow_open_opts o = {.path = argv[1]};
	struct qcow_image *img;
	int rc = qcow_open(&o, &img, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "qcow_dump: %s: %s (%s)\n", argv[1], err, strerror(-rc));
		return 1;
	}
	struct qcow_info info;
	qcow_get_info(img, &info);

	int fd = 1;
	if (strcmp(out_path, "-") != 0) {
		fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd < 0) {
			fprintf(stderr, "qcow_dump: %s: %s\n", out_path, strerror(errno));
			qcow_close(img);
			return 1;
		}
	}
	struct stat st;
	bool sparse = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
	uint8_t *buf = malloc(CHUNK);
	if (!buf) {
		fprintf(stderr, "qcow_dump: out of memory\n");
		qcow_close(img);
		return 1;
	}
	int status = 0;
	for (uint64_t off = 0; off < info.size_bytes;) {
		size_t n = info.size_bytes - off < CHUNK ? (size_t)(info.size_bytes - off) : CHUNK;
		rc = qcow_read(img, buf, off, n);
		if (rc) {
			fprintf(stderr, "qcow_dump: read at %" PRIu64 ": %s (%s)\n", off,
			        qcow_last_error(img), strerror(-rc));
			status = 1;
			break;
		}
		if (sparse && all_zero(buf, n)) {
			if (lseek(fd, (off_t)n, SEEK_CUR) < 0)
				rc = -errno;
		} else {
			rc = write_all(fd, buf, n);
		}
		if (rc) {
			fprintf(stderr, "qcow_dump: write: %s\n", strerror(-rc));
			status = 1;
			break;
		}
		off += n;
	}
	if (status == 0 && sparse && ftruncate(fd, (off_t)info.size_bytes) < 0) {
		fprintf(stderr, "qcow_dump: truncate: %s\n", strerror(errno));
		status = 1;
	}
	free(buf);
	if (fd != 1 && close(fd) < 0)
		status = 1;
	rc = qcow_close(img);
	if (rc) {
		fprintf(stderr, "qcow_dump: close: %s\n", strerror(-rc));
		status = 1;
	}
	return status;
}
