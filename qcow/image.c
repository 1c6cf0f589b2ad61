/* SPDX-License-Identifier: MIT */
/*
 * image.c - opening an image and its backing chain, closing it cleanly,
 * resizing, and reporting what it is.
 */
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

bool qcow_probe(const void *buf, size_t len)
{
	return len >= 4 && be32_at(buf) == QCOW_MAGIC;
}

static void image_free(struct qcow_image *img)
{
	if (!img)
		return;
	if (img->backing)
		qcow_abandon(img->backing);
	cache_release(&img->l2_cache);
	cache_release(&img->rb_cache);
	meta_release(&img->meta);
	snapshots_free(img);
	free(img->l1);
	free(img->reftable);
	free(img->pending_free);
	free(img->scratch);
	free(img->cscratch);
	free(img->hdr_raw);
	free(img->backing_path);
	free(img->path);
	free(img);
}

void qcow_abandon(struct qcow_image *img)
{
	if (!img)
		return;
	if (img->ops && img->ops->close)
		img->ops->close(img->ctx);
	image_free(img);
}

/* Resolves a backing name the way qemu does: relative to the image's folder. */
static char *backing_path(const char *image_path, const char *name)
{
	char *dir, *copy, *out = NULL;

	if (name[0] == '/')
		return strdup(name);
	copy = strdup(image_path);
	if (!copy)
		return NULL;
	dir = dirname(copy);
	if (asprintf(&out, "%s/%s", dir, name) < 0)
		out = NULL;
	free(copy);
	return out;
}

struct chain_seen {
	dev_t dev[QCOW_MAX_CHAIN_DEPTH + 1];
	ino_t ino[QCOW_MAX_CHAIN_DEPTH + 1];
	int n;
};

static int image_open(const struct qcow_open_opts *opts, bool raw, struct chain_seen *seen,
                      struct qcow_image **out, char *err, size_t errlen);

static bool in_chain(const struct chain_seen *seen, const char *path)
{
	struct stat st;

	if (stat(path, &st) < 0)
		return false;
	for (int i = 0; i < seen->n; i++)
		if (seen->dev[i] == st.st_dev && seen->ino[i] == st.st_ino)
			return true;
	return false;
}

/*
 * The format of img's backing file as recorded: raw or qcow2 (*raw), or
 * none, when *probe says to read it from the file's first bytes unless
 * opts forbids guessing.  0, or -ENOTSUP / -EPERM with the reason in err.
 */
static int backing_format(const struct qcow_image *img, const struct qcow_open_opts *opts,
                          bool *raw, bool *probe, char *err, size_t errlen)
{
	*raw = !strcmp(img->backing_format, "raw");
	*probe = !img->backing_format[0];
	if (!*raw && !*probe && strcmp(img->backing_format, "qcow2")) {
		set_err(err, errlen, "%s: unsupported backing file format '%s'", img->path,
		        img->backing_format);
		return -ENOTSUP;
	}
	if (*probe && (opts->flags & QCOW_OPEN_NO_PROBE)) {
		set_err(err, errlen,
		        "%s: the format of backing file %s is not recorded, and guessing it is "
		        "unsafe; record it: qemu-img rebase -u -F qcow2 (or raw) -b %s %s",
		        img->path, img->backing_name, img->backing_name, img->path);
		return -EPERM;
	}
	return 0;
}

/* True if REAL (a resolved path) lies inside one of DIRS, resolved too. */
static bool path_inside(const char *real, const char *const *dirs)
{
	for (int i = 0; dirs[i]; i++) {
		char *dir = realpath(dirs[i], NULL);
		size_t n = dir ? strlen(dir) : 0;
		bool inside =
		    dir && !strncmp(real, dir, n) && (real[n] == '/' || dir[n - 1] == '/');

		free(dir);
		if (inside)
			return true;
	}
	return false;
}

/*
 * Opens img's backing file for reading, confined to dirs (see
 * qcow_open_opts.backing_dirs): its real path must lie inside one of them
 * and is then opened with O_NOFOLLOW, so a link swapped in after the check
 * is refused rather than followed.  O_NONBLOCK keeps a FIFO from hanging
 * the open (it is cleared after); anything but a regular file is refused.
 * The folders must be writable only by whoever runs us: a parent folder
 * renamed between the check and the open could still move the file.
 */
static int open_confined(const struct qcow_image *img, const char *const *dirs, void **ctx,
                         char *err, size_t errlen)
{
	char *real = realpath(img->backing_path, NULL), allowed[512] = "";
	struct stat st;
	size_t used = 0;
	int fd, e;

	if (!real) {
		e = -errno;
		set_err(err, errlen, "%s: cannot open backing file %s: %s", img->path,
		        img->backing_path, strerror(-e));
		return e;
	}
	if (!path_inside(real, dirs)) {
		for (int i = 0; dirs[i] && used < sizeof(allowed); i++)
			used += (size_t)snprintf(allowed + used, sizeof(allowed) - used, "%s%s",
			                         i ? ", " : "", dirs[i]);
		set_err(err, errlen, "%s: backing file %s is %s, outside %s: refused", img->path,
		        img->backing_name, real, allowed);
		free(real);
		return -EPERM;
	}
	fd = open(real, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	e = fd < 0 ? -errno : 0;
	if (e == 0 && fstat(fd, &st) < 0)
		e = -errno;
	else if (e == 0 && !S_ISREG(st.st_mode))
		e = -EINVAL;
	if (e == 0 && fcntl(fd, F_SETFL, 0) < 0)
		e = -errno;
	if (e == 0)
		e = qcow_posix_lock(fd, false);
	if (e == 0)
		e = qcow_posix_adopt(fd, ctx);
	if (e < 0) {
		set_err(err, errlen, "%s: cannot open backing file %s: %s", img->path, real,
		        e == -EINVAL   ? "not a regular file"
		        : e == -EAGAIN ? "in use by another process"
		                       : strerror(-e));
		if (fd >= 0)
			close(fd);
	}
	free(real);
	return e;
}

static int open_backing(struct qcow_image *img, const struct qcow_open_opts *opts,
                        struct chain_seen *seen, char *err, size_t errlen)
{
	struct qcow_open_opts bo = {
	    .flags = opts->flags & QCOW_OPEN_NO_PROBE,
	    .l2_cache_bytes = opts->l2_cache_bytes / 4,
	    .refcount_cache_bytes = opts->refcount_cache_bytes / 4,
	    .backing_dirs = opts->backing_dirs,
	};
	uint8_t magic[4];
	bool raw, probe;
	void *ctx;
	int e;

	if (seen->n > QCOW_MAX_CHAIN_DEPTH) {
		set_err(err, errlen, "%s: backing chain deeper than %d images", img->path,
		        QCOW_MAX_CHAIN_DEPTH);
		return -ELOOP;
	}
	/* Its format first: nothing is opened for a backing file that would be refused. */
	e = backing_format(img, opts, &raw, &probe, err, errlen);
	if (e < 0)
		return e;
	/* Before opening: a writable image holds a lock its own backing open would hit. */
	if (in_chain(seen, img->backing_path)) {
		set_err(err, errlen, "%s: backing chain loops back to %s", img->path,
		        img->backing_path);
		return -ELOOP;
	}
	if (opts->backing_dirs) {
		e = open_confined(img, opts->backing_dirs, &ctx, err, errlen);
		if (e < 0)
			return e;
	} else {
		e = qcow_posix_open(img->backing_path, O_RDONLY, &ctx);
		if (e < 0) {
			set_err(err, errlen, "%s: cannot open backing file %s: %s", img->path,
			        img->backing_path, strerror(-e));
			return e;
		}
	}
	if (probe) {
		e = qcow_posix_ops.pread(ctx, magic, sizeof(magic), 0);
		raw = e < 0 || !qcow_probe(magic, sizeof(magic));
	}
	bo.path = img->backing_path;
	bo.ops = &qcow_posix_ops;
	bo.ctx = ctx;
	e = image_open(&bo, raw, seen, &img->backing, err, errlen);
	if (e < 0) {
		qcow_posix_ops.close(ctx);
		return e;
	}
	img->chain_depth = img->backing->chain_depth + 1;
	return 0;
}

/* Remembers the file behind this image; a second sighting is a loop. */
static int note_file(struct qcow_image *img, struct chain_seen *seen, char *err, size_t errlen)
{
	struct stat st;

	if (stat(img->path, &st) < 0)
		return 0; /* caller-supplied ops on a path that is only a name */
	for (int i = 0; i < seen->n; i++) {
		if (seen->dev[i] == st.st_dev && seen->ino[i] == st.st_ino) {
			set_err(err, errlen, "%s: backing chain loops back to this file",
			        img->path);
			return -ELOOP;
		}
	}
	seen->dev[seen->n] = st.st_dev;
	seen->ino[seen->n] = st.st_ino;
	seen->n++;
	return 0;
}

static int load_l1(struct qcow_image *img, char *err, size_t errlen)
{
	size_t bytes = 8 * (size_t)img->l1_size;
	int e;

	img->l1 = malloc(bytes ? bytes : 8);
	if (!img->l1)
		return -ENOMEM;
	e = img->ops->pread(img->ctx, img->l1, bytes, img->l1_offset);
	if (e < 0)
		set_err(err, errlen, "%s: cannot read the L1 table: %s", img->path, strerror(-e));
	img->l1_dirty_lo = UINT32_MAX;
	img->l1_dirty_hi = 0;
	return e;
}

static int load_reftable(struct qcow_image *img, char *err, size_t errlen)
{
	size_t bytes = (size_t)img->reftable_clusters << img->cluster_bits;
	int e;

	img->reftable_entries = (uint32_t)(bytes / 8);
	img->reftable = malloc(bytes);
	if (!img->reftable)
		return -ENOMEM;
	e = img->ops->pread(img->ctx, img->reftable, bytes, img->reftable_offset);
	if (e < 0) {
		set_err(err, errlen, "%s: cannot read the refcount table: %s", img->path,
		        strerror(-e));
		return e;
	}
	for (uint32_t i = 0; i < img->reftable_entries; i++)
		img->reftable[i] = be64toh(img->reftable[i]);
	return 0;
}

static int open_qcow2(struct qcow_image *img, const struct qcow_open_opts *opts, char *err,
                      size_t errlen)
{
	bool rdwr = opts->flags & QCOW_OPEN_RDWR;
	uint64_t l2b = opts->l2_cache_bytes ? opts->l2_cache_bytes : QCOW_DEFAULT_L2_CACHE_BYTES;
	uint64_t rbb = opts->refcount_cache_bytes ? opts->refcount_cache_bytes
	                                          : QCOW_DEFAULT_REFCOUNT_CACHE_BYTES;
	int e;

	e = header_parse(img, err, errlen);
	if (e < 0)
		return e;
	e = validate_features(img, rdwr && !(opts->flags & QCOW_OPEN_REPAIR), err, errlen);
	if (e < 0)
		return e;
	if (rdwr && img->version == 2) {
		set_err(err, errlen,
		        "%s: qcow2 version 2 images open read-only; convert to version 3 to write",
		        img->path);
		return -EROFS;
	}
	img->lazy = img->compat & COMPAT_LAZY_REFCOUNTS;
	img->end_cluster = (img->file_size + img->cluster_size - 1) >> img->cluster_bits;
	img->free_hint = 1;
	if ((e = load_l1(img, err, errlen)) < 0 || (e = load_reftable(img, err, errlen)) < 0 ||
	    (e = snapshots_load(img, err, errlen)) < 0)
		goto out_nomem;
	if ((e = cache_init(&img->l2_cache, img->cluster_size, l2b)) < 0 ||
	    (e = cache_init(&img->rb_cache, img->cluster_size, rbb)) < 0)
		goto out_nomem;
	if ((e = meta_build(img)) < 0)
		goto out_nomem;
	img->scratch = malloc(img->cluster_size);
	img->cscratch = malloc(2 * (size_t)img->cluster_size);
	if (!img->scratch || !img->cscratch) {
		e = -ENOMEM;
		goto out_nomem;
	}
	return 0;
out_nomem:
	if (e == -ENOMEM)
		set_err(err, errlen, "%s: not enough memory to open the image", img->path);
	return e;
}

/*
 * Writable open: drop autoclear bits we do not maintain, repair a dirty
 * image (into found: what the repair fixed; untouched if it was clean).
 */
static int open_for_writing(struct qcow_image *img, struct qcow_check_result *found, char *err,
                            size_t errlen)
{
	bool dirty = img->incompat & INCOMPAT_DIRTY;
	int e;

	img->writable = true;
	if (img->autoclear) {
		img->autoclear = 0;
		e = header_commit(img);
		if (e < 0)
			goto out_fail;
	}
	if (!dirty)
		return 0;
	img->dirty_bit_on_disk = true;
	e = repair_dirty(img, found);
	if (e == 0)
		e = qcow_flush(img);
	if (e == 0)
		e = set_dirty_bit(img, false);
	if (e < 0)
		goto out_fail;
	return 0;
out_fail:
	set_err(err, errlen, "%s", img->errmsg[0] ? img->errmsg : strerror(-e));
	return e;
}

static int image_open(const struct qcow_open_opts *opts, bool raw, struct chain_seen *seen,
                      struct qcow_image **out, char *err, size_t errlen)
{
	struct qcow_image *img = calloc(1, sizeof(*img));
	struct qcow_check_result found = {0};
	int e;

	if (!img || !(img->path = strdup(opts->path ? opts->path : "(image)"))) {
		free(img);
		set_err(err, errlen, "%s: no memory", opts->path ? opts->path : "(image)");
		return -ENOMEM;
	}
	img->ops = opts->ops;
	img->ctx = opts->ctx;
	e = note_file(img, seen, err, errlen);
	if (e < 0)
		goto out_free;
	if (raw) {
		img->kind = IMAGE_RAW;
		e = img->ops->get_size(img->ctx, &img->size);
		if (e < 0) {
			set_err(err, errlen, "%s: cannot get size: %s", img->path, strerror(-e));
			goto out_free;
		}
		img->file_size = img->size;
		*out = img;
		return 0;
	}
	e = open_qcow2(img, opts, err, errlen);
	if (e < 0)
		goto out_free;
	if (opts->snapshot) {
		if (opts->flags & QCOW_OPEN_RDWR) {
			set_err(err, errlen, "%s: snapshots open read-only", img->path);
			e = -EROFS;
			goto out_free;
		}
		e = snapshot_select(img, opts->snapshot, err, errlen);
		if (e == 0 && (e = meta_build(img)) < 0)
			set_err(err, errlen, "%s: no memory", img->path);
		if (e < 0)
			goto out_free;
	}
	if (img->backing_name[0] &&
	    !(img->backing_path = backing_path(img->path, img->backing_name))) {
		set_err(err, errlen, "%s: no memory", img->path);
		e = -ENOMEM;
		goto out_free;
	}
	if (img->backing_name[0] && !(opts->flags & QCOW_OPEN_NO_BACKING)) {
		e = open_backing(img, opts, seen, err, errlen);
		if (e < 0)
			goto out_free;
	}
	if (opts->flags & QCOW_OPEN_RDWR) {
		e = open_for_writing(img, &found, err, errlen);
		if (e < 0)
			goto out_free;
	}
	if (opts->repaired)
		*opts->repaired = found;
	*out = img;
	return 0;
out_free:
	img->ops = NULL; /* the caller keeps ctx on failure */
	image_free(img);
	return e;
}

int qcow_open(const struct qcow_open_opts *opts, struct qcow_image **out, char *err, size_t errlen)
{
	struct qcow_open_opts o = *opts;
	struct chain_seen seen = {.n = 0};
	int e;

	if (!o.path && !o.ops) {
		set_err(err, errlen, "(image): no path given");
		return -EINVAL;
	}
	if (!o.ops) {
		int fl = (o.flags & QCOW_OPEN_RDWR) ? O_RDWR : O_RDONLY;

		e = qcow_posix_open(o.path, fl, &o.ctx);
		if (e < 0) {
			set_err(err, errlen, "%s: %s", o.path,
			        e == -EAGAIN ? "image is in use by another process" : strerror(-e));
			return e;
		}
		o.ops = &qcow_posix_ops;
	}
	e = image_open(&o, false, &seen, out, err, errlen);
	if (e < 0 && !opts->ops)
		qcow_posix_ops.close(o.ctx);
	return e;
}

/*
 * The space reserved ahead past the end of the file (reserve_space()) goes
 * back at close: a truncate to the file's own size drops blocks past it
 * (a hole cannot be punched past the end on every file system).
 */
static void release_reserved(struct qcow_image *img)
{
	uint64_t size, end = img->reserved_hi << img->cluster_bits;

	if (!end || img->ops->get_size(img->ctx, &size) < 0 || end <= size)
		return;
	img->ops->truncate(img->ctx, size); /* only space is at stake */
}

int qcow_close(struct qcow_image *img)
{
	int err = 0;

	if (!img)
		return 0;
	if (img->writable && img->fenced) {
		err = -EIO; /* what the failed write-back did not save is lost */
	} else if (img->writable) {
		err = qcow_flush(img);
		if (err == 0 && img->dirty_bit_on_disk)
			err = set_dirty_bit(img, false);
		if (err == 0)
			release_reserved(img);
	}
	qcow_abandon(img);
	return err;
}

void qcow_get_info(const struct qcow_image *img, struct qcow_info *info)
{
	memset(info, 0, sizeof(*info));
	info->version = img->version;
	info->size_bytes = img->size;
	info->cluster_size = img->cluster_size;
	info->refcount_bits = img->refcount_bits;
	info->l1_size = img->l1_size;
	info->incompatible_features = img->incompat;
	info->compatible_features = img->compat;
	info->autoclear_features = img->autoclear;
	info->lazy_refcounts = img->lazy;
	info->dirty = img->incompat & INCOMPAT_DIRTY;
	info->read_only = !img->writable;
	info->compression = img->compression;
	info->nb_snapshots = img->nb_snapshots;
	info->file_size_bytes = img->file_size;
	if (img->end_cluster << img->cluster_bits > info->file_size_bytes)
		info->file_size_bytes = img->end_cluster << img->cluster_bits;
	snprintf(info->backing_file, sizeof(info->backing_file), "%s", img->backing_name);
	snprintf(info->backing_format, sizeof(info->backing_format), "%s", img->backing_format);
	if (img->backing_path)
		snprintf(info->backing_path, sizeof(info->backing_path), "%s", img->backing_path);
	info->chain_depth = img->chain_depth;
}

struct qcow_image *qcow_backing(const struct qcow_image *img)
{
	return img->backing;
}
