/* SPDX-License-Identifier: MIT */
/*
 * image_fs.c - blockfs --image: one qcow2 file and its snapshots, through
 * the qcow library, no daemon.
 *
 *   MOUNTPOINT/disk                    the volume, raw (writable with --rw)
 *   MOUNTPOINT/info.json               size, allocated bytes, backing file, snapshots
 *   MOUNTPOINT/snapshots/SNAP/disk     snapshot SNAP, raw, read-only
 *   MOUNTPOINT/snapshots/SNAP/info.json
 *
 * The image is opened with the qcow library before mounting, so errors
 * (missing file, not qcow2, held by a writer) come out before anything is
 * mounted; libfuse then mounts and only afterwards goes to the background.
 * The file is locked like blockctl does it: shared when read-only, so a
 * writer elsewhere is refused, exclusive with --rw.  Without --rw the
 * mount itself is read-only, so the kernel answers every write with EROFS.
 * FUSE calls come from several threads; one mutex serialises the library.
 */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "blockfs.h"
#include "qcow.h"

struct view {
	char name[1024]; /* snapshot name; "" for the volume itself */
	struct qcow_image *img;
	uint64_t size;
	uint64_t allocated; /* the volume: its file's space; a snapshot: its clusters in the file */
	struct timespec mtime;
};

static struct {
	const char *image;
	int rw;
	int fd;
	pthread_mutex_t lock;
	struct view main;
	struct view *snaps;
	uint32_t n_snaps;
	char backing[PATH_MAX]; /* canonical path of the backing file, or "" */
} fs = {.fd = -1, .lock = PTHREAD_MUTEX_INITIALIZER};

static int open_view(struct view *v, const char *snapshot, char *err, size_t errlen)
{
	struct qcow_open_opts o = {
	    .path = fs.image,
	    .ops = &qcow_posix_ops,
	    .flags = fs.rw && !snapshot ? QCOW_OPEN_RDWR : 0,
	    .snapshot = snapshot,
	};
	struct qcow_info info;
	int dupfd = fcntl(fs.fd, F_DUPFD_CLOEXEC, 0), rc;

	if (dupfd < 0 || qcow_posix_adopt(dupfd, &o.ctx) < 0) {
		if (dupfd >= 0)
			close(dupfd);
		snprintf(err, errlen, "%s: %s", fs.image, strerror(errno ? errno : ENOMEM));
		return -1;
	}
	rc = qcow_open(&o, &v->img, err, errlen);
	if (rc < 0) {
		qcow_posix_ops.close(o.ctx);
		return -1;
	}
	qcow_get_info(v->img, &info);
	v->size = info.size_bytes;
	snprintf(v->name, sizeof(v->name), "%s", snapshot ? snapshot : "");
	if (qcow_stored_bytes(v->img, &v->allocated) < 0) {
		snprintf(err, errlen, "%s", qcow_last_error(v->img));
		return -1;
	}
	return 0;
}

static int open_all(char *err, size_t errlen)
{
	struct qcow_snapshot_info si;
	struct qcow_info info;
	struct stat sb;

	fs.fd = open(fs.image, (fs.rw ? O_RDWR : O_RDONLY) | O_CLOEXEC);
	if (fs.fd < 0) {
		snprintf(err, errlen, "%s: %s", fs.image, strerror(errno));
		return -1;
	}
	if (qcow_posix_lock(fs.fd, fs.rw) < 0) {
		snprintf(err, errlen, "%s: image is in use by another process", fs.image);
		return -1;
	}
	if (open_view(&fs.main, NULL, err, errlen) < 0)
		return -1;
	fstat(fs.fd, &sb);
	fs.main.mtime = sb.st_mtim;
	/* Resolved now: in the background the working folder is "/". */
	qcow_get_info(fs.main.img, &info);
	if (info.backing_path[0] && !realpath(info.backing_path, fs.backing))
		snprintf(fs.backing, sizeof(fs.backing), "%s", info.backing_path);
	fs.n_snaps = qcow_snapshot_count(fs.main.img);
	fs.snaps = calloc(fs.n_snaps ? fs.n_snaps : 1, sizeof(*fs.snaps));
	if (!fs.snaps) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (uint32_t i = 0; i < fs.n_snaps; i++) {
		if (qcow_snapshot_get(fs.main.img, i, &si) < 0)
			return -1;
		if (!si.name[0] || strchr(si.name, '/') || strcmp(si.name, ".") == 0 ||
		    strcmp(si.name, "..") == 0) {
			snprintf(err, errlen, "%s: snapshot name \"%.64s\" cannot be a file name",
			         fs.image, si.name);
			return -1;
		}
		if (open_view(&fs.snaps[i], si.name, err, errlen) < 0)
			return -1;
		fs.snaps[i].mtime = (struct timespec){(time_t)si.date_sec, (long)si.date_nsec};
	}
	return 0;
}

/*
 * A view's allocated bytes and mtime, read under the lock.  The volume
 * changes under --rw, so its file tells its space and time now.
 */
static void view_state(struct view *v, uint64_t *allocated, struct timespec *mtime)
{
	struct stat sb;

	pthread_mutex_lock(&fs.lock);
	if (v == &fs.main && fstat(fs.fd, &sb) == 0) {
		fs.main.allocated = (uint64_t)sb.st_blocks * 512;
		fs.main.mtime = sb.st_mtim;
	}
	*allocated = v->allocated;
	*mtime = v->mtime;
	pthread_mutex_unlock(&fs.lock);
}

/* The JSON of info.json for view v; the caller frees it. */
static char *info_json(struct view *v)
{
	struct qcow_info info;
	struct qcow_snapshot_info si;
	json_t *o, *snaps = json_array();
	struct timespec mtime;
	uint64_t allocated;

	view_state(v, &allocated, &mtime);
	pthread_mutex_lock(&fs.lock);
	qcow_get_info(fs.main.img, &info);
	if (!v->name[0]) {
		for (uint32_t i = 0; i < fs.n_snaps; i++) {
			char when[32];
			struct tm tm;
			time_t t;

			if (qcow_snapshot_get(fs.main.img, i, &si) < 0)
				continue;
			t = (time_t)si.date_sec;
			gmtime_r(&t, &tm);
			strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
			json_array_append_new(snaps, json_pack("{s:s,s:s,s:s,s:I}", "name", si.name,
			                                       "id", si.id, "created", when, "size",
			                                       (json_int_t)si.disk_size_bytes));
		}
	}
	pthread_mutex_unlock(&fs.lock);
	o = json_pack("{s:I,s:I,s:o}", "size", (json_int_t)v->size, "allocated",
	              (json_int_t)allocated, "snapshots", snaps);
	json_object_set_new(o, "backing", fs.backing[0] ? json_string(fs.backing) : json_null());
	if (v->name[0])
		json_object_set_new(o, "snapshot", json_string(v->name));
	return blockfs_json_text(o);
}

enum node { N_NONE, N_ROOT, N_SNAPDIR, N_SNAP, N_DISK, N_INFO };

/* Resolves PATH to a node and its view. */
static enum node resolve(const char *path, struct view **v)
{
	const char *rest;

	*v = &fs.main;
	if (strcmp(path, "/") == 0)
		return N_ROOT;
	if (strcmp(path, "/disk") == 0)
		return N_DISK;
	if (strcmp(path, "/info.json") == 0)
		return N_INFO;
	if (strcmp(path, "/snapshots") == 0)
		return N_SNAPDIR;
	if (strncmp(path, "/snapshots/", 11) != 0)
		return N_NONE;
	rest = path + 11;
	for (uint32_t i = 0; i < fs.n_snaps; i++) {
		size_t n = strlen(fs.snaps[i].name);

		if (strncmp(rest, fs.snaps[i].name, n) != 0)
			continue;
		*v = &fs.snaps[i];
		if (rest[n] == '\0')
			return N_SNAP;
		if (strcmp(rest + n, "/disk") == 0)
			return N_DISK;
		if (strcmp(rest + n, "/info.json") == 0)
			return N_INFO;
	}
	return N_NONE;
}

static int fs_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	struct view *v;
	enum node n = resolve(path, &v);
	char *text;

	uint64_t allocated;
	struct timespec mtime;

	(void)fi;
	view_state(v, &allocated, &mtime);
	memset(st, 0, sizeof(*st));
	st->st_uid = getuid();
	st->st_gid = getgid();
	st->st_mtim = st->st_ctim = st->st_atim = mtime;
	switch (n) {
	case N_ROOT:
	case N_SNAPDIR:
	case N_SNAP:
		st->st_mode = S_IFDIR | 0555;
		st->st_nlink = 2;
		return 0;
	case N_DISK:
		st->st_mode = S_IFREG | (fs.rw && v == &fs.main ? 0644 : 0444);
		st->st_nlink = 1;
		st->st_size = (off_t)v->size;
		st->st_blocks = (blkcnt_t)((allocated + 511) / 512);
		return 0;
	case N_INFO:
		text = info_json(v);
		if (!text)
			return -ENOMEM;
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		st->st_size = (off_t)strlen(text);
		st->st_blocks = (st->st_size + 511) / 512;
		free(text);
		return 0;
	case N_NONE:
		break;
	}
	return -ENOENT;
}

static int fs_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
                      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
	struct view *v;
	enum node n = resolve(path, &v);

	(void)off;
	(void)fi;
	(void)flags;
	if (n != N_ROOT && n != N_SNAPDIR && n != N_SNAP)
		return -ENOTDIR;
	fill(buf, ".", NULL, 0, 0);
	fill(buf, "..", NULL, 0, 0);
	if (n == N_SNAPDIR) {
		for (uint32_t i = 0; i < fs.n_snaps; i++)
			fill(buf, fs.snaps[i].name, NULL, 0, 0);
		return 0;
	}
	fill(buf, "disk", NULL, 0, 0);
	fill(buf, "info.json", NULL, 0, 0);
	if (n == N_ROOT)
		fill(buf, "snapshots", NULL, 0, 0);
	return 0;
}

static int fs_open(const char *path, struct fuse_file_info *fi)
{
	struct view *v;
	enum node n = resolve(path, &v);
	bool writing = (fi->flags & O_ACCMODE) != O_RDONLY;

	if (n == N_NONE)
		return -ENOENT;
	if (n != N_DISK && n != N_INFO)
		return -EISDIR;
	if (writing && (n == N_INFO || v != &fs.main || !fs.rw))
		return -EROFS;
	if (fi->flags & O_TRUNC)
		return -EINVAL; /* a disk has a fixed size */
	if (n == N_DISK)
		blockfs_readahead_once();
	return 0;
}

static int fs_read(const char *path, char *buf, size_t len, off_t off, struct fuse_file_info *fi)
{
	struct view *v;
	enum node n = resolve(path, &v);
	int rc;

	(void)fi;
	if (off < 0)
		return -EINVAL;
	if (n == N_INFO) {
		char *text = info_json(v);

		if (!text)
			return -ENOMEM;
		rc = blockfs_read_text(text, buf, len, off);
		free(text);
		return rc;
	}
	if (n != N_DISK)
		return -EISDIR;
	if ((uint64_t)off >= v->size)
		return 0;
	if (len > v->size - (uint64_t)off)
		len = (size_t)(v->size - (uint64_t)off);
	pthread_mutex_lock(&fs.lock);
	rc = qcow_read(v->img, buf, (uint64_t)off, len);
	pthread_mutex_unlock(&fs.lock);
	return rc < 0 ? rc : (int)len;
}

static int fs_write(const char *path, const char *buf, size_t len, off_t off,
                    struct fuse_file_info *fi)
{
	struct view *v;
	enum node n = resolve(path, &v);
	int rc;

	(void)fi;
	if (n != N_DISK || v != &fs.main || !fs.rw)
		return -EROFS;
	if (off < 0 || (uint64_t)off > v->size)
		return -EINVAL;
	if ((uint64_t)off == v->size && len > 0)
		return -ENOSPC;
	if (len > v->size - (uint64_t)off)
		len = (size_t)(v->size -
		               (uint64_t)off); /* a short write at the end, like a block device */
	pthread_mutex_lock(&fs.lock);
	rc = qcow_write(v->img, buf, (uint64_t)off, len);
	pthread_mutex_unlock(&fs.lock);
	return rc < 0 ? rc : (int)len;
}

static int fs_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	int rc;

	(void)path;
	(void)datasync;
	(void)fi;
	if (!fs.rw)
		return 0;
	pthread_mutex_lock(&fs.lock);
	rc = qcow_flush(fs.main.img);
	pthread_mutex_unlock(&fs.lock);
	return rc;
}

static int fs_fallocate(const char *path, int mode, off_t off, off_t len, struct fuse_file_info *fi)
{
	struct view *v;
	enum node n = resolve(path, &v);
	int rc;

	(void)fi;
	if (n != N_DISK || v != &fs.main || !fs.rw)
		return -EROFS;
	if (mode != (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE))
		return -EOPNOTSUPP;
	if (off < 0 || len <= 0 || (uint64_t)off >= v->size)
		return off < 0 || len <= 0 ? -EINVAL : 0;
	if ((uint64_t)len > v->size - (uint64_t)off)
		len = (off_t)(v->size - (uint64_t)off);
	/* Reads as zeros afterwards; whole clusters give their space back. */
	pthread_mutex_lock(&fs.lock);
	rc = qcow_write_zeroes(v->img, (uint64_t)off, (uint64_t)len, QCOW_ZERO_MAY_UNMAP);
	pthread_mutex_unlock(&fs.lock);
	return rc;
}

static int fs_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
	struct view *v;
	enum node n = resolve(path, &v);

	(void)fi;
	if (n != N_DISK || v != &fs.main || !fs.rw)
		return -EROFS;
	return (uint64_t)size == v->size ? 0 : -EINVAL;
}

static void close_all(void);

static void fs_destroy(void *private_data)
{
	(void)private_data;
	close_all();
}

static const struct fuse_operations ops = {
    .getattr = fs_getattr,
    .readdir = fs_readdir,
    .open = fs_open,
    .read = fs_read,
    .write = fs_write,
    .fsync = fs_fsync,
    .fallocate = fs_fallocate,
    .truncate = fs_truncate,
    .destroy = fs_destroy,
};

/* Lets go of whatever open_all() got, after a failure or an unmount. */
static void close_all(void)
{
	for (uint32_t i = 0; i < fs.n_snaps; i++)
		if (fs.snaps[i].img)
			qcow_close(fs.snaps[i].img);
	free(fs.snaps);
	fs.snaps = NULL;
	fs.n_snaps = 0;
	if (fs.main.img && qcow_close(fs.main.img) < 0)
		fprintf(stderr, "blockfs: closing %s failed\n", fs.image);
	fs.main.img = NULL;
	if (fs.fd >= 0)
		close(fs.fd);
	fs.fd = -1;
}

int image_mode(struct fuse_args *args, const char *image, bool rw)
{
	char err[512];
	int rc;

	fs.image = image;
	fs.rw = rw;
	if (open_all(err, sizeof(err)) < 0) {
		fprintf(stderr, "blockfs: %s\n", err);
		close_all();
		return 1;
	}
	if (!fs.rw)
		fuse_opt_add_arg(args, "-oro");
	rc = fuse_main(args->argc, args->argv, &ops, NULL);
	close_all(); /* when fuse_main() failed before mounting; else already done */
	return rc;
}
