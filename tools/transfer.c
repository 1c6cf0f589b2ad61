/* SPDX-License-Identifier: MIT */
/*
 * transfer.c - "blockctl volume import" and "volume export": copying a
 * volume's contents in from, or out to, a raw or qcow2 file.
 *
 * The data always moves over NBD (libnbd, connected through common's
 * nbdclient.h), never by opening an image the daemon has open: import
 * creates the volume through the control API and writes it over NBD;
 * export reads the volume, or the read-only export VOL@SNAP of one of its
 * snapshots.  Both keep the copy sparse: export asks the server for block
 * status (base:allocation) and reads only what is not known to be zeros;
 * import asks the source (SEEK_DATA, or the qcow library's block status),
 * and neither writes a block that is all zeros.  Requests are CHUNK_BYTES
 * long with up to SLOTS of them in flight (libnbd's asynchronous calls).
 *
 * A failed or interrupted (SIGINT, SIGTERM, SIGHUP) copy removes what it
 * made: the partial output file, or the volume import created.
 *
 * A qcow2 image names its backing file itself, and may name any file
 * (/etc/shadow, "../../x"): import refuses an image that has one unless
 * told --flatten, and even then never guesses a backing file's format (a
 * raw disk can hold a qcow2 header naming yet another file; qemu's
 * CVE-2008-2004).  Without --flatten no backing file is opened at all.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blockctl.h"
#include "ctl.h"
#include "datadir.h"
#include "image_cmds.h"
#include "image_file.h"
#include "nbdclient.h"
#include "progress.h"

#define CHUNK_BYTES (4u << 20)
#define SLOTS       4

/* Zero blocks of these sizes are not written: a file system block, a qcow2 cluster. */
#define RAW_GRAIN_BYTES   4096u
#define QCOW2_GRAIN_BYTES (64u << 10)

/* One block status request covers at most this much (NBD lengths are 32-bit). */
#define STATUS_SPAN_BYTES (1u << 30)
/* Extents kept from one block status reply; the rest is asked for again. */
#define STATUS_MAX_EXTENTS 1024

#define SECTOR_SIZE 512u

/* Deleting a volume still attached is retried this often, this far apart. */
#define DELETE_RETRIES  50
#define DELETE_RETRY_US 100000

struct extent {
	uint64_t off, len;
	bool zero;
};

/* One buffer and the NBD commands in flight on it. */
struct slot {
	unsigned char *buf;
	uint64_t off;
	size_t len;
	unsigned pending; /* commands not yet completed */
	bool busy;        /* export: read into, not yet written out */
	int error;        /* first errno a command completed with */
};

struct xfer {
	struct nbd_handle *nbd;
	struct nbdclient_info info;
	const char *export; /* for messages */
	uint64_t size;      /* bytes copied */
	struct slot slots[SLOTS];
	unsigned next_slot;
	struct progress progress;
	/* export: the server's block status from pos on */
	struct extent ext[STATUS_MAX_EXTENTS];
	size_t ext_count, ext_next;
};

static bool buffer_is_zero(const unsigned char *p, size_t len)
{
	return len == 0 || (p[0] == 0 && memcmp(p, p + 1, len - 1) == 0);
}

static int nbd_failed(const struct xfer *x, const char *what)
{
	int err = nbd_get_errno();

	cli_error("%s: %s: %s", x->export, what, nbdclient_error());
	return err > 0 ? -err : -EIO;
}

static int xfer_alloc(struct xfer *x)
{
	int i;

	for (i = 0; i < SLOTS; i++) {
		x->slots[i].buf = malloc(CHUNK_BYTES);
		if (!x->slots[i].buf) {
			cli_error("out of memory");
			return -ENOMEM;
		}
	}
	return 0;
}

/* Closes the connection first: libnbd may still complete commands on the buffers. */
static void xfer_free(struct xfer *x)
{
	int i;

	if (x->nbd)
		nbd_close(x->nbd);
	x->nbd = NULL;
	for (i = 0; i < SLOTS; i++) {
		free(x->slots[i].buf);
		x->slots[i].buf = NULL;
	}
}

/* ------------------------------------------------------------------------ */
/* Connecting */

/*
 * uri with its export name (the path) replaced by export, escaped:
 * "nbd+unix:///vm1?socket=S" -> "nbd+unix:///vm1%40s1?socket=S".
 */
static char *uri_with_export(const char *uri, const char *export)
{
	const char *scheme_end = strstr(uri, "://"), *path, *rest;
	char *escaped, *out = NULL;

	if (!scheme_end)
		return NULL;
	path = strchr(scheme_end + 3, '/');
	if (!path)
		path = scheme_end + 3 + strcspn(scheme_end + 3, "?#");
	rest = path + strcspn(path, "?#");
	escaped = ctl_escape(export);
	if (escaped && asprintf(&out, "%.*s/%s%s", (int)(path - uri), uri, escaped, rest) < 0)
		out = NULL;
	free(escaped);
	return out;
}

/*
 * Where export (a volume or VOL@SNAP) is served: the daemon's own unix
 * URI for the volume, else DIR/nbd.sock, else its TCP URI.
 */
static char *export_uri(const json_t *vol, const char *export)
{
	const char *unix_uri = ctl_str(vol, "nbd_unix_uri", NULL);
	const char *tcp_uri = ctl_str(vol, "nbd_uri", NULL);
	char *uri = NULL, *name, sock[PATH_MAX];

	if (unix_uri && strncmp(unix_uri, "nbd+unix://", 11) == 0)
		uri = uri_with_export(unix_uri, export);
	else if (ctl_target.data_dir[0]) {
		if (datadir_nbd_socket(ctl_target.data_dir, sock, sizeof(sock)) < 0) {
			cli_error("%s/" DATADIR_NBD_SOCKET ": path too long", ctl_target.data_dir);
			return NULL;
		}
		name = ctl_escape(export);
		if (name) {
			char *esc_sock = ctl_escape(sock);

			if (esc_sock &&
			    asprintf(&uri, "nbd+unix:///%s?socket=%s", name, esc_sock) < 0)
				uri = NULL;
			free(esc_sock);
		}
		free(name);
	} else if (tcp_uri && strncmp(tcp_uri, "nbd://", 6) == 0) {
		uri = uri_with_export(tcp_uri, export);
	} else {
		cli_error("%s: blockd gave no NBD address for it; give --data-dir", export);
		return NULL;
	}
	if (!uri)
		cli_error("out of memory");
	return uri;
}

static int xfer_connect(struct xfer *x, const json_t *vol, bool want_status)
{
	struct nbdclient_opts opts = {.want_block_status = want_status, .timeout_ms = -1};
	char *uri = export_uri(vol, x->export), err[512];
	int ret;

	if (!uri)
		return -ENOMEM;
	opts.uri = uri;
	ret = nbdclient_connect(&opts, &x->nbd, &x->info, err, sizeof(err));
	if (ret < 0)
		cli_error("%s: cannot connect to %s: %s", x->export, uri, err);
	free(uri);
	return ret;
}

/* ------------------------------------------------------------------------ */
/* Asynchronous commands on slots */

static int slot_done(void *user_data, int *error)
{
	struct slot *s = user_data;

	if (*error && !s->error)
		s->error = *error;
	s->pending--;
	return 1; /* retire the command */
}

static int slot_wait(struct xfer *x, struct slot *s)
{
	while (s->pending > 0) {
		if (nbd_poll(x->nbd, -1) < 0)
			return nbd_failed(x, "waiting for the server");
	}
	if (s->error) {
		cli_error("%s: I/O error at offset %llu: %s", x->export, (unsigned long long)s->off,
		          strerror(s->error));
		return -s->error;
	}
	return 0;
}

static int slot_pwrite(struct xfer *x, struct slot *s, size_t rel, size_t len)
{
	nbd_completion_callback cb = {.callback = slot_done, .user_data = s};

	s->pending++;
	if (nbd_aio_pwrite(x->nbd, s->buf + rel, len, s->off + rel, cb, 0) < 0) {
		s->pending--;
		return nbd_failed(x, "write");
	}
	return 0;
}

static int slot_pread(struct xfer *x, struct slot *s, size_t rel, size_t len)
{
	nbd_completion_callback cb = {.callback = slot_done, .user_data = s};

	s->pending++;
	if (nbd_aio_pread(x->nbd, s->buf + rel, len, s->off + rel, cb, 0) < 0) {
		s->pending--;
		return nbd_failed(x, "read");
	}
	return 0;
}

static struct slot *next_slot(struct xfer *x)
{
	struct slot *s = &x->slots[x->next_slot];

	x->next_slot = (x->next_slot + 1) % SLOTS;
	return s;
}

/* ------------------------------------------------------------------------ */
/* import */

/* Writes the pieces of s->buf that are not all zeros, grain by grain. */
static int import_write_nonzero(struct xfer *x, struct slot *s)
{
	size_t pos = 0, run = 0, n;
	bool in_run = false, zero;
	int ret;

	while (pos < s->len) {
		n = s->len - pos < QCOW2_GRAIN_BYTES ? s->len - pos : QCOW2_GRAIN_BYTES;
		zero = buffer_is_zero(s->buf + pos, n);
		if (zero && in_run && (ret = slot_pwrite(x, s, run, pos - run)) < 0)
			return ret;
		if (!zero && !in_run)
			run = pos;
		in_run = !zero;
		pos += n;
	}
	return in_run ? slot_pwrite(x, s, run, s->len - run) : 0;
}

static bool extent_reads_zero(const struct qcow_extent *e)
{
	return (e->flags & QCOW_EXTENT_ZERO) || e->depth < 0;
}

/* Reads source bytes [s->off, s->off + s->len) into s->buf: data is read, zeros are not. */
static int import_fill(struct image_file *src, struct slot *s)
{
	struct qcow_extent ext;
	size_t done = 0;
	int ret;

	while (done < s->len) {
		ret = image_file_status(src, s->off + done, s->len - done, &ext);
		if (ret < 0)
			return ret;
		if (extent_reads_zero(&ext))
			memset(s->buf + done, 0, ext.length);
		else if ((ret = image_file_read(src, s->buf + done, s->off + done, ext.length)) < 0)
			return ret;
		done += ext.length;
	}
	return 0;
}

static int import_copy(struct xfer *x, struct image_file *src)
{
	uint64_t pos = 0, end, src_size = src->size_bytes;
	struct qcow_extent ext;
	struct slot *s;
	int ret, i;

	while (pos < src_size) {
		if (progress_interrupted()) {
			cli_error("%s: interrupted", x->export);
			return -EINTR;
		}
		progress_update(&x->progress, pos);
		end = src_size - pos < CHUNK_BYTES ? src_size : pos + CHUNK_BYTES;
		ret = image_file_status(src, pos, src_size - pos, &ext);
		if (ret < 0)
			return ret;
		if (extent_reads_zero(&ext)) {
			/* Holes are skipped whole; the volume reads as zeros there already. */
			pos += ext.length;
			continue;
		}
		s = next_slot(x);
		ret = slot_wait(x, s);
		if (ret < 0)
			return ret;
		s->off = pos;
		s->len = (size_t)(end - pos);
		ret = import_fill(src, s);
		if (ret < 0)
			return ret;
		ret = import_write_nonzero(x, s);
		if (ret < 0)
			return ret;
		pos = end;
	}
	for (i = 0; i < SLOTS; i++) {
		ret = slot_wait(x, &x->slots[i]);
		if (ret < 0)
			return ret;
	}
	if (x->info.can_flush && nbd_flush(x->nbd, 0) < 0)
		return nbd_failed(x, "flush");
	return 0;
}

/*
 * Removes the volume import made.  blockd may not have seen the NBD
 * connection close yet and refuse (409, attached): that is retried for a
 * while.  A failure is reported but changes nothing.
 */
static void import_remove_volume(const char *name)
{
	char *escaped = ctl_escape(name), *path = NULL;
	int ret = -ENOMEM, i;

	if (!escaped || asprintf(&path, "/v1/volumes/%s", escaped) < 0) {
		free(escaped);
		return;
	}
	for (i = 0; i < DELETE_RETRIES; i++) {
		ctl_quiet = i + 1 < DELETE_RETRIES;
		ret = ctl_request("DELETE", path, NULL, name, NULL);
		if (ret != -EEXIST)
			break;
		usleep(DELETE_RETRY_US);
	}
	ctl_quiet = false;
	if (ret == 0)
		cli_error("%s: the partial volume is deleted", name);
	free(escaped);
	free(path);
}

/* Refuses a qcow2 source with a backing file, opened without its chain (no --flatten). */
static int import_self_contained(struct image_file *src)
{
	struct qcow_info *info;
	int ret = 0;

	if (src->format != IMAGE_FORMAT_QCOW2)
		return 0;
	info = malloc(sizeof(*info));
	if (!info) {
		cli_error("out of memory");
		return -ENOMEM;
	}
	qcow_get_info(src->qcow, info);
	if (info->backing_file[0]) {
		cli_error("%s: has a backing file (%s); import copies self-contained images: "
		          "--flatten copies the data of the whole chain, reading the backing "
		          "files the image names",
		          src->path, info->backing_file);
		ret = -EPERM;
	}
	free(info);
	return ret;
}

static int import_run(const char *file, const char *name, enum image_format format, bool flatten,
                      bool show_progress)
{
	struct xfer x = {.export = name};
	struct image_file src;
	json_t *body, *vol = NULL;
	uint64_t size;
	int ret;

	ret = image_file_open(&src, file, format,
	                      flatten ? IMAGE_OPEN_NO_PROBE : IMAGE_OPEN_NO_BACKING);
	if (ret < 0)
		return ret;
	if (!flatten && (ret = import_self_contained(&src)) < 0)
		goto out_src;
	size = (src.size_bytes + SECTOR_SIZE - 1) & ~(uint64_t)(SECTOR_SIZE - 1);
	ret = xfer_alloc(&x);
	if (ret < 0)
		goto out_src;
	body = json_pack("{s:s, s:I}", "name", name, "size", (json_int_t)size);
	if (!body) {
		cli_error("out of memory (or a name that is not UTF-8)");
		ret = -ENOMEM;
		goto out_src;
	}
	ret = ctl_request("POST", "/v1/volumes", body, name, &vol);
	json_decref(body);
	if (ret < 0)
		goto out_src;
	progress_catch_interrupts();
	ret = xfer_connect(&x, vol, false);
	if (ret < 0)
		goto out_remove;
	if (x.info.size_bytes < src.size_bytes) {
		cli_error("%s: the new volume is %llu bytes, less than the %llu of %s", name,
		          (unsigned long long)x.info.size_bytes, (unsigned long long)src.size_bytes,
		          file);
		ret = -EIO;
		goto out_remove;
	}
	if (x.info.read_only) {
		cli_error("%s: blockd serves the new volume read-only", name);
		ret = -EROFS;
		goto out_remove;
	}
	progress_init(&x.progress, show_progress, src.size_bytes);
	ret = import_copy(&x, &src);
	if (ret < 0)
		goto out_remove;
	if (nbd_shutdown(x.nbd, 0) < 0) {
		ret = nbd_failed(&x, "disconnect");
		goto out_remove;
	}
	progress_finish(&x.progress);
	xfer_free(&x);
	json_decref(vol);
	return image_file_close(&src);

out_remove:
	progress_abort(&x.progress);
	xfer_free(&x); /* disconnected before the volume is deleted */
	import_remove_volume(name);
out_src:
	xfer_free(&x);
	json_decref(vol);
	image_file_abandon(&src);
	return ret;
}

int volume_cmd_import(int argc, char **argv, const char *usage)
{
	static const struct option longopts[] = {
	    {"format", required_argument, NULL, 'f'},
	    {"flatten", no_argument, NULL, 'F'},
	    {"progress", no_argument, NULL, 'p'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	enum image_format format = IMAGE_FORMAT_AUTO;
	bool progress = isatty(STDOUT_FILENO), flatten = false;
	int c;

	while ((c = getopt_long(argc, argv, ":f:ph", longopts, NULL)) != -1) {
		switch (c) {
		case 'f':
			if (image_format_parse(optarg, &format) < 0) {
				cli_error("invalid source format '%s' (expected qcow2 or raw)",
				          optarg);
				return BLOCKCTL_EXIT_FAILURE;
			}
			break;
		case 'F':
			flatten = true;
			break;
		case 'p':
			progress = true;
			break;
		default:
			return image_common_option(c, argv, usage);
		}
	}
	if (image_check_operands(argc, argv, 2, 2, usage) < 0 ||
	    ctl_check_name("volume", argv[optind + 1], usage) < 0)
		return BLOCKCTL_EXIT_USAGE;
	return import_run(argv[optind], argv[optind + 1], format, flatten, progress) < 0
	           ? BLOCKCTL_EXIT_FAILURE
	           : EXIT_SUCCESS;
}

/* ------------------------------------------------------------------------ */
/* export */

struct status_ctx {
	struct xfer *x;
	uint64_t pos;  /* where the next entry starts */
	uint64_t stop; /* the end of the range asked for */
};

static int status_entries(void *user_data, const char *metacontext, uint64_t offset,
                          uint32_t *entries, size_t nr_entries, int *error)
{
	struct status_ctx *c = user_data;
	struct xfer *x = c->x;
	size_t i;

	(void)error;
	if (strcmp(metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0 || offset != c->pos)
		return 0;
	for (i = 0; i + 1 < nr_entries && c->pos < c->stop; i += 2) {
		uint64_t len = entries[i];
		bool zero = entries[i + 1] & LIBNBD_STATE_ZERO;

		if (len == 0)
			break;
		if (len > c->stop - c->pos)
			len = c->stop - c->pos;
		if (x->ext_count > 0 && x->ext[x->ext_count - 1].zero == zero) {
			x->ext[x->ext_count - 1].len += len;
		} else {
			if (x->ext_count == STATUS_MAX_EXTENTS)
				break;
			x->ext[x->ext_count++] = (struct extent){c->pos, len, zero};
		}
		c->pos += len;
	}
	return 0;
}

/*
 * Makes x->ext[x->ext_next] the extent holding pos, asking the server
 * when the kept ones do not reach it.  Without block status, all is data.
 */
static int status_at(struct xfer *x, uint64_t pos)
{
	struct status_ctx c = {.x = x, .pos = pos};
	nbd_extent_callback cb = {.callback = status_entries, .user_data = &c};
	struct extent *e;

	while (x->ext_next < x->ext_count) {
		e = &x->ext[x->ext_next];
		if (pos >= e->off && pos < e->off + e->len)
			return 0;
		x->ext_next++;
	}
	x->ext_count = x->ext_next = 0;
	c.stop = x->size - pos < STATUS_SPAN_BYTES ? x->size : pos + STATUS_SPAN_BYTES;
	if (!x->info.block_status) {
		x->ext[x->ext_count++] = (struct extent){pos, c.stop - pos, false};
		return 0;
	}
	if (nbd_block_status(x->nbd, c.stop - pos, pos, cb, 0) < 0)
		return nbd_failed(x, "block status");
	if (x->ext_count == 0) {
		cli_error("%s: the server's block status at offset %llu describes nothing",
		          x->export, (unsigned long long)pos);
		return -EPROTO;
	}
	return 0;
}

/* Writes a slot's bytes that are not all zeros to the output file. */
static int export_store(struct xfer *x, struct slot *s, struct image_file *dst)
{
	size_t grain = dst->format == IMAGE_FORMAT_RAW ? RAW_GRAIN_BYTES : QCOW2_GRAIN_BYTES;
	size_t pos = 0, run = 0, n;
	bool in_run = false, zero;
	int ret;

	if (!s->busy)
		return 0;
	ret = slot_wait(x, s);
	if (ret < 0)
		return ret;
	s->busy = false;
	while (pos < s->len) {
		n = s->len - pos < grain ? s->len - pos : grain;
		zero = buffer_is_zero(s->buf + pos, n);
		if (zero && in_run &&
		    (ret = image_file_write(dst, s->buf + run, s->off + run, pos - run)) < 0)
			return ret;
		if (!zero && !in_run)
			run = pos;
		in_run = !zero;
		pos += n;
	}
	if (in_run)
		return image_file_write(dst, s->buf + run, s->off + run, s->len - run);
	return 0;
}

/* Reads the data in [pos, end) into a slot; zero extents are zero-filled. */
static int export_issue(struct xfer *x, struct slot *s, uint64_t pos, uint64_t end)
{
	uint64_t off = pos, n;
	struct extent *e;
	int ret;

	s->off = pos;
	s->len = (size_t)(end - pos);
	s->busy = true;
	while (off < end) {
		ret = status_at(x, off);
		if (ret < 0)
			return ret;
		e = &x->ext[x->ext_next];
		n = e->off + e->len - off;
		if (n > end - off)
			n = end - off;
		if (e->zero)
			memset(s->buf + (off - pos), 0, n);
		else if ((ret = slot_pread(x, s, (size_t)(off - pos), (size_t)n)) < 0)
			return ret;
		off += n;
	}
	return 0;
}

static int export_copy(struct xfer *x, struct image_file *dst)
{
	uint64_t pos = 0, end;
	struct extent *e;
	struct slot *s;
	int ret, i;

	while (pos < x->size) {
		if (progress_interrupted()) {
			cli_error("%s: interrupted; the partial copy is removed", dst->path);
			return -EINTR;
		}
		progress_update(&x->progress, pos);
		ret = status_at(x, pos);
		if (ret < 0)
			return ret;
		e = &x->ext[x->ext_next];
		if (e->zero) {
			pos = e->off + e->len;
			continue;
		}
		end = x->size - pos < CHUNK_BYTES ? x->size : pos + CHUNK_BYTES;
		s = next_slot(x);
		ret = export_store(x, s, dst);
		if (ret < 0)
			return ret;
		ret = export_issue(x, s, pos, end);
		if (ret < 0)
			return ret;
		pos = end;
	}
	for (i = 0; i < SLOTS; i++) {
		ret = export_store(x, next_slot(x), dst);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* Checks that the volume has the snapshot, for a clear message when it has not. */
static int export_check_snapshot(const json_t *vol, const char *name, const char *snap)
{
	json_t *snaps = json_object_get(vol, "snapshots"), *s;
	size_t i;

	if (!json_is_array(snaps))
		return 0; /* the server will say */
	json_array_foreach(snaps, i, s)
	{
		if (strcmp(ctl_str(s, "name", ""), snap) == 0)
			return 0;
	}
	json_array_foreach(snaps, i, s)
	{
		if (strcmp(ctl_str(s, "id", ""), snap) == 0)
			return 0;
	}
	cli_error("volume %s has no snapshot %s", name, snap);
	return -ENOENT;
}

static int export_get_volume(const char *spec, json_t **vol)
{
	char *name = strdup(spec), *at, *escaped = NULL, *path = NULL;
	int ret = -ENOMEM;

	if (!name)
		goto out;
	at = strchr(name, '@');
	if (at)
		*at = '\0';
	escaped = ctl_escape(name);
	if (!escaped || asprintf(&path, "/v1/volumes/%s", escaped) < 0) {
		path = NULL;
		goto out;
	}
	ret = ctl_request("GET", path, NULL, spec, vol);
	if (ret == 0 && at)
		ret = export_check_snapshot(*vol, name, at + 1);
out:
	if (ret == -ENOMEM)
		cli_error("out of memory");
	free(name);
	free(escaped);
	free(path);
	return ret;
}

static int export_create(struct image_file *dst, const char *file, enum image_format format,
                         uint64_t size)
{
	struct qcow_create_opts opts = {
	    .path = file,
	    .size_bytes = (size + SECTOR_SIZE - 1) & ~(uint64_t)(SECTOR_SIZE - 1),
	    .cluster_size = QCOW2_GRAIN_BYTES,
	};

	if (format == IMAGE_FORMAT_QCOW2)
		return image_file_create_qcow2(dst, &opts);
	return image_file_create_raw(dst, file, size);
}

static int export_run(const char *spec, const char *file, enum image_format format,
                      bool show_progress)
{
	struct xfer x = {.export = spec};
	struct image_file dst;
	json_t *vol = NULL;
	int ret;

	if (access(file, F_OK) == 0) {
		cli_file_error(file, "already exists; not overwritten");
		return -EEXIST;
	}
	ret = export_get_volume(spec, &vol);
	if (ret < 0)
		goto out;
	ret = xfer_alloc(&x);
	if (ret < 0)
		goto out;
	ret = xfer_connect(&x, vol, true);
	if (ret < 0)
		goto out;
	x.size = x.info.size_bytes;
	ret = export_create(&dst, file, format, x.size);
	if (ret < 0)
		goto out;
	progress_catch_interrupts();
	progress_init(&x.progress, show_progress, x.size);
	ret = export_copy(&x, &dst);
	if (ret < 0)
		goto out_remove;
	ret = image_file_close(&dst);
	if (ret < 0) {
		unlink(file);
		goto out;
	}
	nbd_shutdown(x.nbd, 0);
	progress_finish(&x.progress);
	goto out;

out_remove:
	progress_abort(&x.progress);
	image_file_abandon(&dst);
	unlink(file);
out:
	xfer_free(&x);
	json_decref(vol);
	return ret;
}

int volume_cmd_export(int argc, char **argv, const char *usage)
{
	static const struct option longopts[] = {
	    {"format", required_argument, NULL, 'O'},
	    {"progress", no_argument, NULL, 'p'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	enum image_format format = IMAGE_FORMAT_RAW;
	bool progress = isatty(STDOUT_FILENO);
	const char *spec, *at;
	int c;

	while ((c = getopt_long(argc, argv, ":O:ph", longopts, NULL)) != -1) {
		switch (c) {
		case 'O':
			if (image_format_parse(optarg, &format) < 0) {
				cli_error("invalid output format '%s' (expected qcow2 or raw)",
				          optarg);
				return BLOCKCTL_EXIT_FAILURE;
			}
			break;
		case 'p':
			progress = true;
			break;
		default:
			return image_common_option(c, argv, usage);
		}
	}
	if (image_check_operands(argc, argv, 2, 2, usage) < 0)
		return BLOCKCTL_EXIT_USAGE;
	spec = argv[optind];
	at = strchr(spec, '@');
	if (spec[0] == '\0' || at == spec || (at && at[1] == '\0')) {
		cli_usage_error(usage, "'%s' is not NAME or NAME@SNAP", spec);
		return BLOCKCTL_EXIT_USAGE;
	}
	return export_run(spec, argv[optind + 1], format, progress) < 0 ? BLOCKCTL_EXIT_FAILURE
	                                                                : EXIT_SUCCESS;
}
