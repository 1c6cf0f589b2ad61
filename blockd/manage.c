/* SPDX-License-Identifier: MIT */
/*
 * manage.c - what the control API changes: volumes made, cloned, resized
 * and deleted, snapshots taken, deleted and restored, all while other
 * volumes (and, where it is safe, the same one) are served.
 *
 * One change at a time: m->lock is held for each, across its I/O.  Only
 * control threads and the signal thread (SIGHUP) take it.  Under it a
 * change may take a volume's image lock (and then wait for the volume's
 * ring I/O to drain, image_quiesce()) and, briefly, the store's registry
 * lock inside store calls; the lock order is manager, image, registry
 * (CONCURRENCY.md).  The only long part that runs without it is the copy
 * of a snapshot into a clone base: the snapshot is claimed meanwhile, so
 * it cannot be deleted, and the copy is published under the lock again.
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
 * publishing its first clone leaves the base; the next clone uses it.
 * Bases belong to no volume, so deleting VOL (or its snapshot) leaves its
 * clones working; a base is removed with the last volume that uses it.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon_limits.h"
#include "log.h"
#include "manage.h"
#include "qcow.h"

struct manager {
	pthread_mutex_t lock;
	struct store *st;
	atomic_uint copies; /* names the temporaries of base copies */
};

int manage_new(struct store *st, struct manager **out)
{
	struct manager *m = calloc(1, sizeof(*m));

	if (!m)
		return -ENOMEM;
	pthread_mutex_init(&m->lock, NULL);
	m->st = st;
	*out = m;
	return 0;
}

void manage_free(struct manager *m)
{
	pthread_mutex_destroy(&m->lock);
	free(m);
}

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

/*
 * Volume NAME with a reference and, when imp is not NULL, its image in
 * *imp, open until put_volume(): -ENOENT, or -ENXIO when it cannot be
 * opened.
 */
static int get_volume(struct manager *m, const char *name, struct volume **out, struct image **imp,
                      char *err, size_t errlen)
{
	char why[512];
	struct volume *vol;

	if (!blockd_name_valid(name, strlen(name)) || store_get(m->st, name, &vol) < 0)
		return fail(err, errlen, -ENOENT, "no volume %s", name);
	if (imp && store_use(vol, imp, why, sizeof(why)) < 0) {
		store_put(vol);
		return fail(err, errlen, -ENXIO, "volume %s cannot be opened: %s", name, why);
	}
	*out = vol;
	return 0;
}

/* Lets go of what get_volume() gave. */
static void put_volume(struct volume *vol, struct image *im)
{
	if (im)
		store_unuse(vol);
	store_put(vol);
}

static void volume_path(struct manager *m, const char *name, char *out, size_t len)
{
	snprintf(out, len, "%s/%s.qcow2", store_volumes_dir(m->st), name);
}

/* True when NAME is a volume or its file exists (manager lock held). */
static bool volume_exists(struct manager *m, const char *name)
{
	char path[PATH_MAX + 32];
	struct volume *vol;
	struct stat sb;

	if (store_get(m->st, name, &vol) == 0) {
		store_put(vol);
		return true;
	}
	volume_path(m, name, path, sizeof(path));
	return stat(path, &sb) == 0;
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

/* Writes volume NAME as .NAME.tmp (backing BACKING, or SIZE bytes), publishes and serves it. */
static int make_volume(struct manager *m, const char *name, uint64_t size, const char *backing,
                       char *err, size_t errlen)
{
	const char *dir = store_volumes_dir(m->st);
	char tmp[PATH_MAX + 32], final[PATH_MAX + 32];
	int rc;

	volume_path(m, name, final, sizeof(final));
	snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, name);
	unlink(tmp); /* ours: the manager's lock is held and names are unique */
	rc = create_image(tmp, size, backing, err, errlen);
	if (rc < 0)
		return rc;
	rc = publish(tmp, final, dir, err, errlen);
	if (rc < 0)
		return rc;
	rc = store_adopt(m->st, name, err, errlen);
	if (rc < 0)
		return fail(err, errlen, rc, "volume %s was created but cannot be opened", name);
	return 0;
}

int manage_create(struct manager *m, const char *name, uint64_t size, char *err, size_t errlen)
{
	int rc;

	if (!blockd_name_valid(name, strlen(name)))
		return fail(err, errlen, -EINVAL, "invalid volume name");
	if (size == 0 || size > MANAGE_MAX_VOLUME_BYTES)
		return fail(err, errlen, -EINVAL, "size must be between 1 byte and %llu bytes",
		            (unsigned long long)MANAGE_MAX_VOLUME_BYTES);
	pthread_mutex_lock(&m->lock);
	if (volume_exists(m, name))
		rc = fail(err, errlen, -EEXIST, "volume %s already exists", name);
	else
		rc = make_volume(m, name, size, NULL, err, errlen);
	pthread_mutex_unlock(&m->lock);
	if (rc == 0)
		log_info("volume %s: created, %llu bytes", name, (unsigned long long)size);
	return rc;
}

/* Copies what snapshot SNAP of VOL shows into a new standalone image at PATH. */
static int copy_snapshot(struct volume *vol, const char *snap, const char *path, char *err,
                         size_t errlen)
{
	struct qcow_open_opts oo = {.path = path, .flags = QCOW_OPEN_RDWR};
	struct qcow_image *dst;
	struct image src;
	uint64_t off = 0, size;
	uint8_t *buf;
	int rc;

	rc = store_snapshot_open(vol, snap, MANAGE_COPY_CACHE_BYTES, &src, err, errlen);
	if (rc < 0)
		return rc;
	size = atomic_load(&src.size);
	rc = create_image(path, size, NULL, err, errlen);
	if (rc < 0)
		goto out_close;
	rc = qcow_open(&oo, &dst, err, errlen);
	if (rc < 0)
		goto out_unlink;
	buf = malloc(MANAGE_COPY_CHUNK_BYTES);
	if (!buf) {
		rc = fail(err, errlen, -ENOMEM, "out of memory");
		qcow_abandon(dst);
		goto out_unlink;
	}
	/* A private image: nobody else calls into it, so its lock is not needed. */
	while (off < size && rc == 0) {
		struct qcow_extent x;
		uint64_t n =
		    size - off < MANAGE_COPY_CHUNK_BYTES ? size - off : MANAGE_COPY_CHUNK_BYTES;

		rc = qcow_block_status(src.img, off, n, &x);
		if (rc < 0)
			break;
		n = x.length < n ? x.length : n;
		if (!(x.flags & QCOW_EXTENT_ZERO) && x.depth >= 0) {
			rc = qcow_read(src.img, buf, off, n);
			if (rc == 0)
				rc = qcow_write(dst, buf, off, n);
		}
		off += n;
	}
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
	store_snapshot_close(vol, snap, &src);
	return 0;

out_unlink:
	unlink(path);
out_close:
	store_snapshot_close(vol, snap, &src);
	return rc;
}

/*
 * What the store knows of snapshot SNAP of VOL: its id (into ID, IDLEN
 * bytes), time and stored bytes if counted.  -ENOENT, -ENOMEM.
 */
static int find_snapshot(struct volume *vol, const char *snap, char *id, size_t idlen,
                         struct store_snapshot *out)
{
	struct store_info info;
	int rc = -ENOENT;

	if (store_info(vol, true, &info) < 0)
		return -ENOMEM;
	for (size_t i = 0; i < info.n_snapshots && rc < 0; i++)
		if (strcmp(info.snapshots[i].name, snap) == 0) {
			*out = info.snapshots[i];
			snprintf(id, idlen, "%s", out->id);
			out->name = NULL;
			out->id = id;
			rc = 0;
		}
	store_info_free(&info);
	return rc;
}

int manage_clone(struct manager *m, const char *from, const char *name, char *err, size_t errlen)
{
	char vname[STORE_NAME_MAX + 1], base[PATH_MAX + 600], tmp[PATH_MAX + 64];
	char backing[PATH_MAX + 600], id[128];
	const char *at = strchr(from, '@'), *snap;
	const char *bases = store_bases_dir(m->st);
	struct store_snapshot si;
	struct volume *vol;
	struct stat sb;
	int rc;

	if (!blockd_name_valid(name, strlen(name)))
		return fail(err, errlen, -EINVAL, "invalid volume name");
	if (!at || (size_t)(at - from) > STORE_NAME_MAX ||
	    !blockd_name_valid(from, (size_t)(at - from)) ||
	    !blockd_name_valid(at + 1, strlen(at + 1)))
		return fail(err, errlen, -EINVAL, "\"from\" must be VOLUME@SNAPSHOT");
	memcpy(vname, from, (size_t)(at - from));
	vname[at - from] = '\0';
	snap = at + 1;
	pthread_mutex_lock(&m->lock);
	if (volume_exists(m, name)) {
		rc = fail(err, errlen, -EEXIST, "volume %s already exists", name);
		goto out_unlock;
	}
	rc = get_volume(m, vname, &vol, NULL, err, errlen);
	if (rc < 0)
		goto out_unlock;
	/* The snapshot's identity: its id and time, so a re-made name never reuses a base. */
	rc = find_snapshot(vol, snap, id, sizeof(id), &si);
	if (rc < 0) {
		fail(err, errlen, rc, "volume %s has no snapshot %s", vname, snap);
		goto out_put;
	}
	snprintf(base, sizeof(base), "%s/%s@%s-%s-%llu.%u.qcow2", bases, vname, snap, si.id,
	         (unsigned long long)si.date_sec, si.date_nsec);
	if (stat(base, &sb) < 0) {
		snprintf(tmp, sizeof(tmp), "%s/.base-%u.tmp", bases,
		         atomic_fetch_add(&m->copies, 1));
		/* The copy may take long: other changes go on; the claim keeps the snapshot. */
		pthread_mutex_unlock(&m->lock);
		rc = copy_snapshot(vol, snap, tmp, err, errlen);
		pthread_mutex_lock(&m->lock);
		if (rc < 0)
			goto out_put;
		if (stat(base, &sb) == 0) { /* another clone made it meanwhile */
			unlink(tmp);
		} else {
			rc = publish(tmp, base, bases, err, errlen);
			if (rc < 0)
				goto out_put;
			log_info("base %s: made from %s", base, from);
		}
		if (volume_exists(m, name)) {
			rc = fail(err, errlen, -EEXIST, "volume %s already exists", name);
			goto out_put;
		}
	}
	/* Relative to the volume's folder, as qemu resolves it: the data directory can move. */
	snprintf(backing, sizeof(backing), "../bases/%s", strrchr(base, '/') + 1);
	rc = make_volume(m, name, 0, backing, err, errlen);
	if (rc == 0)
		log_info("volume %s: cloned from %s", name, from);
out_put:
	store_put(vol);
out_unlock:
	pthread_mutex_unlock(&m->lock);
	return rc;
}

/* Removes base BASE if no volume uses it any more (manager lock held). */
static void collect_base(struct manager *m, const char *base)
{
	if (!base[0] || store_base_used(m->st, base) || unlink(base) < 0)
		return;
	sync_dir(store_bases_dir(m->st));
	log_info("base %s: removed, no volume uses it", base);
}

int manage_delete(struct manager *m, const char *name, char *err, size_t errlen)
{
	char path[PATH_MAX + 32], base[PATH_MAX];
	struct volume *vol;
	int rc;

	pthread_mutex_lock(&m->lock);
	rc = get_volume(m, name, &vol, NULL, err, errlen);
	if (rc < 0)
		goto out_unlock;
	rc = store_remove(m->st, vol, err, errlen);
	if (rc < 0)
		goto out_put;
	volume_base(vol, base, sizeof(base));
	volume_path(m, name, path, sizeof(path));
	/* A file already removed by hand is what the caller wants too. */
	rc = unlink(path) < 0 && errno != ENOENT ? -errno : 0;
	if (rc == 0)
		rc = sync_dir(store_volumes_dir(m->st));
	if (rc < 0) {
		store_restore_link(m->st, vol);
		fail(err, errlen, rc, "cannot remove %s: %s", path, strerror(-rc));
		goto out_put;
	}
	store_removed(vol);
	log_info("volume %s: deleted", name);
	collect_base(m, base);
out_put:
	store_put(vol);
out_unlock:
	pthread_mutex_unlock(&m->lock);
	return rc;
}

int manage_resize(struct manager *m, const char *name, uint64_t size, char *err, size_t errlen)
{
	char who[STORE_HOLDER_MAX];
	struct volume *vol;
	struct image *im;
	int rc;

	if (size == 0 || size > MANAGE_MAX_VOLUME_BYTES)
		return fail(err, errlen, -EINVAL, "size must be between 1 byte and %llu bytes",
		            (unsigned long long)MANAGE_MAX_VOLUME_BYTES);
	pthread_mutex_lock(&m->lock);
	rc = get_volume(m, name, &vol, &im, err, errlen);
	if (rc < 0)
		goto out_unlock;
	pthread_mutex_lock(&im->lock);
	if (size < atomic_load(&im->size) &&
	    (store_attached(vol, who, sizeof(who)) || qcow_snapshot_count(im->img) > 0)) {
		rc = fail(err, errlen, -EBUSY,
		          "shrinking needs a detached volume without snapshots");
	} else {
		image_quiesce(im);
		rc = qcow_resize(im->img, size);
		if (rc == 0)
			rc = qcow_flush(im->img);
		if (rc == 0) {
			struct qcow_info info;

			qcow_get_info(im->img, &info);
			atomic_store(&im->size, info.size_bytes);
		} else {
			snprintf(err, errlen, "%s", qcow_last_error(im->img));
			image_note_failure(im, name);
		}
	}
	pthread_mutex_unlock(&im->lock);
	put_volume(vol, im);
out_unlock:
	pthread_mutex_unlock(&m->lock);
	if (rc == 0)
		log_info("volume %s: resized to %llu bytes", name, (unsigned long long)size);
	return rc;
}

static bool snapshot_exists(struct qcow_image *img, const char *snap)
{
	struct qcow_snapshot_info si;
	uint32_t n = qcow_snapshot_count(img);

	for (uint32_t i = 0; i < n; i++)
		if (qcow_snapshot_get(img, i, &si) == 0 && strcmp(si.name, snap) == 0)
			return true;
	return false;
}

int manage_snapshot_create(struct manager *m, const char *name, const char *snap, char *err,
                           size_t errlen)
{
	struct volume *vol;
	struct image *im;
	int rc;

	if (!blockd_name_valid(snap, strlen(snap)))
		return fail(err, errlen, -EINVAL, "invalid snapshot name");
	pthread_mutex_lock(&m->lock);
	rc = get_volume(m, name, &vol, &im, err, errlen);
	if (rc < 0)
		goto out_unlock;
	pthread_mutex_lock(&im->lock);
	if (snapshot_exists(im->img, snap)) {
		rc = fail(err, errlen, -EEXIST, "volume %s already has a snapshot %s", name, snap);
	} else {
		/*
		 * Every acknowledged write has completed: the ones the rings
		 * carried out are drained here, the pool's finished under this
		 * lock.  New requests wait for the lock (or go to the pool), so
		 * the snapshot holds exactly what was acknowledged before it.
		 */
		image_quiesce(im);
		rc = qcow_snapshot_create(im->img, snap);
		if (rc < 0) {
			snprintf(err, errlen, "%s", qcow_last_error(im->img));
			image_note_failure(im, name);
		} else {
			store_snapshots_changed(vol);
		}
	}
	pthread_mutex_unlock(&im->lock);
	put_volume(vol, im);
out_unlock:
	pthread_mutex_unlock(&m->lock);
	if (rc == 0)
		log_info("volume %s: snapshot %s taken", name, snap);
	return rc;
}

int manage_snapshot_delete(struct manager *m, const char *name, const char *snap, char *err,
                           size_t errlen)
{
	char who[STORE_NAME_MAX + 64];
	struct volume *vol;
	struct image *im;
	int rc;

	pthread_mutex_lock(&m->lock);
	rc = get_volume(m, name, &vol, &im, err, errlen);
	if (rc < 0)
		goto out_unlock;
	rc = store_release_view(vol, snap, who, sizeof(who));
	if (rc < 0) {
		fail(err, errlen, rc, "snapshot %s@%s is in use (%s); detach it first", name, snap,
		     who);
		goto out_put;
	}
	pthread_mutex_lock(&im->lock);
	if (!snapshot_exists(im->img, snap)) {
		rc = fail(err, errlen, -ENOENT, "volume %s has no snapshot %s", name, snap);
	} else {
		image_quiesce(im);
		rc = qcow_snapshot_delete(im->img, snap);
		if (rc < 0) {
			snprintf(err, errlen, "%s", qcow_last_error(im->img));
			image_note_failure(im, name);
		} else {
			store_snapshots_changed(vol);
		}
	}
	pthread_mutex_unlock(&im->lock);
out_put:
	put_volume(vol, im);
out_unlock:
	pthread_mutex_unlock(&m->lock);
	if (rc == 0)
		log_info("volume %s: snapshot %s deleted", name, snap);
	return rc;
}

int manage_snapshot_restore(struct manager *m, const char *name, const char *snap, char *err,
                            size_t errlen)
{
	char who[STORE_HOLDER_MAX];
	struct volume *vol;
	struct image *im;
	int rc;

	pthread_mutex_lock(&m->lock);
	rc = get_volume(m, name, &vol, &im, err, errlen);
	if (rc < 0)
		goto out_unlock;
	/*
	 * A writer that attaches after this check finds the lock held below:
	 * each of its requests comes after the revert.
	 */
	if (store_has_writer(vol, who, sizeof(who))) {
		rc = fail(err, errlen, -EBUSY,
		          "volume %s is attached read-write by %s; detach it before restoring",
		          name, who);
		goto out_put;
	}
	pthread_mutex_lock(&im->lock);
	if (!snapshot_exists(im->img, snap)) {
		rc = fail(err, errlen, -ENOENT, "volume %s has no snapshot %s", name, snap);
	} else {
		image_quiesce(im);
		rc = qcow_snapshot_revert(im->img, snap);
		if (rc < 0) {
			snprintf(err, errlen, "%s", qcow_last_error(im->img));
			image_note_failure(im, name);
		} else {
			struct qcow_info info;

			qcow_get_info(im->img, &info);
			atomic_store(&im->size, info.size_bytes);
		}
	}
	pthread_mutex_unlock(&im->lock);
out_put:
	put_volume(vol, im);
out_unlock:
	pthread_mutex_unlock(&m->lock);
	if (rc == 0)
		log_info("volume %s: restored to snapshot %s", name, snap);
	return rc;
}

int manage_snapshot_stored(struct manager *m, const char *name, const char *snap, uint64_t *out,
                           char *err, size_t errlen)
{
	struct store_snapshot si;
	struct volume *vol;
	struct image im;
	char id[128];
	int rc;

	rc = get_volume(m, name, &vol, NULL, err, errlen);
	if (rc < 0)
		return rc;
	rc = find_snapshot(vol, snap, id, sizeof(id), &si);
	if (rc < 0) {
		fail(err, errlen, rc, "no snapshot %s@%s", name, snap);
		goto out_put;
	}
	if (si.stored_known) {
		*out = si.stored;
		goto out_put;
	}
	/*
	 * Counted through an image opened for this alone, with a small cache,
	 * and closed again: looking at snapshots (blockfs's ls -l) neither keeps
	 * a view per snapshot nor holds up the clients of a served one.
	 */
	rc = store_snapshot_open(vol, snap, MANAGE_COUNT_CACHE_BYTES, &im, err, errlen);
	if (rc < 0)
		goto out_put;
	rc = qcow_stored_bytes(im.img, out);
	if (rc < 0)
		fail(err, errlen, rc, "snapshot %s@%s cannot be read: %s", name, snap,
		     qcow_last_error(im.img));
	else
		store_snapshot_stored(vol, id, *out);
	store_snapshot_close(vol, snap, &im);
out_put:
	store_put(vol);
	return rc;
}

int manage_recover(struct manager *m, const char *name, char *err, size_t errlen)
{
	struct volume *vol;
	int rc;

	pthread_mutex_lock(&m->lock);
	rc = get_volume(m, name, &vol, NULL, err, errlen);
	if (rc == 0) {
		rc = store_recover(vol, err, errlen);
		if (rc < 0 && rc != -EBUSY && rc != -ENOMEM)
			rc = -ENXIO;
		store_put(vol);
	}
	pthread_mutex_unlock(&m->lock);
	return rc;
}

int manage_rescan(struct manager *m)
{
	int added;

	pthread_mutex_lock(&m->lock);
	added = store_rescan(m->st);
	pthread_mutex_unlock(&m->lock);
	return added;
}
