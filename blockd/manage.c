/* SPDX-License-Identifier: MIT */
/*
 * manage.c - what the control API changes: volumes made, cloned, resized
 * and deleted, snapshots taken, deleted and restored, all while other
 * volumes (and, where it is safe, the same one) are served.
 *
 * Files change crash-safely: a new image is written under a dot-name
 * (".NAME.tmp", never a volume name), synced, renamed into place and the
 * folder synced, so a crash leaves the old state or the new one; the next
 * start removes leftover temporaries.  Snapshot operations rely on the
 * qcow library's own crash safety.
 *
 * Clones: a snapshot is internal to its volume's file, and no qcow2 reader
 * can use another file's internal snapshot as a backing file.  So the
 * first clone of VOL@SNAP copies the snapshot once into a standalone,
 * never-written base image, DIR/bases/VOL@SNAP-ID-TIME.qcow2, and every
 * clone is a new qcow2 whose backing file is that base: later clones of
 * the same snapshot cost O(1).  A crash between publishing a base and
 * publishing its first clone leaves the base; the next clone uses it.  Bases belong to no volume,
 * so deleting VOL (or its snapshot) leaves its clones working; a base is removed with the last
 * volume that uses it.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "manage.h"
#include "qcow.h"
#include "store_internal.h"

#define COPY_CHUNK (4u << 20)

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return rc;
}

/* Only this (control) thread unlinks volumes, so the pointer stays valid here. */
static struct volume *get_volume(struct store *st, const char *name)
{
	struct volume *vol;

	if (!store_valid_name(name, strlen(name)))
		return NULL;
	pthread_mutex_lock(&st->lock);
	vol = find_volume(st, name, strlen(name));
	pthread_mutex_unlock(&st->lock);
	return vol;
}

/* Creates PATH as a qcow2 image (64 KiB clusters), synced; O_EXCL. */
static int create_image(const char *path, uint64_t size, const char *backing, char *err,
                        size_t errlen)
{
	struct qcow_create_opts o = {.path = path,
	                             .size_bytes = size,
	                             .backing_file = backing,
	                             .backing_format = backing ? "qcow2" : NULL};
	void *ctx;
	int rc = qcow_posix_open(path, O_RDWR | O_CREAT | O_EXCL, &ctx);

	if (rc < 0)
		return fail(err, errlen, rc, "cannot create %s: %s", path, strerror(-rc));
	o.ops = &qcow_posix_ops;
	o.ctx = ctx;
	rc = qcow_create(&o, err, errlen);
	if (rc == 0)
		rc = qcow_posix_ops.sync(ctx);
	qcow_posix_ops.close(ctx);
	if (rc < 0)
		unlink(path);
	return rc;
}

/* Renames the finished temporary into place and makes both durable. */
static int publish(const char *tmp, const char *final, const char *dir, char *err, size_t errlen)
{
	int rc;

	if (rename(tmp, final) < 0) {
		rc = -errno;
		unlink(tmp);
		return fail(err, errlen, rc, "cannot rename %s: %s", tmp, strerror(-rc));
	}
	rc = sync_dir(dir);
	if (rc < 0)
		return fail(err, errlen, rc, "cannot sync %s: %s", dir, strerror(-rc));
	return 0;
}

/* Opens a just-published volume file and serves it. */
static int adopt(struct store *st, const char *name, char *err, size_t errlen)
{
	struct volume *vol;
	int rc = open_volume(st, name, &vol);

	if (rc < 0)
		return fail(err, errlen, rc, "volume %s was created but cannot be opened", name);
	pthread_mutex_lock(&st->lock);
	link_volume(st, vol);
	pthread_mutex_unlock(&st->lock);
	return 0;
}

int manage_create(struct store *st, const char *name, uint64_t size, char *err, size_t errlen)
{
	char tmp[PATH_MAX + 32], final[PATH_MAX + 32];
	struct stat sb;
	int rc;

	if (!store_valid_name(name, strlen(name)))
		return fail(err, errlen, -EINVAL, "invalid volume name");
	if (size == 0 || size > MANAGE_MAX_VOLUME_BYTES)
		return fail(err, errlen, -EINVAL, "size must be between 1 byte and %llu bytes",
		            (unsigned long long)MANAGE_MAX_VOLUME_BYTES);
	snprintf(final, sizeof(final), "%s/%s.qcow2", st->volumes_dir, name);
	snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", st->volumes_dir, name);
	if (get_volume(st, name) || stat(final, &sb) == 0)
		return fail(err, errlen, -EEXIST, "volume %s already exists", name);
	unlink(tmp);
	rc = create_image(tmp, size, NULL, err, errlen);
	if (rc < 0)
		return rc;
	rc = publish(tmp, final, st->volumes_dir, err, errlen);
	if (rc < 0)
		return rc;
	log_info("volume %s: created, %llu bytes", name, (unsigned long long)size);
	return adopt(st, name, err, errlen);
}

/* Copies what the snapshot view shows into a new standalone image at PATH. */
static int copy_view(struct export_image *e, const char *path, char *err, size_t errlen)
{
	struct qcow_open_opts oo = {.path = path, .flags = QCOW_OPEN_RDWR};
	struct qcow_image *dst;
	uint8_t *buf;
	uint64_t off = 0;
	int rc;

	rc = create_image(path, e->size, NULL, err, errlen);
	if (rc < 0)
		return rc;
	rc = qcow_open(&oo, &dst, err, errlen);
	if (rc < 0)
		goto out_unlink;
	buf = malloc(COPY_CHUNK);
	if (!buf) {
		rc = fail(err, errlen, -ENOMEM, "out of memory");
		qcow_abandon(dst);
		goto out_unlink;
	}
	pthread_mutex_lock(&e->lock);
	while (off < e->size && rc == 0) {
		struct qcow_extent x;
		uint64_t n = e->size - off < COPY_CHUNK ? e->size - off : COPY_CHUNK;

		rc = qcow_block_status(e->img, off, n, &x);
		if (rc < 0)
			break;
		n = x.length < n ? x.length : n;
		if (!(x.flags & QCOW_EXTENT_ZERO) && x.depth >= 0) {
			rc = qcow_read(e->img, buf, off, n);
			if (rc == 0)
				rc = qcow_write(dst, buf, off, n);
		}
		off += n;
	}
	pthread_mutex_unlock(&e->lock);
	free(buf);
	if (rc < 0) {
		snprintf(err, errlen, "copying the snapshot failed: %s", strerror(-rc));
		qcow_abandon(dst);
		goto out_unlink;
	}
	rc = qcow_close(dst);
	if (rc < 0) {
		snprintf(err, errlen, "writing the base image failed: %s", strerror(-rc));
		goto out_unlink;
	}
	return 0;
out_unlink:
	unlink(path);
	return rc;
}

int manage_clone(struct store *st, const char *from, const char *name, char *err, size_t errlen)
{
	char vname[STORE_NAME_MAX + 1], base[PATH_MAX + 300], base_tmp[PATH_MAX + 320];
	char backing[PATH_MAX + 300], tmp[PATH_MAX + 32], final[PATH_MAX + 32];
	const char *at = strchr(from, '@');
	struct qcow_snapshot_info si;
	struct export_image *view = NULL;
	struct volume *vol;
	struct stat sb;
	uint32_t n;
	int rc;

	if (!store_valid_name(name, strlen(name)))
		return fail(err, errlen, -EINVAL, "invalid volume name");
	if (!at || (size_t)(at - from) > STORE_NAME_MAX ||
	    !store_valid_name(from, (size_t)(at - from)) ||
	    !store_valid_name(at + 1, strlen(at + 1)))
		return fail(err, errlen, -EINVAL, "\"from\" must be VOLUME@SNAPSHOT");
	memcpy(vname, from, (size_t)(at - from));
	vname[at - from] = '\0';
	snprintf(final, sizeof(final), "%s/%s.qcow2", st->volumes_dir, name);
	snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", st->volumes_dir, name);
	if (get_volume(st, name) || stat(final, &sb) == 0)
		return fail(err, errlen, -EEXIST, "volume %s already exists", name);
	vol = get_volume(st, vname);
	if (!vol)
		return fail(err, errlen, -ENOENT, "no volume %s", vname);
	/* The snapshot's identity: its id and time, so a re-made name never reuses a base. */
	pthread_mutex_lock(&vol->main.lock);
	n = qcow_snapshot_count(vol->main.img);
	rc = -ENOENT;
	for (uint32_t i = 0; i < n && rc < 0; i++)
		if (qcow_snapshot_get(vol->main.img, i, &si) == 0 && strcmp(si.name, at + 1) == 0)
			rc = 0;
	pthread_mutex_unlock(&vol->main.lock);
	if (rc < 0)
		return fail(err, errlen, -ENOENT, "volume %s has no snapshot %s", vname, at + 1);
	snprintf(base, sizeof(base), "%s/%s@%s-%s-%llu.%u.qcow2", st->bases_dir, vname, at + 1,
	         si.id, (unsigned long long)si.date_sec, si.date_nsec);
	if (stat(base, &sb) < 0) {
		pthread_mutex_lock(&st->lock);
		for (struct snap_view *sv = vol->views; sv; sv = sv->next)
			if (strcmp(sv->name, at + 1) == 0)
				view = &sv->e;
		pthread_mutex_unlock(&st->lock);
		if (!view) {
			struct proto_export info;

			/* Opens the view (a lookup by a local peer attaches nothing). */
			if (store_lookup(st, from, "local", &info) < 0)
				return fail(err, errlen, -ENOENT, "cannot open %s", from);
			pthread_mutex_lock(&st->lock);
			for (struct snap_view *sv = vol->views; sv; sv = sv->next)
				if (strcmp(sv->name, at + 1) == 0)
					view = &sv->e;
			pthread_mutex_unlock(&st->lock);
			if (!view)
				return fail(err, errlen, -ENOENT, "cannot open %s", from);
		}
		snprintf(base_tmp, sizeof(base_tmp), "%s/.base.tmp", st->bases_dir);
		unlink(base_tmp);
		rc = copy_view(view, base_tmp, err, errlen);
		if (rc < 0)
			return rc;
		rc = publish(base_tmp, base, st->bases_dir, err, errlen);
		if (rc < 0)
			return rc;
		log_info("base %s: made from %s", base, from);
	}
	/* Relative to the volume's folder, as qemu resolves it: the data directory can move. */
	snprintf(backing, sizeof(backing), "../bases/%s", strrchr(base, '/') + 1);
	unlink(tmp);
	rc = create_image(tmp, 0, backing, err, errlen);
	if (rc < 0)
		return rc;
	rc = publish(tmp, final, st->volumes_dir, err, errlen);
	if (rc < 0)
		return rc;
	log_info("volume %s: cloned from %s", name, from);
	return adopt(st, name, err, errlen);
}

/* The real path of a volume's backing file if it is one of our bases, else "". */
static void base_of(struct store *st, struct volume *vol, char out[PATH_MAX])
{
	char bases[PATH_MAX], *slash;
	struct qcow_info info;

	out[0] = '\0';
	qcow_get_info(vol->main.img, &info);
	if (!info.backing_path[0] || !realpath(info.backing_path, out) ||
	    !realpath(st->bases_dir, bases))
		out[0] = '\0';
	slash = strrchr(out, '/');
	if (!slash || (size_t)(slash - out) != strlen(bases) ||
	    strncmp(out, bases, strlen(bases)) != 0)
		out[0] = '\0';
}

/* Removes a base no volume uses any more. */
static void collect_base(struct store *st, const char *candidate)
{
	char other[PATH_MAX];
	bool used = false;

	pthread_mutex_lock(&st->lock);
	for (struct volume *v = st->volumes; v && !used; v = v->next) {
		base_of(st, v, other);
		used = strcmp(other, candidate) == 0;
	}
	pthread_mutex_unlock(&st->lock);
	if (!used && unlink(candidate) == 0) {
		sync_dir(st->bases_dir);
		log_info("base %s: removed, no volume uses it", candidate);
	}
}

int manage_delete(struct store *st, const char *name, char *err, size_t errlen)
{
	char backing[PATH_MAX];
	struct volume *vol = get_volume(st, name), **pp;
	int rc;

	if (!vol)
		return fail(err, errlen, -ENOENT, "no volume %s", name);
	pthread_mutex_lock(&st->lock);
	if (vol->attachments || vol->busy) {
		pthread_mutex_unlock(&st->lock);
		return fail(err, errlen, -EBUSY, "volume %s is attached (%s); detach it first",
		            name, vol->attachments ? vol->attachments->peer : "being opened");
	}
	for (pp = &st->volumes; *pp != vol; pp = &(*pp)->next)
		;
	*pp = vol->next;
	st->n_volumes--;
	pthread_mutex_unlock(&st->lock);

	base_of(st, vol, backing);
	rc = unlink(vol->path) < 0 ? -errno : 0;
	if (rc == 0)
		rc = sync_dir(st->volumes_dir);
	if (rc < 0) {
		pthread_mutex_lock(&st->lock);
		link_volume(st, vol);
		pthread_mutex_unlock(&st->lock);
		return fail(err, errlen, rc, "cannot remove %s: %s", vol->path, strerror(-rc));
	}
	/* The file is gone: closing writes nothing anyone will read; just let go. */
	while (vol->views) {
		struct snap_view *sv = vol->views;

		vol->views = sv->next;
		qcow_abandon(sv->e.img);
		free(sv);
	}
	qcow_abandon(vol->main.img);
	close(vol->main.fd);
	free_volume(vol);
	log_info("volume %s: deleted", name);
	if (backing[0])
		collect_base(st, backing);
	return 0;
}

int manage_resize(struct store *st, const char *name, uint64_t size, char *err, size_t errlen)
{
	struct volume *vol = get_volume(st, name);
	bool attached;
	int rc;

	if (!vol)
		return fail(err, errlen, -ENOENT, "no volume %s", name);
	if (size == 0 || size > MANAGE_MAX_VOLUME_BYTES)
		return fail(err, errlen, -EINVAL, "size must be between 1 byte and %llu bytes",
		            (unsigned long long)MANAGE_MAX_VOLUME_BYTES);
	pthread_mutex_lock(&st->lock);
	attached = vol->attachments != NULL;
	pthread_mutex_unlock(&st->lock);
	pthread_mutex_lock(&vol->main.lock);
	if (size < vol->main.size && (attached || vol->n_snaps > 0)) {
		pthread_mutex_unlock(&vol->main.lock);
		return fail(err, errlen, -EBUSY,
		            "shrinking needs a detached volume without snapshots");
	}
	export_quiesce(&vol->main);
	rc = qcow_resize(vol->main.img, size);
	if (rc == 0)
		rc = qcow_flush(vol->main.img);
	if (rc == 0) {
		struct qcow_info info;

		qcow_get_info(vol->main.img, &info);
		vol->main.size = info.size_bytes;
	}
	if (rc < 0)
		snprintf(err, errlen, "%s", qcow_last_error(vol->main.img));
	pthread_mutex_unlock(&vol->main.lock);
	if (rc == 0)
		log_info("volume %s: resized to %llu bytes", name, (unsigned long long)size);
	return rc;
}

/* Re-reads the snapshot names after a change (both locks taken here). */
static void refresh_snapshots(struct store *st, struct volume *vol)
{
	pthread_mutex_lock(&st->lock);
	pthread_mutex_lock(&vol->main.lock);
	if (load_snap_names(vol) < 0)
		log_error("volume %s: out of memory listing snapshots", vol->name);
	pthread_mutex_unlock(&vol->main.lock);
	pthread_mutex_unlock(&st->lock);
}

static bool snapshot_exists(struct volume *vol, const char *snap)
{
	struct qcow_snapshot_info si;
	uint32_t n = qcow_snapshot_count(vol->main.img);

	for (uint32_t i = 0; i < n; i++)
		if (qcow_snapshot_get(vol->main.img, i, &si) == 0 && strcmp(si.name, snap) == 0)
			return true;
	return false;
}

int manage_snapshot_create(struct store *st, const char *name, const char *snap, char *err,
                           size_t errlen)
{
	struct volume *vol = get_volume(st, name);
	int rc;

	if (!vol)
		return fail(err, errlen, -ENOENT, "no volume %s", name);
	if (!store_valid_name(snap, strlen(snap)))
		return fail(err, errlen, -EINVAL, "invalid snapshot name");
	pthread_mutex_lock(&vol->main.lock);
	if (snapshot_exists(vol, snap)) {
		pthread_mutex_unlock(&vol->main.lock);
		return fail(err, errlen, -EEXIST, "volume %s already has a snapshot %s", name,
		            snap);
	}
	/*
	 * Every acknowledged write has completed: the ones the ring carried out
	 * are drained here, the pool's finished under this lock.  New requests
	 * wait for the lock (or go to the pool), so the snapshot holds exactly
	 * what was acknowledged before it.
	 */
	export_quiesce(&vol->main);
	rc = qcow_snapshot_create(vol->main.img, snap);
	if (rc < 0)
		snprintf(err, errlen, "%s", qcow_last_error(vol->main.img));
	pthread_mutex_unlock(&vol->main.lock);
	if (rc < 0)
		return rc;
	refresh_snapshots(st, vol);
	log_info("volume %s: snapshot %s taken", name, snap);
	return 0;
}

int manage_snapshot_delete(struct store *st, const char *name, const char *snap, char *err,
                           size_t errlen)
{
	struct volume *vol = get_volume(st, name);
	struct snap_view **pp, *sv = NULL;
	int rc;

	if (!vol)
		return fail(err, errlen, -ENOENT, "no volume %s", name);
	pthread_mutex_lock(&st->lock);
	for (pp = &vol->views; *pp; pp = &(*pp)->next)
		if (strcmp((*pp)->name, snap) == 0)
			break;
	if (*pp) {
		for (struct attachment *a = vol->attachments; a; a = a->next)
			if (a->e == &(*pp)->e) {
				pthread_mutex_unlock(&st->lock);
				return fail(err, errlen, -EBUSY,
				            "snapshot %s@%s is attached by %s; detach it first",
				            name, snap, a->peer);
			}
		if (vol->busy) {
			pthread_mutex_unlock(&st->lock);
			return fail(err, errlen, -EBUSY, "snapshot %s@%s is being opened", name,
			            snap);
		}
		sv = *pp;
		*pp = sv->next;
	}
	pthread_mutex_unlock(&st->lock);
	if (sv) {
		image_close(&sv->e, vol->name);
		free(sv);
	}
	pthread_mutex_lock(&vol->main.lock);
	if (!snapshot_exists(vol, snap)) {
		pthread_mutex_unlock(&vol->main.lock);
		return fail(err, errlen, -ENOENT, "volume %s has no snapshot %s", name, snap);
	}
	export_quiesce(&vol->main);
	rc = qcow_snapshot_delete(vol->main.img, snap);
	if (rc < 0)
		snprintf(err, errlen, "%s", qcow_last_error(vol->main.img));
	pthread_mutex_unlock(&vol->main.lock);
	if (rc < 0)
		return rc;
	refresh_snapshots(st, vol);
	log_info("volume %s: snapshot %s deleted", name, snap);
	return 0;
}

int manage_snapshot_restore(struct store *st, const char *name, const char *snap, char *err,
                            size_t errlen)
{
	struct volume *vol = get_volume(st, name);
	bool writer;
	int rc;

	if (!vol)
		return fail(err, errlen, -ENOENT, "no volume %s", name);
	/* st->lock held across the revert: no writer can attach meanwhile. */
	pthread_mutex_lock(&st->lock);
	writer = volume_has_writer(vol);
	if (writer) {
		pthread_mutex_unlock(&st->lock);
		return fail(err, errlen, -EBUSY,
		            "volume %s is attached read-write; detach it before restoring", name);
	}
	pthread_mutex_lock(&vol->main.lock);
	if (!snapshot_exists(vol, snap)) {
		rc = fail(err, errlen, -ENOENT, "volume %s has no snapshot %s", name, snap);
	} else {
		export_quiesce(&vol->main);
		rc = qcow_snapshot_revert(vol->main.img, snap);
		if (rc < 0) {
			snprintf(err, errlen, "%s", qcow_last_error(vol->main.img));
		} else {
			struct qcow_info info;

			qcow_get_info(vol->main.img, &info);
			vol->main.size = info.size_bytes;
		}
	}
	pthread_mutex_unlock(&vol->main.lock);
	pthread_mutex_unlock(&st->lock);
	if (rc == 0)
		log_info("volume %s: restored to snapshot %s", name, snap);
	return rc;
}
