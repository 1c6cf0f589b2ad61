/* SPDX-License-Identifier: MIT */
/*
 * fuzz_proto.c - libFuzzer target of the NBD protocol machine: the input is
 * a client byte stream.  Its first byte picks the feed pattern (whole, one
 * byte at a time, or pieces of varying size) and whether export lookups
 * answer at once or later (-EINPROGRESS, then proto_server_lookup_done());
 * the rest is fed until the machine disconnects or the input ends.  Checks the machine's promises:
 * never consumes more than given, SEND never empty nor larger than its
 * buffer, WRITE_DATA pieces inside the request's payload, a disconnect
 * sticks, output per step bounded.  Requests are answered with the
 * encoders so they run too.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Set while lookups answer later: the name asked for, kept for the answer. */
static bool async_lookups;
static char waiting_name[PROTO_MAX_STRING + 1];
static bool waiting;

static int sync_lookup(const char *name, size_t name_len, struct proto_export *out)
{
	if (strlen(name) != name_len)
		abort();
	memset(out, 0, sizeof(*out));
	if (name_len == 0 || !strcmp(name, "disk")) {
		out->size_bytes = 1ull << 30;
		out->multi_conn = true;
	} else if (!strcmp(name, "ro")) {
		out->size_bytes = 1 << 20;
		out->read_only = true;
	} else if (!strcmp(name, "bs")) {
		out->size_bytes = 1 << 20;
		out->min_block = 512;
		out->pref_block = 4096;
		out->max_block = 65536;
		out->description = "d";
	} else {
		return -ENOENT;
	}
	return 0;
}

static int lookup(void *opaque, const char *name, size_t name_len, struct proto_export *out)
{
	(void)opaque;
	if (!async_lookups)
		return sync_lookup(name, name_len, out);
	if (waiting || name_len > PROTO_MAX_STRING)
		abort();
	memcpy(waiting_name, name, name_len + 1);
	waiting = true;
	return -EINPROGRESS;
}

static int list(void *opaque, size_t index, const char **name, const char **desc)
{
	(void)opaque;
	if (index > 1)
		return 0;
	*name = index ? "ro" : "disk";
	*desc = index ? NULL : "main";
	return 1;
}

static void answer(const struct proto_request *r)
{
	uint8_t out[256];
	struct proto_extent ext[3] = {{512, 0}, {0, 1}, {(uint64_t)r->length * 4, 3}};

	if (proto_encode_simple(out, r->cookie, 0) != 16)
		abort();
	if (r->type == NBD_CMD_BLOCK_STATUS &&
	    proto_encode_block_status(out, sizeof(out), r, true, 1, ext, 3, NULL) < 0)
		abort();
	if (r->type == NBD_CMD_READ &&
	    proto_encode_offset_data(out, r->cookie, true, r->offset, r->length) != 28)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proto_server_config cfg = {.lookup = lookup, .list = list};
	struct proto_server *s;
	size_t pos = 1, end, mode;
	uint32_t payload_left = 0;
	unsigned steps = 0;

	if (size < 1)
		return 0;
	mode = data[0] % 4;
	async_lookups = data[0] & 4;
	waiting = false;
	if (proto_server_new(&cfg, &s) < 0)
		abort();
	end = size;
	for (;;) {
		struct proto_action act;
		size_t avail, used = 0;

		if (mode == 1)
			end = pos + 1 < size ? pos + 1 : size;
		else if (mode >= 2)
			end = pos + 1 + (steps * 7 + pos) % 29 < size
			          ? pos + 1 + (steps * 7 + pos) % 29
			          : size;
		avail = end - pos;
		proto_server_step(s, data + pos, avail, &used, &act);
		if (used > avail)
			abort();
		pos += used;
		steps++;
		if (act.type == PROTO_ACT_NEED_INPUT) {
			if (used != avail)
				abort();
			if (pos >= size)
				break;
		} else if (act.type == PROTO_ACT_SEND) {
			if (act.send.len == 0 || act.send.len > PROTO_OUT_BYTES)
				abort();
		} else if (act.type == PROTO_ACT_REQUEST) {
			if (payload_left)
				abort();
			if (act.request.type == NBD_CMD_WRITE)
				payload_left = act.request.length;
			answer(&act.request);
		} else if (act.type == PROTO_ACT_WRITE_DATA) {
			if (act.write_data.len == 0 || act.write_data.len > payload_left)
				abort();
			payload_left -= (uint32_t)act.write_data.len;
			if (act.write_data.last != (payload_left == 0))
				abort();
		} else if (act.type == PROTO_ACT_WAIT) {
			struct proto_export e;
			int rc;

			if (!waiting ||
			    proto_server_step(s, data + pos, size - pos, &used, &act) !=
			        PROTO_ACT_WAIT ||
			    used)
				abort();
			waiting = false;
			rc = sync_lookup(waiting_name, strlen(waiting_name), &e);
			if (proto_server_lookup_done(s, rc, &e) != 0 ||
			    proto_server_lookup_done(s, rc, &e) != -EINVAL)
				abort();
		} else if (act.type == PROTO_ACT_DISCONNECT) {
			if (proto_server_step(s, data + pos, size - pos, &used, &act) !=
			        PROTO_ACT_DISCONNECT ||
			    used)
				abort();
			break;
		}
	}
	proto_server_free(s);
	return 0;
}
