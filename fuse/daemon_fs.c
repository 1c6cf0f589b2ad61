/* SPDX-License-Identifier: MIT */
/*
 * daemon_fs.c - blockfs on a running blockd:
 *
 *   MOUNTPOINT/NAME/disk                    the volume, raw (writable with --rw)
 *   MOUNTPOINT/NAME/info.json               what the control API says about it
 *   MOUNTPOINT/NAME/snapshots/SNAP/disk     snapshot SNAP, raw, read-only
 *   MOUNTPOINT/NAME/snapshots/SNAP/info.json
 *
 * Names, sizes, allocated bytes and times come from the control API
 * (catalog.c, at most CATALOG_TTL_MS old, so new volumes and snapshots
 * appear without remounting); data goes through NBD (nbdconn.c).  An open
 * disk holds connections to one export until its last close: NAME:ro for
 * reading (it claims nothing, so VMs keep attaching and writing), NAME
 * when opened for writing under --rw (blockd then refuses other hosts),
 * NAME@SNAP for a snapshot.  A volume another host writes stays read-only
 * here: mode 0444, EROFS on opening it for writing.
 *
 * Only names blockd could serve are looked up (the daemon's name rule), so
 * no path from a user reaches the API unchecked.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "blockfs.h"
#include "catalog.h"
#include "names.h"
#include "nbdconn.h"

static struct {
	const char *nbd; /* blockd's NBD socket */
	bool rw;
	struct timespec mounted;
} dfs;

enum kind { K_NONE, K_ROOT, K_VOL, K_DISK, K_INFO, K_SNAPDIR, K_SNAP, K_SNAPDISK, K_SNAPINFO };

struct node {
	enum kind kind;
	char vol[BLOCKD_NAME_MAX + 1];
	char snap[BLOCKD_NAME_MAX + 1];
};

/* An open file: a disk's export, or info.json's text as it was at open. */
struct handle {
	struct nbd_export *x;
	uint64_t size;
	bool writable;
	char *text;
	char vol[BLOCKD_NAME_MAX + 1]; /* a volume's disk: the volume; "" for a snapshot's */
	uint64_t err_seen;             /* the volume's write errors up to here are reported */
};

static enum kind parse(const char *path, struct node *n)
{
	const char *part[5];
	size_t len[5];
	int k = 0;

	memset(n, 0, sizeof(*n));
	if (strcmp(path, "/") == 0)
		return n->kind = K_ROOT;
	for (const char *p = path; *p == '/';) {
		const char *end = strchrnul(p + 1, '/');

		if (k == 5)
			return n->kind = K_NONE;
		part[k] = p + 1;
		len[k++] = (size_t)(end - p - 1);
		p = end;
	}
	if (k == 0 || !blockd_name_valid(part[0], len[0]))
		return n->kind = K_NONE;
	memcpy(n->vol, part[0], len[0]);
#define IS(i, s) (len[i] == strlen(s) && memcmp(part[i], s, len[i]) == 0)
	if (k == 1)
		return n->kind = K_VOL;
	if (k == 2)
		return n->kind = IS(1, "disk")        ? K_DISK
		                 : IS(1, "info.json") ? K_INFO
		                 : IS(1, "snapshots") ? K_SNAPDIR
		                                      : K_NONE;
	if (!IS(1, "snapshots") || !blockd_name_valid(part[2], len[2]))
		return n->kind = K_NONE;
	memcpy(n->snap, part[2], len[2]);
	if (k == 3)
		return n->kind = K_SNAP;
	if (k == 4)
		return n->kind = IS(3, "disk")        ? K_SNAPDISK
		                 : IS(3, "info.json") ? K_SNAPINFO
		                                      : K_NONE;
#undef IS
	return n->kind = K_NONE;
}

/* The entry of volume NAME in the listing; 0 and *out (json_decref() it) or -errno. */
static int volume_entry(const char *name, bool fresh, json_t **out)
{
	return catalog_find("/v1/volumes", "volumes", name, fresh, out);
}

static int volume_details(const char *name, json_t **out)
{
	char path[CATALOG_PATH_MAX];

	snprintf(path, sizeof(path), "/v1/volumes/%s", name);
	return catalog_get(path, false, out);
}

static int snapshot_details(const char *vol, const char *snap, json_t **out)
{
	char path[CATALOG_PATH_MAX];

	snprintf(path, sizeof(path), "/v1/volumes/%s/snapshots/%s", vol, snap);
	return catalog_get(path, false, out);
}

static uint64_t num(const json_t *o, const char *key)
{
	json_int_t v = json_integer_value(json_object_get(o, key));

	return v > 0 ? (uint64_t)v : 0;
}

/* An API time ("2026-11-25T21:20:09Z") as a timespec; the mount time if there is none. */
static struct timespec when(const json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));
	struct tm tm = {0};
	char z = 0;

	if (s &&
	    sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%c", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
	           &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &z) == 7 &&
	    z == 'Z') {
		tm.tm_year -= 1900;
		tm.tm_mon -= 1;
		return (struct timespec){timegm(&tm), 0};
	}
	return dfs.mounted;
}

/*
 * Whether this mount may write volume ENTRY: --rw, and no other host holds
 * it read-write (its read-write attachment, if any, is ours).
 */
static bool writable_here(const json_t *entry, const char *name)
{
	const json_t *a;
	size_t i;

	if (!dfs.rw)
		return false;
	if (nbd_export_held(name))
		return true;
	json_array_foreach(json_object_get(entry, "attachments"), i, a)
	{
		if (!json_is_true(json_object_get(a, "read_only")))
			return false;
	}
	return true;
}

/* info.json of a volume or a snapshot; NULL and *err when it cannot be had. */
static char *info_text(const struct node *n, int *err)
{
	json_t *o;
	char *text;

	*err =
	    n->kind == K_INFO ? volume_details(n->vol, &o) : snapshot_details(n->vol, n->snap, &o);
	if (*err < 0)
		return NULL;
	if (n->kind == K_SNAPINFO)
		json_object_set_new(o, "volume", json_string(n->vol));
	text = blockfs_json_text(o);
	if (!text)
		*err = -ENOMEM;
	return text;
}

static void fill_dir(struct stat *st, struct timespec t)
{
	st->st_mode = S_IFDIR | 0555;
	st->st_nlink = 2;
	st->st_mtim = st->st_ctim = st->st_atim = t;
}

static void fill_file(struct stat *st, mode_t mode, uint64_t size, uint64_t allocated,
                      struct timespec t)
{
	st->st_mode = S_IFREG | mode;
	st->st_nlink = 1;
	st->st_size = (off_t)size;
	st->st_blocks = (blkcnt_t)((allocated + 511) / 512);
	st->st_mtim = st->st_ctim = st->st_atim = t;
}

static int fs_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	struct node n;
	json_t *o = NULL;
	char *text;
	int rc = 0;

	(void)fi;
	memset(st, 0, sizeof(*st));
	st->st_uid = getuid();
	st->st_gid = getgid();
	switch (parse(path, &n)) {
	case K_ROOT:
		fill_dir(st, dfs.mounted);
		return 0;
	case K_VOL:
	case K_SNAPDIR:
	case K_DISK:
		rc = volume_entry(n.vol, false, &o);
		if (rc < 0)
			return rc;
		if (n.kind == K_DISK)
			fill_file(st, writable_here(o, n.vol) ? 0644 : 0444, num(o, "size"),
			          num(o, "allocated"), when(o, "modified"));
		else
			fill_dir(st, when(o, "modified"));
		break;
	case K_SNAP:
	case K_SNAPDISK:
		rc = snapshot_details(n.vol, n.snap, &o);
		if (rc < 0)
			return rc;
		if (n.kind == K_SNAPDISK)
			fill_file(st, 0444, num(o, "size"), num(o, "allocated"),
			          when(o, "created"));
		else
			fill_dir(st, when(o, "created"));
		break;
	case K_INFO:
	case K_SNAPINFO:
		text = info_text(&n, &rc);
		if (!text)
			return rc;
		fill_file(st, 0444, strlen(text), strlen(text), dfs.mounted);
		free(text);
		return 0;
	case K_NONE:
		return -ENOENT;
	}
	json_decref(o);
	return 0;
}

static int fs_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
                      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
	const char *key = "volumes";
	json_t *o, *e;
	struct node n;
	size_t i;
	int rc;

	(void)off;
	(void)fi;
	(void)flags;
	switch (parse(path, &n)) {
	case K_ROOT:
		rc = catalog_get("/v1/volumes", false, &o);
		break;
	case K_SNAPDIR:
		rc = volume_details(n.vol, &o);
		key = "snapshots";
		break;
	case K_VOL:
	case K_SNAP:
		rc = n.kind == K_VOL ? volume_entry(n.vol, false, &o)
		                     : snapshot_details(n.vol, n.snap, &o);
		if (rc < 0)
			return rc;
		json_decref(o);
		fill(buf, ".", NULL, 0, 0);
		fill(buf, "..", NULL, 0, 0);
		fill(buf, "disk", NULL, 0, 0);
		fill(buf, "info.json", NULL, 0, 0);
		if (n.kind == K_VOL)
			fill(buf, "snapshots", NULL, 0, 0);
		return 0;
	case K_NONE:
		return -ENOENT;
	default:
		return -ENOTDIR;
	}
	if (rc < 0)
		return rc;
	fill(buf, ".", NULL, 0, 0);
	fill(buf, "..", NULL, 0, 0);
	json_array_foreach(json_object_get(o, key), i, e)
	{
		const char *name = json_string_value(json_object_get(e, "name"));

		/* A snapshot blockd cannot serve (its name breaks the rule) is not shown. */
		if (name && blockd_name_valid(name, strlen(name)))
			fill(buf, name, NULL, 0, 0);
	}
	json_decref(o);
	return 0;
}

/* Opens the export of a disk for handle h. */
static int open_disk(const struct node *n, bool writing, struct handle *h)
{
	struct blockd_export_name export = {0};
	char name[BLOCKD_EXPORT_NAME_MAX + 1];
	uint64_t size = 0, size_now;
	json_t *entry;
	int rc;

	memcpy(export.volume, n->vol, sizeof(export.volume));
	if (n->kind == K_SNAPDISK) {
		if (writing)
			return -EROFS;
		memcpy(export.snapshot, n->snap, sizeof(export.snapshot));
	} else {
		if (writing && !dfs.rw)
			return -EROFS;
		/* Writers ask who writes it as of now; its size tells a resize since. */
		rc = volume_entry(n->vol, writing, &entry);
		if (rc < 0)
			return rc;
		size = num(entry, "size");
		rc = !writing || writable_here(entry, n->vol);
		json_decref(entry);
		if (!rc)
			return -EROFS;
		export.ro_live = !writing;
		snprintf(h->vol, sizeof(h->vol), "%s", n->vol);
		h->err_seen = nbd_export_errseq(n->vol);
	}
	rc = blockd_export_name_format(&export, name, sizeof(name));
	if (rc < 0)
		return rc;
	rc = nbd_export_get(dfs.nbd, name, size, &h->x, &size_now);
	if (rc == -EPERM)
		return -EROFS; /* another host took it meanwhile */
	if (rc < 0)
		return rc;
	h->size = size_now;
	h->writable = writing;
	return 0;
}

static int fs_open(const char *path, struct fuse_file_info *fi)
{
	bool writing = (fi->flags & O_ACCMODE) != O_RDONLY;
	struct handle *h;
	struct node n;
	int rc = 0;

	switch (parse(path, &n)) {
	case K_NONE:
		return -ENOENT;
	case K_DISK:
	case K_SNAPDISK:
	case K_INFO:
	case K_SNAPINFO:
		break;
	default:
		return -EISDIR;
	}
	if (fi->flags & O_TRUNC)
		return writing && n.kind == K_DISK ? -EINVAL : -EROFS; /* a disk has a fixed size */
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	if (n.kind == K_INFO || n.kind == K_SNAPINFO) {
		/* Read as opened, whatever size a later stat says: no page cache. */
		if (writing)
			rc = -EROFS;
		else if ((h->text = info_text(&n, &rc)) != NULL)
			fi->direct_io = 1;
	} else {
		blockfs_readahead_once();
		rc = open_disk(&n, writing, h);
		/* A snapshot never changes; a volume may have, so its cached pages go. */
		fi->keep_cache = n.kind == K_SNAPDISK;
	}
	if (rc < 0) {
		free(h);
		return rc;
	}
	fi->fh = (uint64_t)(uintptr_t)h;
	return 0;
}

static struct handle *handle_of(const struct fuse_file_info *fi)
{
	return (struct handle *)(uintptr_t)fi->fh;
}

static int fs_read(const char *path, char *buf, size_t len, off_t off, struct fuse_file_info *fi)
{
	struct handle *h = handle_of(fi);
	int rc;

	(void)path;
	if (off < 0)
		return -EINVAL;
	if (h->text)
		return blockfs_read_text(h->text, buf, len, off);
	if ((uint64_t)off >= h->size)
		return 0;
	if (len > h->size - (uint64_t)off)
		len = (size_t)(h->size - (uint64_t)off);
	rc = nbd_export_read(h->x, buf, len, (uint64_t)off);
	return rc < 0 ? rc : (int)len;
}

static int fs_write(const char *path, const char *buf, size_t len, off_t off,
                    struct fuse_file_info *fi)
{
	struct handle *h = handle_of(fi);
	int rc;

	(void)path;
	if (!h->writable)
		return -EROFS;
	if (off < 0 || (uint64_t)off > h->size)
		return -EINVAL;
	if ((uint64_t)off == h->size && len > 0)
		return -ENOSPC;
	if (len > h->size - (uint64_t)off)
		len = (size_t)(h->size - (uint64_t)off); /* short at the end, like a block device */
	rc = nbd_export_write(h->x, buf, len, (uint64_t)off);
	return rc < 0 ? rc : (int)len;
}

static int fs_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	struct handle *h = handle_of(fi);
	struct nbd_export *writer;
	uint64_t seq;
	int rc;

	(void)path;
	(void)datasync;
	if (!h->vol[0] || h->text)
		return 0; /* a snapshot or info.json: nothing to write back */
	/*
	 * Like fsync on Linux, through any file of the volume: what this mount
	 * wrote goes through its read-write export; then each file hears once
	 * of writes lost since it was opened or last told.
	 */
	writer = nbd_export_find(h->vol);
	rc = nbd_export_flush(writer ? writer : h->x);
	if (rc == 0 && writer && writer != h->x && h->writable)
		rc = nbd_export_flush(h->x); /* an older writer, from before a resize */
	if (writer)
		nbd_export_put(writer);
	seq = nbd_export_errseq(h->vol);
	if (seq > __atomic_exchange_n(&h->err_seen, seq, __ATOMIC_RELAXED))
		rc = -EIO;
	return rc;
}

static int fs_fallocate(const char *path, int mode, off_t off, off_t len, struct fuse_file_info *fi)
{
	struct handle *h = handle_of(fi);
	bool punch = mode == (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE);

	(void)path;
	if (!h->writable)
		return -EROFS;
	if (!punch && (mode & ~FALLOC_FL_KEEP_SIZE) != FALLOC_FL_ZERO_RANGE)
		return -EOPNOTSUPP;
	if (off < 0 || len <= 0)
		return -EINVAL;
	if ((uint64_t)off >= h->size)
		return 0;
	if ((uint64_t)len > h->size - (uint64_t)off)
		len = (off_t)(h->size - (uint64_t)off);
	/*
	 * Punching a hole: reads give zeros afterwards and whole clusters are
	 * given back (a write of zeros that may unmap: an NBD TRIM would leave
	 * partial clusters as they were).  Zeroing a range keeps it allocated.
	 */
	return nbd_export_zero(h->x, (uint64_t)off, (uint64_t)len, punch);
}

static int fs_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
	struct node n;
	json_t *o;
	uint64_t now;
	int rc;

	if (fi && handle_of(fi)->x && !handle_of(fi)->text)
		return (uint64_t)size == handle_of(fi)->size ? 0 : -EINVAL;
	if (parse(path, &n) != K_DISK)
		return n.kind == K_NONE ? -ENOENT : -EROFS;
	rc = volume_entry(n.vol, false, &o);
	if (rc < 0)
		return rc;
	now = num(o, "size");
	json_decref(o);
	return (uint64_t)size == now ? 0 : -EINVAL;
}

static int fs_release(const char *path, struct fuse_file_info *fi)
{
	struct handle *h = handle_of(fi);

	(void)path;
	if (h->x)
		nbd_export_put(h->x);
	free(h->text);
	free(h);
	return 0;
}

static void *fs_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	(void)conn;
	/* What the kernel caches about names and sizes is as stale as the catalog may be. */
	cfg->entry_timeout = CATALOG_TTL_MS / 1000.0;
	cfg->attr_timeout = CATALOG_TTL_MS / 1000.0;
	cfg->negative_timeout = 0;
	return NULL;
}

static void fs_destroy(void *private_data)
{
	(void)private_data;
	catalog_close();
}

static const struct fuse_operations ops = {
    .init = fs_init,
    .getattr = fs_getattr,
    .readdir = fs_readdir,
    .open = fs_open,
    .read = fs_read,
    .write = fs_write,
    .fsync = fs_fsync,
    .fallocate = fs_fallocate,
    .truncate = fs_truncate,
    .release = fs_release,
    .destroy = fs_destroy,
};

int daemon_mode(struct fuse_args *args, const char *control_path, const char *nbd_socket, bool rw)
{
	char err[PATH_MAX + 256];
	struct stat sb;

	dfs.nbd = nbd_socket;
	dfs.rw = rw;
	clock_gettime(CLOCK_REALTIME, &dfs.mounted);
	if (catalog_open(control_path, err, sizeof(err)) < 0) {
		fprintf(stderr, "blockfs: %s (is blockd running? see --data-dir)\n", err);
		return 1;
	}
	if (stat(nbd_socket, &sb) < 0 || !S_ISSOCK(sb.st_mode)) {
		fprintf(stderr, "blockfs: %s: no NBD socket there (blockd serves volumes on it)\n",
		        nbd_socket);
		catalog_close();
		return 1;
	}
	if (!rw)
		fuse_opt_add_arg(args, "-oro");
	return fuse_main(args->argc, args->argv, &ops, NULL);
}
