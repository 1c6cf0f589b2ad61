/* SPDX-License-Identifier: MIT */
/*
 * store.c - volumes of a data directory, their snapshot views and who
 * writes them.  One mutex (st->lock) guards the lists and attachments; the
 * images themselves are guarded by their export_image locks.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fileio.h"
#include "log.h"
#include "qcow.h"
#include "store.h"
#include "store_internal.h"

const unsigned stats_bucket_us[STATS_BUCKETS - 1] = {
    50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 100000, 1000000,
};

void export_quiesce(struct export_image *e)
{
	while (atomic_load(&e->fast_inflight) > 0) {
		struct timespec ts = {0, 20000};

		nanosleep(&ts, NULL);
	}
}

int sync_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		rc = -errno;
	close(fd);
	return rc;
}

bool store_valid_name(const char *name, size_t len)
{
	return blockd_name_valid(name, len);
}

static int image_open(struct export_image *e, const char *path, int fd, const char *snapshot,
                      uint64_t cache_bytes, char *err, size_t errlen)
{
	struct qcow_open_opts opts = {
	    .path = path,
	    .ops = &fileio_ops,
	    .flags = snapshot ? 0 : QCOW_OPEN_RDWR,
	    .l2_cache_bytes = cache_bytes,
	    .snapshot = snapshot,
	};
	struct qcow_info info;
	int rc;

	rc = fileio_open(fd, &opts.ctx, &e->dfd);
	if (rc < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(-rc));
		return rc;
	}
	rc = qcow_open(&opts, &e->img, err, errlen);
	if (rc < 0) {
		fileio_ops.close(opts.ctx);
		return rc;
	}
	qcow_get_info(e->img, &info);
	pthread_mutex_init(&e->lock, NULL);
	e->fd = fd;
	e->read_only = snapshot != NULL;
	e->has_backing = qcow_backing(e->img) != NULL;
	e->size = info.size_bytes;
	atomic_init(&e->fast_inflight, 0);
	return 0;
}

int image_close(struct export_image *e, const char *what)
{
	int rc = qcow_close(e->img);

	if (rc < 0)
		log_error("%s: closing failed: %s", what, strerror(-rc));
	pthread_mutex_destroy(&e->lock);
	return rc;
}

/* Reads the snapshot names of vol's image (caller holds nothing else on it). */
int load_snap_names(struct volume *vol)
{
	uint32_t n = qcow_snapshot_count(vol->main.img), kept = 0;
	struct qcow_snapshot_info si;

	free(vol->snap_names);
	vol->snap_names = NULL;
	vol->n_snaps = 0;
	if (n == 0)
		return 0;
	vol->snap_names = calloc(n, sizeof(*vol->snap_names));
	if (!vol->snap_names)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++) {
		if (qcow_snapshot_get(vol->main.img, i, &si) < 0)
			continue;
		if (!store_valid_name(si.name, strlen(si.name))) {
			log_warn(
			    "volume %s: snapshot name \"%.64s\" is not a valid export name; not "
			    "served",
			    vol->name, si.name);
			continue;
		}
		strcpy(vol->snap_names[kept++], si.name);
	}
	vol->n_snaps = kept;
	return 0;
}

struct volume *find_volume(struct store *st, const char *name, size_t len)
{
	for (struct volume *v = st->volumes; v; v = v->next)
		if (strlen(v->name) == len && memcmp(v->name, name, len) == 0)
			return v;
	return NULL;
}

/* Opens (and repairs, if its dirty bit says so) one volume; links nothing. */
int open_volume(const struct store *st, const char *name, struct volume **out)
{
	char err[512];
	struct volume *vol = calloc(1, sizeof(*vol));
	int fd, rc;

	if (!vol)
		return -ENOMEM;
	snprintf(vol->name, sizeof(vol->name), "%s", name);
	if ((size_t)snprintf(vol->path, sizeof(vol->path), "%s/%s.qcow2", st->volumes_dir, name) >=
	    sizeof(vol->path)) {
		free(vol);
		return -ENAMETOOLONG;
	}
	snprintf(vol->description, sizeof(vol->description), "blockd volume %s", name);
	fd = open(vol->path, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		log_error("volume %s: cannot open %s: %s", name, vol->path, strerror(errno));
		goto out_free;
	}
	rc = qcow_posix_lock(fd, true);
	if (rc < 0) {
		log_error("volume %s: %s is in use by another process; not served", name,
		          vol->path);
		goto out_close;
	}
	rc = image_open(&vol->main, vol->path, fd, NULL, st->cache_bytes, err, sizeof(err));
	if (rc < 0) {
		log_error("volume %s: not served: %s", name, err);
		goto out_close;
	}
	rc = load_snap_names(vol);
	if (rc < 0) {
		image_close(&vol->main, vol->name);
		goto out_close;
	}
	log_info("volume %s: %llu bytes, %u snapshot(s)", name, (unsigned long long)vol->main.size,
	         vol->n_snaps);
	*out = vol;
	return 0;

out_close:
	close(fd);
out_free:
	free(vol);
	return rc;
}

/*
 * Opens the volumes of the folder that are not open yet.  Only the main
 * thread scans; the slow part (opening, maybe repairing) runs without
 * st->lock, which the event loops take during handshakes.
 */
static int scan(struct store *st)
{
	DIR *d = opendir(st->volumes_dir);
	struct dirent *de;
	int added = 0;

	if (!d) {
		log_error("cannot read %s: %s", st->volumes_dir, strerror(errno));
		return -errno;
	}
	while ((de = readdir(d)) != NULL) {
		size_t len = strlen(de->d_name);
		struct volume *vol;
		bool known;

		if (de->d_name[0] == '.' && strstr(de->d_name, ".tmp")) {
			/* A create or clone that a crash interrupted: never a volume. */
			unlinkat(dirfd(d), de->d_name, 0);
			continue;
		}
		if (len <= 6 || strcmp(de->d_name + len - 6, ".qcow2") != 0)
			continue;
		len -= 6;
		if (!store_valid_name(de->d_name, len)) {
			log_warn("ignoring %s/%s: not a valid volume name", st->volumes_dir,
			         de->d_name);
			continue;
		}
		pthread_mutex_lock(&st->lock);
		known = find_volume(st, de->d_name, len) != NULL;
		pthread_mutex_unlock(&st->lock);
		if (known)
			continue;
		de->d_name[len] = '\0';
		if (open_volume(st, de->d_name, &vol) < 0)
			continue;
		pthread_mutex_lock(&st->lock);
		link_volume(st, vol);
		pthread_mutex_unlock(&st->lock);
		added++;
	}
	closedir(d);
	return added;
}

/*
 * Removes ".*.tmp" files a crash left in DIR (a base image being copied).
 * A base published just before a crash, whose clone was not, is kept: the
 * next clone of that snapshot uses it.
 */
static void remove_temporaries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] == '.' && strstr(de->d_name, ".tmp") &&
		    unlinkat(dirfd(d), de->d_name, 0) == 0)
			log_info("removed %s/%s, left by an interrupted call", dir, de->d_name);
	closedir(d);
}

int store_open(const struct store_config *cfg, struct store **out)
{
	struct store *st = calloc(1, sizeof(*st));
	int rc;

	if (!st)
		return -ENOMEM;
	pthread_mutex_init(&st->lock, NULL);
	st->cache_bytes = cfg->cache_bytes;
	if ((size_t)snprintf(st->data_dir, sizeof(st->data_dir), "%s", cfg->data_dir) >=
	        sizeof(st->data_dir) ||
	    (size_t)snprintf(st->volumes_dir, sizeof(st->volumes_dir), "%s/volumes",
	                     cfg->data_dir) >= sizeof(st->volumes_dir) ||
	    (size_t)snprintf(st->bases_dir, sizeof(st->bases_dir), "%s/bases", cfg->data_dir) >=
	        sizeof(st->bases_dir)) {
		free(st);
		return -ENAMETOOLONG;
	}
	if (mkdir(st->bases_dir, 0700) < 0 && errno != EEXIST) {
		rc = -errno;
		log_error("cannot create %s: %s", st->bases_dir, strerror(errno));
		free(st);
		return rc;
	}
	if (mkdir(st->volumes_dir, 0700) < 0 && errno != EEXIST) {
		rc = -errno;
		log_error("cannot create %s: %s", st->volumes_dir, strerror(errno));
		free(st);
		return rc;
	}
	remove_temporaries(st->bases_dir);
	rc = scan(st);
	if (rc < 0) {
		free(st);
		return rc;
	}
	*out = st;
	return 0;
}

int store_rescan(struct store *st)
{
	return scan(st);
}

/* Closes a volume that is no longer linked (views, image, descriptor) and frees it. */
void free_volume(struct volume *vol)
{
	while (vol->views) {
		struct snap_view *sv = vol->views;

		vol->views = sv->next;
		image_close(&sv->e, vol->name);
		free(sv);
	}
	free(vol->snap_names);
	free(vol);
}

void link_volume(struct store *st, struct volume *vol)
{
	vol->next = st->volumes;
	st->volumes = vol;
	st->n_volumes++;
}

int store_close(struct store *st)
{
	int first = 0, rc;

	while (st->volumes) {
		struct volume *vol = st->volumes;

		st->volumes = vol->next;
		while (vol->views) {
			struct snap_view *sv = vol->views;

			vol->views = sv->next;
			image_close(&sv->e, vol->name);
			free(sv);
		}
		rc = image_close(&vol->main, vol->name);
		if (rc < 0 && first == 0)
			first = rc;
		else if (rc == 0)
			log_info("volume %s: closed cleanly", vol->name);
		close(vol->main.fd);
		free_volume(vol);
	}
	pthread_mutex_destroy(&st->lock);
	free(st);
	return first;
}

static struct snap_view *find_view(struct volume *vol, const char *snap, size_t len)
{
	for (struct snap_view *sv = vol->views; sv; sv = sv->next)
		if (strlen(sv->name) == len && memcmp(sv->name, snap, len) == 0)
			return sv;
	return NULL;
}

static bool has_snapshot(const struct volume *vol, const char *snap, size_t len)
{
	for (uint32_t i = 0; i < vol->n_snaps; i++)
		if (strlen(vol->snap_names[i]) == len && memcmp(vol->snap_names[i], snap, len) == 0)
			return true;
	return false;
}

/*
 * The read-only view of snapshot SNAP of vol, opened on first use.  Called
 * with st->lock held; drops it while opening (a few small reads) and takes
 * it again; vol->busy keeps the volume from being deleted meanwhile.
 */
static struct export_image *snapshot_view(struct store *st, struct volume *vol, const char *snap)
{
	char err[512];
	struct snap_view *sv = find_view(vol, snap, strlen(snap)), *other;
	int rc;

	if (sv)
		return &sv->e;
	if (!has_snapshot(vol, snap, strlen(snap)))
		return NULL;
	sv = calloc(1, sizeof(*sv));
	if (!sv)
		return NULL;
	snprintf(sv->name, sizeof(sv->name), "%s", snap);
	vol->busy++;
	pthread_mutex_unlock(&st->lock);
	rc = image_open(&sv->e, vol->path, vol->main.fd, sv->name, st->cache_bytes, err,
	                sizeof(err));
	pthread_mutex_lock(&st->lock);
	vol->busy--;
	if (rc < 0) {
		log_error("volume %s: cannot open snapshot %s: %s", vol->name, sv->name, err);
		free(sv);
		return NULL;
	}
	other = find_view(vol, snap, strlen(snap));
	if (other) { /* another loop opened it meanwhile */
		image_close(&sv->e, vol->name);
		free(sv);
		return &other->e;
	}
	sv->next = vol->views;
	vol->views = sv;
	return &sv->e;
}

int store_snapshot_stored(struct store *st, const char *name, const char *snap, uint64_t *out)
{
	struct export_image tmp, *e;
	struct snap_view *sv;
	struct volume *vol;
	char err[512];
	int rc;

	pthread_mutex_lock(&st->lock);
	vol = find_volume(st, name, strlen(name));
	if (!vol || !has_snapshot(vol, snap, strlen(snap))) {
		pthread_mutex_unlock(&st->lock);
		return -ENOENT;
	}
	sv = find_view(vol, snap, strlen(snap));
	vol->busy++;
	pthread_mutex_unlock(&st->lock);
	if (sv) { /* served over NBD: its view counts once and keeps the number */
		e = &sv->e;
		pthread_mutex_lock(&e->lock);
		rc = sv->stored_known ? 0 : qcow_stored_bytes(e->img, &sv->stored);
		sv->stored_known = rc == 0;
		*out = sv->stored;
		pthread_mutex_unlock(&e->lock);
	} else {
		/*
		 * Not served: counted through an image opened for this alone, with
		 * a small cache, and closed again, so that looking at snapshots
		 * (blockfs's ls -l) does not keep a view and its cache per snapshot.
		 */
		rc = image_open(&tmp, vol->path, vol->main.fd, snap, STORE_COUNT_CACHE_BYTES, err,
		                sizeof(err));
		if (rc == 0) {
			rc = qcow_stored_bytes(tmp.img, out);
			image_close(&tmp, vol->name);
		} else {
			log_error("volume %s: cannot open snapshot %s: %s", vol->name, snap, err);
		}
	}
	pthread_mutex_lock(&st->lock);
	vol->busy--;
	pthread_mutex_unlock(&st->lock);
	return rc;
}

bool volume_has_writer(const struct volume *vol)
{
	for (const struct attachment *a = vol->attachments; a; a = a->next)
		if (!a->read_only)
			return true;
	return false;
}

static const char *volume_writer(const struct volume *vol)
{
	for (const struct attachment *a = vol->attachments; a; a = a->next)
		if (!a->read_only)
			return a->peer;
	return NULL;
}

/* Finds NAME's export with st->lock held. */
static int find_export(struct store *st, const char *name, const char *peer,
                       struct proto_export *out, struct volume **volp, struct export_image **ep)
{
	size_t len = strlen(name), sfx = strlen(BLOCKD_RO_SUFFIX);
	bool ro = len > sfx && strcmp(name + len - sfx, BLOCKD_RO_SUFFIX) == 0;
	const char *at = memchr(name, '@', len);
	size_t vlen = at ? (size_t)(at - name) : len - (ro ? sfx : 0);
	struct export_image *e;
	struct volume *vol;
	const char *writer;

	if (!store_valid_name(name, vlen) || (at && !store_valid_name(at + 1, len - vlen - 1)))
		return -ENOENT;
	vol = find_volume(st, name, vlen);
	if (!vol)
		return -ENOENT;
	if (at) {
		e = snapshot_view(st, vol, at + 1);
		if (!e)
			return -ENOENT;
	} else if (ro) {
		e = &vol->main; /* read by a peer that does not claim the volume */
	} else {
		e = &vol->main;
		writer = volume_writer(vol);
		if (writer && strcmp(writer, peer) != 0) {
			log_info("volume %s: refusing %s, attached read-write by %s", vol->name,
			         peer, writer);
			return -EPERM;
		}
	}
	*out = (struct proto_export){
	    .size_bytes = e->size,
	    .read_only = e->read_only || ro,
	    .multi_conn = true,
	    .min_block = 1,
	    .pref_block = 4096,
	    .max_block = PROTO_MAX_PAYLOAD,
	    .description = at ? NULL : vol->description,
	};
	*volp = vol;
	*ep = e;
	return 0;
}

int store_lookup(struct store *st, const char *name, const char *peer, struct proto_export *out)
{
	struct export_image *e;
	struct volume *vol;
	int rc;

	pthread_mutex_lock(&st->lock);
	rc = find_export(st, name, peer, out, &vol, &e);
	pthread_mutex_unlock(&st->lock);
	return rc;
}

int store_attach(struct store *st, const char *name, const char *peer, struct proto_export *out,
                 struct attachment **att)
{
	struct export_image *e;
	struct attachment *a;
	struct volume *vol;
	int rc;

	pthread_mutex_lock(&st->lock);
	rc = find_export(st, name, peer, out, &vol, &e);
	if (rc < 0)
		goto out;
	for (a = vol->attachments; a; a = a->next)
		if (a->e == e && a->read_only == out->read_only && strcmp(a->peer, peer) == 0)
			break;
	if (!a) {
		a = calloc(1, sizeof(*a));
		if (!a) {
			rc = -ENOMEM;
			goto out;
		}
		a->vol = vol;
		a->e = e;
		a->read_only = out->read_only;
		a->since = time(NULL);
		snprintf(a->export_name, sizeof(a->export_name), "%s", name);
		snprintf(a->peer, sizeof(a->peer), "%s", peer);
		a->next = vol->attachments;
		vol->attachments = a;
		log_info("volume %s: attached %s by %s", vol->name,
		         a->read_only ? "read-only" : "read-write", peer);
	}
	a->connections++;
	*att = a;
out:
	pthread_mutex_unlock(&st->lock);
	return rc;
}

void store_detach(struct store *st, struct attachment *att)
{
	struct volume *vol = att->vol;

	pthread_mutex_lock(&st->lock);
	if (--att->connections == 0) {
		struct attachment **pp = &vol->attachments;

		while (*pp != att)
			pp = &(*pp)->next;
		*pp = att->next;
		log_info("volume %s: detached by %s", vol->name, att->peer);
		free(att);
	}
	pthread_mutex_unlock(&st->lock);
}

struct export_image *attachment_image(const struct attachment *att)
{
	return att->e;
}

struct volume_stats *attachment_stats(struct attachment *att)
{
	return &att->vol->stats;
}

int store_list(struct store *st, size_t index, char *buf, size_t buflen)
{
	int found = 0;

	pthread_mutex_lock(&st->lock);
	for (struct volume *v = st->volumes; v && !found; v = v->next) {
		if (index == 0) {
			snprintf(buf, buflen, "%s", v->name);
			found = 1;
		} else if (index - 1 < v->n_snaps) {
			snprintf(buf, buflen, "%s@%s", v->name, v->snap_names[index - 1]);
			found = 1;
		} else {
			index -= 1 + v->n_snaps;
		}
	}
	pthread_mutex_unlock(&st->lock);
	return found;
}
