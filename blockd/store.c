/* SPDX-License-Identifier: MIT */
/*
 * store.c - the registry of volumes, their snapshot views and who is
 * attached to them.
 *
 * st->lock guards the registry: the list of volumes and, of each volume,
 * its snapshot list, views and attachments (CONCURRENCY.md has the whole
 * table).  It is held only to look at and change those lists: never across
 * I/O, never while waiting for anything, and nothing else is taken under
 * it; so the event loops may take it.  Work that needs the disk (opening a
 * view, freeing a volume, reading the snapshot list of an image) runs
 * without it and publishes its result under it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "daemon_limits.h"
#include "log.h"
#include "qcow.h"
#include "store.h"

const unsigned stats_bucket_us[STATS_BUCKETS - 1] = {
    50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 100000, 1000000,
};

/*
 * A snapshot in use: an open view that clients read through, or just a
 * claim (users) that keeps the snapshot from being deleted while it is
 * opened, copied or counted.
 */
struct view {
	char name[STORE_NAME_MAX + 1];
	bool open;      /* im is open */
	unsigned users; /* attachments, pending opens, private readers */
	struct image im;
	struct view *next;
};

/* Connections of one holder to one target of a volume. */
struct attachment {
	struct volume *vol;
	struct view *view; /* NULL for the volume itself */
	struct image *im;
	enum store_access access;
	char holder[STORE_HOLDER_MAX];
	unsigned connections;
	unsigned epoch; /* the volume's epoch when attached */
	time_t since;   /* wall clock, for the API */
	struct attachment *next;
};

struct volume {
	struct store *st;
	char name[STORE_NAME_MAX + 1];
	char *path; /* DIR/volumes/NAME.qcow2 (constant) */
	atomic_uint refs;
	atomic_bool gone;      /* out of the registry for good: connections are cut */
	atomic_uint epoch;     /* moved on by a recovery: older attachments are cut */
	atomic_bool file_gone; /* its file was removed: freeing writes nothing */
	/*
	 * Written with both main.lock and st->lock held, read under either:
	 * whether the image is open, and if the last open failed, why.
	 */
	bool open;
	char *error;
	/* Guarded by main.lock: the file, open and locked while the image is. */
	int fd;
	struct image main;
	/* Guarded by st->lock: */
	dev_t dev; /* of the file last opened */
	ino_t ino;
	char *backing; /* real path of its backing file, or "" */
	char *base;    /* the same when it is one of DIR/bases, else "" */
	struct store_snapshot *snaps;
	uint32_t n_snaps;
	struct view *views;
	struct attachment *attachments;
	unsigned uses;     /* control calls and private readers that need the image open */
	time_t idle_since; /* CLOCK_MONOTONIC seconds when it was last opened or let go */
	bool close_queued; /* an idle close is on its queue */
	struct volume *next, *hnext; /* in the list, in its hash bucket */
	/* Atomics: */
	struct volume_stats stats;
	struct exec_job free_job, close_job;
};

struct store {
	pthread_mutex_t lock;
	char data_dir[PATH_MAX];
	char volumes_dir[PATH_MAX];
	char bases_dir[PATH_MAX];
	const char *backing_dirs[3]; /* bases_dir, volumes_dir: where backing files may be */
	uint64_t cache_bytes;
	struct exec *exec;
	struct exec_queue free_queue;
	/* Guarded by lock: the volumes, listed and by name (a chained hash table). */
	struct volume *volumes;
	struct volume **buckets;
	size_t n_buckets, n_volumes;
	bool starting; /* the first scan, before anything else runs */
};

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

const char *store_volumes_dir(const struct store *st)
{
	return st->volumes_dir;
}

const char *store_bases_dir(const struct store *st)
{
	return st->bases_dir;
}

/* ------------------------------------------------------------ snapshots */

static void free_snaps(struct store_snapshot *s, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		free(s[i].name);
		free(s[i].id);
	}
	free(s);
}

/* The snapshot list of IMG (its lock held). */
static int read_snaps(struct qcow_image *img, struct store_snapshot **out, uint32_t *n_out)
{
	uint32_t n = qcow_snapshot_count(img), kept = 0;
	struct qcow_snapshot_info si;
	struct store_snapshot *s = n ? calloc(n, sizeof(*s)) : NULL;

	if (n && !s)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++) {
		struct store_snapshot *e = &s[kept];

		if (qcow_snapshot_get(img, i, &si) < 0)
			continue;
		e->name = strdup(si.name);
		e->id = strdup(si.id);
		if (!e->name || !e->id) {
			free(e->name);
			free(e->id);
			free_snaps(s, kept);
			return -ENOMEM;
		}
		e->date_sec = si.date_sec;
		e->date_nsec = si.date_nsec;
		e->disk_size = si.disk_size_bytes;
		kept++;
	}
	*out = s;
	*n_out = kept;
	return 0;
}

/* A snapshot NAME clients may use (a valid export name); st->lock held. */
static bool has_snapshot(const struct volume *vol, const char *name, size_t len)
{
	if (!blockd_name_valid(name, len))
		return false;
	for (uint32_t i = 0; i < vol->n_snaps; i++)
		if (strlen(vol->snaps[i].name) == len && memcmp(vol->snaps[i].name, name, len) == 0)
			return true;
	return false;
}

void store_snapshots_changed(struct volume *vol)
{
	struct store *st = vol->st;
	struct store_snapshot *s, *old;
	uint32_t n, n_old;

	if (read_snaps(vol->main.img, &s, &n) < 0) {
		log_error("volume %s: out of memory reading its snapshots", vol->name);
		return;
	}
	pthread_mutex_lock(&st->lock);
	old = vol->snaps;
	n_old = vol->n_snaps;
	/* Counts already known stay: a snapshot never changes. */
	for (uint32_t i = 0; i < n; i++)
		for (uint32_t j = 0; j < n_old; j++)
			if (old[j].stored_known && strcmp(old[j].id, s[i].id) == 0 &&
			    old[j].date_sec == s[i].date_sec &&
			    old[j].date_nsec == s[i].date_nsec) {
				s[i].stored_known = true;
				s[i].stored = old[j].stored;
			}
	vol->snaps = s;
	vol->n_snaps = n;
	pthread_mutex_unlock(&st->lock);
	free_snaps(old, n_old);
}

void store_snapshot_stored(struct volume *vol, const char *id, uint64_t stored)
{
	pthread_mutex_lock(&vol->st->lock);
	for (uint32_t i = 0; i < vol->n_snaps; i++)
		if (strcmp(vol->snaps[i].id, id) == 0) {
			vol->snaps[i].stored = stored;
			vol->snaps[i].stored_known = true;
		}
	pthread_mutex_unlock(&vol->st->lock);
}

/* ------------------------------------------------------ volumes, refs */

/* FNV-1a: names are short and chosen by operators, not by clients. */
static size_t name_hash(const char *name, size_t len)
{
	uint64_t h = 14695981039346656037ull;

	for (size_t i = 0; i < len; i++)
		h = (h ^ (unsigned char)name[i]) * 1099511628211ull;
	return (size_t)h;
}

static struct volume *find_volume(struct store *st, const char *name, size_t len)
{
	struct volume *v = st->buckets[name_hash(name, len) % st->n_buckets];

	for (; v; v = v->hnext)
		if (strlen(v->name) == len && memcmp(v->name, name, len) == 0)
			return v;
	return NULL;
}

/* Twice the buckets once there are more volumes than buckets; without memory, longer chains. */
static void grow_buckets(struct store *st)
{
	size_t n = st->n_buckets * 2;
	struct volume **b;

	if (st->n_volumes <= st->n_buckets || !(b = calloc(n, sizeof(*b))))
		return;
	for (size_t i = 0; i < st->n_buckets; i++)
		while (st->buckets[i]) {
			struct volume *v = st->buckets[i];
			size_t k = name_hash(v->name, strlen(v->name)) % n;

			st->buckets[i] = v->hnext;
			v->hnext = b[k];
			b[k] = v;
		}
	free(st->buckets);
	st->buckets = b;
	st->n_buckets = n;
}

static void link_volume(struct store *st, struct volume *vol)
{
	struct volume **bucket =
	    &st->buckets[name_hash(vol->name, strlen(vol->name)) % st->n_buckets];

	vol->next = st->volumes;
	st->volumes = vol;
	vol->hnext = *bucket;
	*bucket = vol;
	st->n_volumes++;
	grow_buckets(st);
}

static void unlink_volume(struct store *st, struct volume *vol)
{
	struct volume **pp = &st->volumes;

	while (*pp != vol)
		pp = &(*pp)->next;
	*pp = vol->next;
	vol->next = NULL;
	pp = &st->buckets[name_hash(vol->name, strlen(vol->name)) % st->n_buckets];
	while (*pp != vol)
		pp = &(*pp)->hnext;
	*pp = vol->hnext;
	vol->hnext = NULL;
	st->n_volumes--;
}

static time_t mono_sec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

/* Nothing needs VOL's image open (st->lock held): no attachment, no use, no view claimed. */
static bool idle(const struct volume *vol)
{
	if (vol->attachments || vol->uses)
		return false;
	for (const struct view *v = vol->views; v; v = v->next)
		if (v->users)
			return false;
	return true;
}

/*
 * With main.lock held, VOL open and idle (views unclaimed): closes its
 * views, its image and its file; with WRITE_BACK false, an image nothing
 * was written to since it opened, without flushing (opening synced what it
 * repaired).  0 or the error closing the image gave.
 */
static int close_locked(struct volume *vol, bool write_back)
{
	struct store *st = vol->st;
	struct view *views;
	int rc = 0;

	pthread_mutex_lock(&st->lock);
	views = vol->views;
	vol->views = NULL;
	vol->open = false;
	pthread_mutex_unlock(&st->lock);
	while (views) {
		struct view *v = views;

		views = v->next;
		if (v->open)
			image_close(&v->im, vol->name);
		image_fini(&v->im);
		free(v);
	}
	if (atomic_load(&vol->file_gone) || !write_back)
		image_abandon(&vol->main);
	else
		rc = image_close(&vol->main, vol->name);
	close(vol->fd);
	vol->fd = -1;
	return rc;
}

/*
 * With main.lock held: closes VOL if a failed write-back fenced it and
 * nothing uses it any more, so that the next open checks and repairs it.
 */
static void reopen_if_fenced(struct volume *vol)
{
	bool go;

	if (!vol->open || !atomic_load(&vol->main.fenced))
		return;
	pthread_mutex_lock(&vol->st->lock);
	go = idle(vol);
	pthread_mutex_unlock(&vol->st->lock);
	if (go) {
		close_locked(vol, true); /* fails, logged: it is fenced */
		log_info("volume %s: closed after it was fenced; opening it again", vol->name);
	}
}

/* Closes everything of VOL and frees it; 0 or the error closing its image gave. */
static int free_volume(struct volume *vol)
{
	int rc = 0;

	if (vol->open && (rc = close_locked(vol, true)) == 0 && !atomic_load(&vol->file_gone))
		log_debug("volume %s: closed cleanly", vol->name);
	image_fini(&vol->main);
	free_snaps(vol->snaps, vol->n_snaps);
	free(vol->error);
	free(vol->backing);
	free(vol->base);
	free(vol->path);
	free(vol);
	return rc;
}

static void free_volume_job(struct exec_job *job)
{
	free_volume((struct volume *)((char *)job - offsetof(struct volume, free_job)));
}

void store_put(struct volume *vol)
{
	if (atomic_fetch_sub(&vol->refs, 1) != 1)
		return;
	/* Closing may flush or free a large unlinked file: never on the caller's thread. */
	vol->free_job = (struct exec_job){.run = free_volume_job};
	exec_submit(vol->st->exec, &vol->st->free_queue, &vol->free_job);
}

static void get_ref(struct volume *vol)
{
	atomic_fetch_add(&vol->refs, 1);
}

int store_get(struct store *st, const char *name, struct volume **out)
{
	struct volume *vol;

	pthread_mutex_lock(&st->lock);
	vol = find_volume(st, name, strlen(name));
	if (vol)
		get_ref(vol);
	pthread_mutex_unlock(&st->lock);
	if (!vol)
		return -ENOENT;
	*out = vol;
	return 0;
}

int store_get_all(struct store *st, struct volume ***out, size_t *n)
{
	struct volume **all;
	size_t count = 0, i = 0;

	pthread_mutex_lock(&st->lock);
	for (struct volume *v = st->volumes; v; v = v->next)
		count++;
	all = malloc((count ? count : 1) * sizeof(*all));
	if (all)
		for (struct volume *v = st->volumes; v; v = v->next) {
			get_ref(v);
			all[i++] = v;
		}
	pthread_mutex_unlock(&st->lock);
	if (!all)
		return -ENOMEM;
	*out = all;
	*n = count;
	return 0;
}

const char *volume_name(const struct volume *vol)
{
	return vol->name;
}

const char *store_state(struct volume *vol)
{
	const char *state;

	pthread_mutex_lock(&vol->st->lock);
	state = vol->error                                    ? "error"
	        : vol->open && atomic_load(&vol->main.fenced) ? "fenced"
	                                                      : "ok";
	pthread_mutex_unlock(&vol->st->lock);
	return state;
}

struct volume_stats *volume_stats(struct volume *vol)
{
	return &vol->stats;
}

void volume_base(struct volume *vol, char *out, size_t len)
{
	pthread_mutex_lock(&vol->st->lock);
	snprintf(out, len, "%s", vol->base ? vol->base : "");
	pthread_mutex_unlock(&vol->st->lock);
}

/* The real path of IMG's backing file into *backing, and into *base if it is one of DIR/bases. */
static int find_backing(const struct store *st, struct qcow_image *img, char **backing, char **base)
{
	char bases[PATH_MAX], real[PATH_MAX], *slash;
	struct qcow_info *info = malloc(sizeof(*info));

	if (!info)
		return -ENOMEM;
	qcow_get_info(img, info);
	if (info->backing_path[0] && !realpath(info->backing_path, real))
		snprintf(real, sizeof(real), "%s", info->backing_path);
	else if (!info->backing_path[0])
		real[0] = '\0';
	free(info);
	slash = strrchr(real, '/');
	*backing = strdup(real);
	*base = strdup(slash && realpath(st->bases_dir, bases) &&
	                       (size_t)(slash - real) == strlen(bases) &&
	                       strncmp(real, bases, strlen(bases)) == 0
	                   ? real
	                   : "");
	if (!*backing || !*base) {
		free(*backing);
		free(*base);
		return -ENOMEM;
	}
	return 0;
}

/* Records (or with ERR NULL, clears) why VOL's last open failed; main.lock held. */
static void set_error(struct volume *vol, const char *err)
{
	char *copy = err ? strdup(err) : NULL, *old;

	pthread_mutex_lock(&vol->st->lock);
	old = vol->error;
	vol->error = err && !copy ? strdup("out of memory") : copy;
	pthread_mutex_unlock(&vol->st->lock);
	free(old);
}

/*
 * With main.lock held and VOL closed: opens its file and image (an L2
 * cache of CACHE_BYTES; repairing what the dirty bit says), reads its
 * snapshot list and backing file and publishes them.  0, or -errno with the reason in ERR and in
 * vol->error.
 */
static int open_locked(struct volume *vol, uint64_t cache_bytes, char *err, size_t errlen)
{
	struct store *st = vol->st;
	struct store_snapshot *snaps = NULL, *old_snaps;
	char *backing = NULL, *base = NULL;
	uint32_t n_snaps = 0, n_old;
	struct stat sb;
	int rc;

	/* A link could make any file a volume: volumes are regular files, not followed. */
	vol->fd = open(vol->path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
	if (vol->fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot open %s: %s", vol->path,
		         errno == ELOOP ? "a symbolic link; a volume must be a regular file"
		                        : strerror(errno));
		goto out_error;
	}
	if (fstat(vol->fd, &sb) < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot stat %s: %s", vol->path, strerror(errno));
		goto out_error;
	}
	if (!S_ISREG(sb.st_mode)) {
		rc = -EINVAL;
		snprintf(err, errlen, "%s is not a regular file", vol->path);
		goto out_error;
	}
	/*
	 * At start, a volume a killed daemon's ring still holds is waited for:
	 * its locks go with the ring, within milliseconds.
	 */
	for (int waited = 0; (rc = qcow_posix_lock(vol->fd, true)) == -EAGAIN && st->starting &&
	                     waited < STALE_WAIT_MS;
	     waited += STALE_RETRY_MS)
		usleep(STALE_RETRY_MS * 1000);
	if (rc < 0) {
		snprintf(err, errlen, "%s is in use by another process", vol->path);
		goto out_error;
	}
	rc = image_open(&vol->main, vol->path, vol->fd, NULL, cache_bytes, st->backing_dirs, err,
	                errlen);
	if (rc < 0)
		goto out_error;
	rc = read_snaps(vol->main.img, &snaps, &n_snaps);
	if (rc == 0)
		rc = find_backing(st, vol->main.img, &backing, &base);
	if (rc < 0) {
		image_close(&vol->main, vol->name);
		free_snaps(snaps, n_snaps);
		snprintf(err, errlen, "out of memory");
		goto out_error;
	}
	set_error(vol, NULL);
	pthread_mutex_lock(&st->lock);
	old_snaps = vol->snaps;
	n_old = vol->n_snaps;
	vol->snaps = snaps;
	vol->n_snaps = n_snaps;
	free(vol->backing);
	free(vol->base);
	vol->backing = backing;
	vol->base = base;
	vol->dev = sb.st_dev;
	vol->ino = sb.st_ino;
	vol->open = true;
	vol->idle_since = mono_sec();
	pthread_mutex_unlock(&st->lock);
	free_snaps(old_snaps, n_old);
	return 0;

out_error:
	if (vol->fd >= 0)
		close(vol->fd);
	vol->fd = -1;
	set_error(vol, err);
	return rc;
}

/*
 * A volume for NAME, opened (and repaired, if its dirty bit says so) to
 * read what the API shows of it, then closed again: it opens on first use.
 * When it cannot be opened, *out is still a volume, in error.
 */
static int open_volume(struct store *st, const char *name, struct volume **out, char *err,
                       size_t errlen)
{
	struct volume *vol = calloc(1, sizeof(*vol));
	int rc;

	if (!vol || asprintf(&vol->path, "%s/%s.qcow2", st->volumes_dir, name) < 0) {
		free(vol);
		return -ENOMEM;
	}
	vol->st = st;
	vol->fd = -1;
	atomic_init(&vol->refs, 1);
	snprintf(vol->name, sizeof(vol->name), "%s", name);
	image_init(&vol->main);
	pthread_mutex_lock(&vol->main.lock);
	rc = open_locked(vol, STORE_SCAN_CACHE_BYTES, err, errlen);
	if (rc == 0) {
		log_info("volume %s: %llu bytes, %u snapshot(s)", name,
		         (unsigned long long)atomic_load(&vol->main.size), vol->n_snaps);
		close_locked(vol,
		             false); /* only read: a flush would cost a disk cache flush each */
	} else if (!vol->error) {
		pthread_mutex_unlock(&vol->main.lock);
		free_volume(vol);
		return -ENOMEM;
	} else {
		log_error("volume %s: not served: %s", name, err);
	}
	pthread_mutex_unlock(&vol->main.lock);
	*out = vol;
	return rc;
}

int store_use(struct volume *vol, struct image **im, char *err, size_t errlen)
{
	int rc = 0;

	pthread_mutex_lock(&vol->main.lock);
	if (!vol->open) {
		rc = open_locked(vol, vol->st->cache_bytes, err, errlen);
		if (rc < 0)
			log_error("volume %s: cannot open: %s", vol->name, err);
	}
	if (rc == 0) {
		pthread_mutex_lock(&vol->st->lock);
		vol->uses++;
		pthread_mutex_unlock(&vol->st->lock);
		*im = &vol->main;
	}
	pthread_mutex_unlock(&vol->main.lock);
	return rc;
}

void store_unuse(struct volume *vol)
{
	pthread_mutex_lock(&vol->st->lock);
	if (--vol->uses == 0)
		vol->idle_since = mono_sec();
	pthread_mutex_unlock(&vol->st->lock);
}

/* On the volume's queue: closes it if it is still idle. */
static void close_idle_job(struct exec_job *job)
{
	struct volume *vol = (struct volume *)((char *)job - offsetof(struct volume, close_job));
	struct store *st = vol->st;
	bool go;

	pthread_mutex_lock(&vol->main.lock);
	pthread_mutex_lock(&st->lock);
	go = vol->open && idle(vol);
	pthread_mutex_unlock(&st->lock);
	if (go && close_locked(vol, true) == 0)
		log_debug("volume %s: idle, closed", vol->name);
	pthread_mutex_unlock(&vol->main.lock);
	pthread_mutex_lock(&st->lock);
	vol->close_queued = false;
	pthread_mutex_unlock(&st->lock);
	store_put(vol);
}

void store_tick(struct store *st)
{
	time_t now = mono_sec();

	pthread_mutex_lock(&st->lock);
	for (struct volume *v = st->volumes; v; v = v->next)
		if (v->open && !v->close_queued && idle(v) &&
		    (now - v->idle_since >= VOLUME_IDLE_CLOSE_SEC ||
		     atomic_load(&v->main.fenced))) {
			v->close_queued = true;
			get_ref(v);
			v->close_job = (struct exec_job){.run = close_idle_job};
			exec_submit(st->exec, &v->main.queue, &v->close_job);
		}
	pthread_mutex_unlock(&st->lock);
}

int store_adopt(struct store *st, const char *name, char *err, size_t errlen)
{
	struct volume *vol, *old;
	int rc = open_volume(st, name, &vol, err, errlen);

	if (rc == -ENOMEM || rc == -ENAMETOOLONG) {
		snprintf(err, errlen, "volume %s: %s", name, strerror(-rc));
		return rc;
	}
	pthread_mutex_lock(&st->lock);
	old = find_volume(st, name, strlen(name));
	if (old && !old->error) {
		pthread_mutex_unlock(&st->lock);
		store_put(vol);
		snprintf(err, errlen, "volume %s is listed already", name);
		return -EEXIST;
	}
	if (old) /* an earlier failure to open it, retried */
		unlink_volume(st, old);
	link_volume(st, vol);
	pthread_mutex_unlock(&st->lock);
	if (old)
		store_put(old);
	return rc;
}

/* True when something uses VOL: an attachment, or a view a client or a reader holds. */
static bool in_use(const struct volume *vol, char *who, size_t wholen)
{
	if (vol->attachments) {
		snprintf(who, wholen, "attached by %s", vol->attachments->holder);
		return true;
	}
	for (const struct view *v = vol->views; v; v = v->next)
		if (v->users) {
			snprintf(who, wholen, "snapshot %s is being opened or read", v->name);
			return true;
		}
	return false;
}

int store_remove(struct store *st, struct volume *vol, char *err, size_t errlen)
{
	char who[STORE_NAME_MAX + 64];

	pthread_mutex_lock(&st->lock);
	if (in_use(vol, who, sizeof(who))) {
		pthread_mutex_unlock(&st->lock);
		snprintf(err, errlen, "volume %s is in use (%s); detach it first", vol->name, who);
		return -EBUSY;
	}
	unlink_volume(st, vol);
	atomic_store(&vol->gone, true);
	pthread_mutex_unlock(&st->lock);
	return 0;
}

void store_restore_link(struct store *st, struct volume *vol)
{
	pthread_mutex_lock(&st->lock);
	atomic_store(&vol->gone, false);
	link_volume(st, vol);
	pthread_mutex_unlock(&st->lock);
}

void store_removed(struct volume *vol)
{
	atomic_store(&vol->file_gone, true);
	store_put(vol); /* the registry's reference */
}

/* Whether VOL's last open failed. */
static bool in_error(struct volume *vol)
{
	bool e;

	pthread_mutex_lock(&vol->st->lock);
	e = vol->error != NULL;
	pthread_mutex_unlock(&vol->st->lock);
	return e;
}

/* The file that VOL names is no longer the one it opened last. */
static bool file_replaced(struct volume *vol)
{
	struct stat sb;
	bool same;

	if (stat(vol->path, &sb) < 0)
		return true;
	pthread_mutex_lock(&vol->st->lock);
	same = sb.st_dev == vol->dev && sb.st_ino == vol->ino;
	pthread_mutex_unlock(&vol->st->lock);
	return !same;
}

/*
 * Takes VOL off the list unless something else did first; true if this
 * call did (its caller then owns the registry's reference).
 */
static bool unlist(struct store *st, struct volume *vol)
{
	bool listed;

	pthread_mutex_lock(&st->lock);
	listed = !atomic_load(&vol->gone);
	if (listed) {
		unlink_volume(st, vol);
		atomic_store(&vol->gone, true);
	}
	pthread_mutex_unlock(&st->lock);
	return listed;
}

/* Drops served volumes whose file was removed or replaced behind our back. */
static void drop_vanished(struct store *st)
{
	struct volume **all;
	size_t n;

	if (store_get_all(st, &all, &n) < 0)
		return;
	for (size_t i = 0; i < n; i++) {
		struct volume *vol = all[i];

		if (in_error(vol) || !file_replaced(vol)) {
			store_put(vol);
			continue;
		}
		if (unlist(st, vol)) {
			log_warn("volume %s: %s was removed or replaced; dropped, its connections "
			         "are cut",
			         vol->name, vol->path);
			atomic_store(&vol->file_gone, true);
			store_put(vol); /* the registry's reference */
		}
		store_put(vol);
	}
	free(all);
}

/* Drops volumes listed in error whose file is gone; the scan retries the others. */
static void drop_missing_errors(struct store *st)
{
	struct volume **all;
	size_t n;
	struct stat sb;

	if (store_get_all(st, &all, &n) < 0)
		return;
	for (size_t i = 0; i < n; i++) {
		struct volume *vol = all[i];

		if (in_error(vol) && stat(vol->path, &sb) < 0 && errno == ENOENT) {
			if (unlist(st, vol)) {
				log_info("volume %s: its file is gone; no longer listed",
				         vol->name);
				store_put(vol);
			}
		}
		store_put(vol);
	}
	free(all);
}

/*
 * Adopts every NAME.qcow2 of the volumes folder that is not served: new
 * files, and those that failed to open before.  Temporaries (".NAME.tmp")
 * are never touched here: a create in progress owns its own.
 */
static int scan(struct store *st)
{
	DIR *d = opendir(st->volumes_dir);
	struct dirent *de;
	char err[512];
	int added = 0;

	if (!d) {
		log_error("cannot read %s: %s", st->volumes_dir, strerror(errno));
		return -errno;
	}
	while ((de = readdir(d)) != NULL) {
		size_t len = strlen(de->d_name);
		struct volume *vol;
		bool served;

		if (len <= 6 || strcmp(de->d_name + len - 6, ".qcow2") != 0)
			continue;
		len -= 6;
		if (!blockd_name_valid(de->d_name, len)) {
			log_warn("ignoring %s/%s: not a valid volume name", st->volumes_dir,
			         de->d_name);
			continue;
		}
		pthread_mutex_lock(&st->lock);
		vol = find_volume(st, de->d_name, len);
		served = vol && !vol->error;
		pthread_mutex_unlock(&st->lock);
		if (served)
			continue;
		de->d_name[len] = '\0';
		if (store_adopt(st, de->d_name, err, sizeof(err)) == 0)
			added++;
	}
	closedir(d);
	return added;
}

int store_rescan(struct store *st)
{
	drop_vanished(st);
	drop_missing_errors(st);
	return scan(st);
}

/*
 * Removes ".*.tmp" files in DIR, left by a create, clone or base copy that
 * a crash interrupted.  Only at start, before anything can be creating.
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
	st->n_buckets = 256;
	st->buckets = calloc(st->n_buckets, sizeof(*st->buckets));
	if (!st->buckets) {
		free(st);
		return -ENOMEM;
	}
	pthread_mutex_init(&st->lock, NULL);
	st->cache_bytes = cfg->cache_bytes;
	st->exec = cfg->exec;
	exec_queue_init(&st->free_queue);
	if ((size_t)snprintf(st->data_dir, sizeof(st->data_dir), "%s", cfg->data_dir) >=
	        sizeof(st->data_dir) ||
	    (size_t)snprintf(st->volumes_dir, sizeof(st->volumes_dir), "%s/volumes",
	                     cfg->data_dir) >= sizeof(st->volumes_dir) ||
	    (size_t)snprintf(st->bases_dir, sizeof(st->bases_dir), "%s/bases", cfg->data_dir) >=
	        sizeof(st->bases_dir)) {
		rc = -ENAMETOOLONG;
		goto out_free;
	}
	st->backing_dirs[0] = st->bases_dir;
	st->backing_dirs[1] = st->volumes_dir;
	if (mkdir(st->bases_dir, 0700) < 0 && errno != EEXIST) {
		rc = -errno;
		log_error("cannot create %s: %s", st->bases_dir, strerror(errno));
		goto out_free;
	}
	if (mkdir(st->volumes_dir, 0700) < 0 && errno != EEXIST) {
		rc = -errno;
		log_error("cannot create %s: %s", st->volumes_dir, strerror(errno));
		goto out_free;
	}
	remove_temporaries(st->bases_dir);
	remove_temporaries(st->volumes_dir);
	st->starting = true;
	rc = scan(st);
	st->starting = false;
	if (rc < 0)
		goto out_free;
	*out = st;
	return 0;

out_free:
	pthread_mutex_destroy(&st->lock);
	free(st->buckets);
	free(st);
	return rc;
}

/* At shutdown: no loop, control or pool thread is left, so nothing else holds a reference. */
int store_close(struct store *st)
{
	int first = 0, rc;

	while (st->volumes) {
		struct volume *vol = st->volumes;

		st->volumes = vol->next;
		if (atomic_load(&vol->refs) != 1)
			log_error("volume %s: %u references left at shutdown", vol->name,
			          atomic_load(&vol->refs));
		rc = free_volume(vol);
		if (rc < 0 && first == 0)
			first = rc;
	}
	free(st->buckets);
	pthread_mutex_destroy(&st->lock);
	free(st);
	return first;
}

/* ---------------------------------------------------------- attachments */

int store_recover(struct volume *vol, char *err, size_t errlen)
{
	struct store *st = vol->st;
	bool attached = true, healthy;
	int rc = 0;

	pthread_mutex_lock(&st->lock);
	healthy = vol->open && !atomic_load(&vol->main.fenced);
	pthread_mutex_unlock(&st->lock);
	if (healthy)
		return 0; /* nothing to recover: its clients stay */
	/* Its clients go first: they were told of writes the reopened image may not have. */
	atomic_fetch_add(&vol->epoch, 1);
	for (int waited = 0; waited < RECOVER_WAIT_MS; waited += STALE_RETRY_MS) {
		pthread_mutex_lock(&st->lock);
		attached = vol->attachments != NULL;
		pthread_mutex_unlock(&st->lock);
		if (!attached)
			break;
		usleep(STALE_RETRY_MS * 1000);
	}
	if (attached) {
		snprintf(err, errlen, "volume %s: its clients did not let go within %d ms",
		         vol->name, RECOVER_WAIT_MS);
		return -EBUSY;
	}
	pthread_mutex_lock(&vol->main.lock);
	reopen_if_fenced(vol);
	if (!vol->open) {
		rc = open_locked(vol, st->cache_bytes, err, errlen);
		if (rc < 0)
			log_error("volume %s: cannot open: %s", vol->name, err);
		else
			log_info("volume %s: recovered", vol->name);
	}
	pthread_mutex_unlock(&vol->main.lock);
	return rc;
}

bool store_has_writer(struct volume *vol, char *who, size_t wholen)
{
	bool found = false;

	pthread_mutex_lock(&vol->st->lock);
	for (const struct attachment *a = vol->attachments; a && !found; a = a->next)
		if (a->access == STORE_READ_WRITE) {
			snprintf(who, wholen, "%s", a->holder);
			found = true;
		}
	pthread_mutex_unlock(&vol->st->lock);
	return found;
}

bool store_attached(struct volume *vol, char *who, size_t wholen)
{
	bool found;

	pthread_mutex_lock(&vol->st->lock);
	found = vol->attachments != NULL;
	if (found)
		snprintf(who, wholen, "%s", vol->attachments->holder);
	pthread_mutex_unlock(&vol->st->lock);
	return found;
}

static const char *writer_of(const struct volume *vol)
{
	for (const struct attachment *a = vol->attachments; a; a = a->next)
		if (a->access == STORE_READ_WRITE)
			return a->holder;
	return NULL;
}

static struct view *find_view(struct volume *vol, const char *snap, size_t len)
{
	for (struct view *v = vol->views; v; v = v->next)
		if (strlen(v->name) == len && memcmp(v->name, snap, len) == 0)
			return v;
	return NULL;
}

/* A claim on snapshot SNAP of VOL (st->lock held): its view, made if needed; NULL: no memory. */
static struct view *claim_view(struct volume *vol, const char *snap, size_t len)
{
	struct view *v = find_view(vol, snap, len);

	if (!v) {
		v = calloc(1, sizeof(*v));
		if (!v)
			return NULL;
		memcpy(v->name, snap, len);
		image_init(&v->im);
		v->next = vol->views;
		vol->views = v;
	}
	v->users++;
	return v;
}

/* Lets go of a claim (st->lock held); a view nobody holds that never opened goes. */
static void unclaim_view(struct volume *vol, struct view *v)
{
	struct view **pp = &vol->views;

	if (--v->users > 0 || v->open)
		return;
	while (*pp != v)
		pp = &(*pp)->next;
	*pp = v->next;
	image_fini(&v->im);
	free(v);
}

/* On the volume's pool queue: opens the view the waiter asked for. */
static void open_view_job(struct exec_job *job)
{
	struct store_wait *w =
	    (struct store_wait *)((char *)job - offsetof(struct store_wait, job));
	struct volume *vol = w->vol;
	struct store *st = vol->st;
	struct view *v;
	char err[512];
	bool open;
	int rc = 0;

	pthread_mutex_lock(&st->lock);
	v = find_view(vol, w->snapshot, strlen(w->snapshot)); /* claimed: it is there */
	open = v->open;
	pthread_mutex_unlock(&st->lock);
	if (!open) {
		/*
		 * Straight into the view: nobody looks at v->im before v->open, and
		 * only this queue opens it.  The snapshot table is read under the
		 * volume's lock, so no snapshot change happens midway.  The claim
		 * keeps the volume open (it was when the lookup claimed it).
		 */
		pthread_mutex_lock(&vol->main.lock);
		rc = image_open(&v->im, vol->path, vol->fd, w->snapshot, st->cache_bytes,
		                st->backing_dirs, err, sizeof(err));
		pthread_mutex_unlock(&vol->main.lock);
		if (rc < 0)
			log_error("volume %s: cannot open snapshot %s: %s", vol->name, w->snapshot,
			          err);
	}
	pthread_mutex_lock(&st->lock);
	if (!open && rc == 0)
		v->open = true;
	unclaim_view(vol, v);
	pthread_mutex_unlock(&st->lock);
	w->rc = rc == -ENOENT ? -ENOENT : rc < 0 ? -EIO : 0;
}

/* On the volume's pool queue: opens the volume a lookup waits for. */
static void open_volume_job(struct exec_job *job)
{
	struct store_wait *w =
	    (struct store_wait *)((char *)job - offsetof(struct store_wait, job));
	struct volume *vol = w->vol;
	char err[512];
	int rc = 0;

	pthread_mutex_lock(&vol->main.lock);
	reopen_if_fenced(vol);
	if (!vol->open) {
		rc = open_locked(vol, vol->st->cache_bytes, err, sizeof(err));
		if (rc < 0)
			log_error("volume %s: cannot open: %s", vol->name, err);
	}
	pthread_mutex_unlock(&vol->main.lock);
	w->rc = rc < 0 ? -EIO : 0;
}

static void open_view_done(struct exec_job *job)
{
	struct store_wait *w =
	    (struct store_wait *)((char *)job - offsetof(struct store_wait, job));

	w->ready(w);
}

int store_wait_end(struct store_wait *w)
{
	int rc = w->rc;

	store_put(w->vol);
	w->vol = NULL;
	return rc;
}

/*
 * Finds TARGET with st->lock held: its volume, and its view (NULL for the
 * volume itself); fills *out.  A volume that is not open, or a snapshot
 * whose view is not, gives -EAGAIN with *viewp NULL; a volume another
 * holder writes -EPERM, with that holder in WRITER.
 */
static int find_target(struct store *st, const struct store_target *t, const char *holder,
                       struct store_target_info *out, struct volume **volp, struct view **viewp,
                       char writer_out[STORE_HOLDER_MAX])
{
	struct volume *vol;
	const char *writer;
	struct view *v = NULL;
	struct image *im;

	if (!blockd_name_valid(t->volume, t->volume_len))
		return -ENOENT;
	vol = find_volume(st, t->volume, t->volume_len);
	if (!vol)
		return -ENOENT;
	*volp = vol;
	*viewp = NULL;
	if (!vol->open)
		return -EAGAIN;
	if (atomic_load(&vol->main.fenced))
		return idle(vol) ? -EAGAIN : -EIO; /* reopened once its clients are gone */
	switch (t->access) {
	case STORE_SNAPSHOT:
		if (!has_snapshot(vol, t->snapshot, t->snapshot_len))
			return -ENOENT;
		v = find_view(vol, t->snapshot, t->snapshot_len);
		if (!v || !v->open)
			return -EAGAIN;
		im = &v->im;
		break;
	case STORE_READ_WRITE:
		writer = writer_of(vol);
		if (writer && strcmp(writer, holder) != 0) {
			snprintf(writer_out, STORE_HOLDER_MAX, "%s", writer);
			return -EPERM;
		}
		/* fall through */
	default:
		im = &vol->main;
		break;
	}
	*viewp = v;
	*out = (struct store_target_info){
	    .size = atomic_load(&im->size),
	    .read_only = t->access != STORE_READ_WRITE,
	};
	return 0;
}

/* Logs (never under st->lock) that HOLDER was refused T, written by WRITER. */
static void log_refused(const struct store_target *t, const char *holder, const char *writer)
{
	log_info("volume %.*s: refusing %s, attached read-write by %s", (int)t->volume_len,
	         t->volume, holder, writer);
}

/*
 * TARGET of VOL is not open (st->lock held): opens the volume, or the
 * snapshot's view, on the volume's queue; W hears when.  -EINPROGRESS.
 */
static int start_open(struct store *st, struct volume *vol, const struct store_target *t,
                      struct store_wait *w)
{
	void (*run)(struct exec_job *) = open_volume_job;

	/* The claim keeps the snapshot (and the volume open) meanwhile. */
	if (vol->open && !atomic_load(&vol->main.fenced)) {
		if (!claim_view(vol, t->snapshot, t->snapshot_len))
			return -ENOMEM;
		run = open_view_job;
	}
	get_ref(vol);
	w->vol = vol;
	memcpy(w->snapshot, t->snapshot, t->snapshot_len);
	w->snapshot[t->snapshot_len] = '\0';
	w->rc = 0;
	w->job = (struct exec_job){.run = run, .done = open_view_done};
	exec_submit(st->exec, &vol->main.queue, &w->job);
	return -EINPROGRESS;
}

int store_lookup(struct store *st, const struct store_target *t, const char *holder,
                 struct store_target_info *out, struct store_wait *w)
{
	char writer[STORE_HOLDER_MAX];
	struct volume *vol;
	struct view *v;
	int rc;

	pthread_mutex_lock(&st->lock);
	rc = find_target(st, t, holder, out, &vol, &v, writer);
	if (rc == -EAGAIN)
		rc = start_open(st, vol, t, w);
	pthread_mutex_unlock(&st->lock);
	if (rc == -EPERM)
		log_refused(t, holder, writer);
	return rc;
}

int store_attach(struct store *st, const struct store_target *t, const char *holder,
                 struct store_target_info *out, struct attachment **att, struct store_wait *w)
{
	char writer[STORE_HOLDER_MAX];
	struct attachment *a;
	struct volume *vol;
	struct view *v;
	bool made = false;
	int rc;

	pthread_mutex_lock(&st->lock);
	rc = find_target(st, t, holder, out, &vol, &v, writer);
	if (rc == -EAGAIN)
		rc = vol->open && !atomic_load(&vol->main.fenced) ? -ENOENT
		                                                  : start_open(st, vol, t, w);
	if (rc < 0)
		goto out;
	for (a = vol->attachments; a; a = a->next)
		if (a->view == v && a->access == t->access &&
		    a->epoch == atomic_load(&vol->epoch) && strcmp(a->holder, holder) == 0)
			break;
	if (!a) {
		a = calloc(1, sizeof(*a));
		if (!a) {
			rc = -ENOMEM;
			goto out;
		}
		a->vol = vol;
		a->view = v;
		a->im = v ? &v->im : &vol->main;
		a->access = t->access;
		a->epoch = atomic_load(&vol->epoch);
		a->since = time(NULL);
		snprintf(a->holder, sizeof(a->holder), "%s", holder);
		a->next = vol->attachments;
		vol->attachments = a;
		if (v)
			v->users++;
		get_ref(vol);
		made = true;
	}
	a->connections++;
	*att = a;
out:
	pthread_mutex_unlock(&st->lock);
	if (rc == -EPERM)
		log_refused(t, holder, writer);
	if (made)
		log_info("volume %.*s: attached %s by %s", (int)t->volume_len, t->volume,
		         t->access == STORE_READ_WRITE ? "read-write" : "read-only", holder);
	return rc;
}

void store_detach(struct attachment *att)
{
	struct volume *vol = att->vol;
	struct store *st = vol->st;
	bool last;

	pthread_mutex_lock(&st->lock);
	last = --att->connections == 0;
	if (last) {
		struct attachment **pp = &vol->attachments;

		while (*pp != att)
			pp = &(*pp)->next;
		*pp = att->next;
		if (att->view)
			unclaim_view(vol, att->view);
		if (idle(vol))
			vol->idle_since = mono_sec();
	}
	pthread_mutex_unlock(&st->lock);
	if (!last)
		return;
	log_info("volume %s: detached by %s", vol->name, att->holder);
	free(att);
	store_put(vol);
}

struct image *attachment_image(const struct attachment *att)
{
	return att->im;
}

struct volume_stats *attachment_stats(const struct attachment *att)
{
	return &att->vol->stats;
}

const char *attachment_volume_name(const struct attachment *att)
{
	return att->vol->name;
}

const char *attachment_cut(const struct attachment *att)
{
	if (atomic_load_explicit(&att->vol->gone, memory_order_relaxed))
		return "the volume was removed";
	if (atomic_load_explicit(&att->vol->epoch, memory_order_relaxed) != att->epoch)
		return "the volume is being recovered";
	return NULL;
}

int store_list_entry(struct store *st, size_t index, char vol[STORE_NAME_MAX + 1],
                     char snap[STORE_NAME_MAX + 1])
{
	int found = 0;

	pthread_mutex_lock(&st->lock);
	for (struct volume *v = st->volumes; v && !found; v = v->next) {
		if (v->error)
			continue;
		if (index == 0) {
			snprintf(vol, STORE_NAME_MAX + 1, "%s", v->name);
			snap[0] = '\0';
			found = 1;
			break;
		}
		index--;
		for (uint32_t i = 0; i < v->n_snaps && !found; i++) {
			const char *name = v->snaps[i].name;

			if (!blockd_name_valid(name, strlen(name)))
				continue;
			if (index == 0) {
				snprintf(vol, STORE_NAME_MAX + 1, "%s", v->name);
				snprintf(snap, STORE_NAME_MAX + 1, "%s", name);
				found = 1;
			} else {
				index--;
			}
		}
	}
	pthread_mutex_unlock(&st->lock);
	return found;
}

/* --------------------------------------------------------- snapshot use */

int store_release_view(struct volume *vol, const char *snap, char *who, size_t wholen)
{
	struct store *st = vol->st;
	struct view *v, **pp;

	pthread_mutex_lock(&st->lock);
	v = find_view(vol, snap, strlen(snap));
	if (v && v->users) {
		const struct attachment *a = vol->attachments;

		while (a && a->view != v)
			a = a->next;
		if (a)
			snprintf(who, wholen, "attached by %s", a->holder);
		else
			snprintf(who, wholen, "being opened or read");
		pthread_mutex_unlock(&st->lock);
		return -EBUSY;
	}
	if (v) {
		for (pp = &vol->views; *pp != v; pp = &(*pp)->next)
			;
		*pp = v->next;
	}
	pthread_mutex_unlock(&st->lock);
	if (v) {
		if (v->open)
			image_close(&v->im, vol->name);
		image_fini(&v->im);
		free(v);
	}
	return 0;
}

int store_snapshot_open(struct volume *vol, const char *snap, uint64_t cache_bytes,
                        struct image *out, char *err, size_t errlen)
{
	struct store *st = vol->st;
	struct view *v = NULL;
	struct image *im;
	int rc = store_use(vol, &im, err, errlen);

	if (rc < 0)
		return rc;
	pthread_mutex_lock(&st->lock);
	if (has_snapshot(vol, snap, strlen(snap)))
		v = claim_view(vol, snap, strlen(snap));
	pthread_mutex_unlock(&st->lock);
	if (!v) {
		store_unuse(vol);
		snprintf(err, errlen, "volume %s has no snapshot %s", vol->name, snap);
		return -ENOENT;
	}
	image_init(out);
	pthread_mutex_lock(&im->lock);
	rc = image_open(out, vol->path, vol->fd, snap, cache_bytes, st->backing_dirs, err, errlen);
	pthread_mutex_unlock(&im->lock);
	if (rc < 0) {
		image_fini(out);
		pthread_mutex_lock(&st->lock);
		unclaim_view(vol, v);
		pthread_mutex_unlock(&st->lock);
		store_unuse(vol);
	}
	return rc;
}

void store_snapshot_close(struct volume *vol, const char *snap, struct image *im)
{
	struct store *st = vol->st;
	struct view *v;

	image_close(im, vol->name);
	image_fini(im);
	pthread_mutex_lock(&st->lock);
	v = find_view(vol, snap, strlen(snap));
	unclaim_view(vol, v);
	pthread_mutex_unlock(&st->lock);
	store_unuse(vol);
}

bool store_base_used(struct store *st, const char *base)
{
	bool used = false;

	pthread_mutex_lock(&st->lock);
	for (struct volume *v = st->volumes; v && !used; v = v->next)
		used = v->base && strcmp(v->base, base) == 0;
	pthread_mutex_unlock(&st->lock);
	return used;
}

/* ------------------------------------------------------------ API views */

static const char *target_suffix(const struct attachment *a, char *buf, size_t len)
{
	if (a->view)
		snprintf(buf, len, "%s@%s", a->vol->name, a->view->name);
	else
		snprintf(buf, len, "%s%s", a->vol->name,
		         a->access == STORE_READ_LIVE ? BLOCKD_RO_SUFFIX : "");
	return buf;
}

int store_info(struct volume *vol, bool with_snapshots, struct store_info *out)
{
	struct store *st = vol->st;
	struct stat sb;
	size_t n = 0;
	int rc = 0;

	memset(out, 0, sizeof(*out));
	snprintf(out->name, sizeof(out->name), "%s", vol->name);
	if (stat(vol->path, &sb) == 0) {
		out->allocated = (uint64_t)sb.st_blocks * 512;
		out->modified = sb.st_mtime;
	}
	pthread_mutex_lock(&st->lock);
	if (vol->error) {
		snprintf(out->error_text, sizeof(out->error_text), "%s", vol->error);
		out->error = out->error_text;
	} else if (vol->open && atomic_load(&vol->main.fenced)) {
		snprintf(out->error_text, sizeof(out->error_text),
		         "a write-back failed, so every flush fails until it is reopened (once its "
		         "clients have disconnected, or POST .../recover): %s",
		         vol->main.fence_reason);
		out->fenced = true;
	}
	if (!vol->error) {
		out->size = atomic_load(&vol->main.size);
		snprintf(out->backing, sizeof(out->backing), "%s",
		         vol->backing ? vol->backing : "");
	}
	for (struct attachment *a = vol->attachments; a; a = a->next)
		n++;
	out->holders = calloc(n ? n : 1, sizeof(*out->holders));
	out->n_snapshots = vol->n_snaps;
	if (with_snapshots)
		out->snapshots = calloc(vol->n_snaps ? vol->n_snaps : 1, sizeof(*out->snapshots));
	if (!out->holders || (with_snapshots && !out->snapshots)) {
		rc = -ENOMEM;
		goto out;
	}
	for (struct attachment *a = vol->attachments; a; a = a->next) {
		struct store_holder *h = &out->holders[out->n_holders++];

		snprintf(h->holder, sizeof(h->holder), "%s", a->holder);
		target_suffix(a, h->target, sizeof(h->target));
		h->read_only = a->access != STORE_READ_WRITE;
		h->connections = a->connections;
		h->since = a->since;
	}
	for (uint32_t i = 0; with_snapshots && i < vol->n_snaps; i++) {
		struct store_snapshot *s = &out->snapshots[i];

		*s = vol->snaps[i];
		s->name = strdup(vol->snaps[i].name);
		s->id = strdup(vol->snaps[i].id);
		if (!s->name || !s->id) {
			out->n_snapshots = i + 1;
			rc = -ENOMEM;
			goto out;
		}
	}
out:
	pthread_mutex_unlock(&st->lock);
	if (rc < 0)
		store_info_free(out);
	return rc;
}

void store_info_free(struct store_info *info)
{
	if (info->snapshots)
		free_snaps(info->snapshots, (uint32_t)info->n_snapshots);
	free(info->holders);
	info->snapshots = NULL;
	info->holders = NULL;
}
