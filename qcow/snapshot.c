/* SPDX-License-Identifier: MIT */
/*
 * snapshot.c - reading the internal snapshot table (notes/qcow2.md
 * section 9).  This library does not make snapshots yet; it needs the
 * table to keep refcounts honest (check, overlap checks) and to refuse
 * operations that snapshots forbid.
 */
#include <stdlib.h>

#include "internal.h"

void snapshots_free(struct qcow_image *img)
{
	free(img->snapshots);
	img->snapshots = NULL;
}

int snapshots_load(struct qcow_image *img, char *err, size_t errlen)
{
	uint64_t off = 0, max = QCOW_MAX_SNAPSHOT_TABLE_BYTES;
	uint8_t *buf;
	int e;

	if (!img->nb_snapshots)
		return 0;
	/* Read what the table can be at most, bounded by the file's end. */
	if (img->snapshots_offset >= img->file_size) {
		set_err(err, errlen, "%s: snapshot table lies beyond the end of the file",
		        img->path);
		return -EINVAL;
	}
	if (max > img->file_size - img->snapshots_offset)
		max = img->file_size - img->snapshots_offset;
	buf = malloc(max);
	img->snapshots = calloc(img->nb_snapshots, sizeof(*img->snapshots));
	if (!buf || !img->snapshots) {
		free(buf);
		set_err(err, errlen, "%s: no memory for the snapshot table", img->path);
		return -ENOMEM;
	}
	e = img->ops->pread(img->ctx, buf, max, img->snapshots_offset);
	if (e < 0) {
		set_err(err, errlen, "%s: cannot read the snapshot table: %s", img->path,
		        strerror(-e));
		goto out_free;
	}
	for (uint32_t i = 0; i < img->nb_snapshots; i++) {
		struct snapshot *s = &img->snapshots[i];
		uint64_t len;

		if (off + 40 > max)
			goto out_short;
		s->l1_offset = be64_at(buf + off);
		s->l1_size = be32_at(buf + off + 8);
		len = 40 + (uint64_t)be32_at(buf + off + 36) + be16_at(buf + off + 12) +
		      be16_at(buf + off + 14);
		if (off + len > max)
			goto out_short;
		len = (len + 7) & ~7ull; /* padding may end past the end of the file */
		if ((s->l1_offset & (img->cluster_size - 1)) ||
		    (uint64_t)s->l1_size * 8 > QCOW_MAX_L1_BYTES ||
		    s->l1_offset + 8 * (uint64_t)s->l1_size > QCOW_MAX_HOST_OFFSET) {
			set_err(err, errlen, "%s: snapshot %u has an invalid L1 table", img->path,
			        i);
			e = -EINVAL;
			goto out_free;
		}
		off += len;
	}
	img->snapshots_bytes = off;
	free(buf);
	return 0;
out_short:
	set_err(err, errlen, "%s: snapshot table is truncated", img->path);
	e = -EINVAL;
out_free:
	free(buf);
	snapshots_free(img);
	return e;
}
