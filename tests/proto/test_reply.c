/* SPDX-License-Identifier: MIT */
/* Reply encoders and transmission flags of the NBD protocol machine, byte for byte. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

Test(proto_reply, simple_and_done)
{
	uint8_t out[20];
	static const uint8_t simple[] = {0x67, 0x44, 0x66, 0x98, 0, 0, 0, 22,
	                                 1,    2,    3,    4,    5, 6, 7, 8};
	static const uint8_t done[] = {0x66, 0x8e, 0x33, 0xef, 0, 1, 0, 0, 0, 0,
	                               0,    0,    0,    0,    0, 9, 0, 0, 0, 0};

	cr_assert_eq(proto_encode_simple(out, 0x0102030405060708ull, NBD_EINVAL), 16);
	cr_assert_arr_eq(out, simple, 16);
	cr_assert_eq(proto_encode_done(out, 9), 20);
	cr_assert_arr_eq(out, done, 20);
}

Test(proto_reply, data_and_hole)
{
	uint8_t out[32];
	static const uint8_t hole[] = {0x66, 0x8e, 0x33, 0xef, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1,
	                               0,    0,    0,    12,   0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 1, 0};

	cr_assert_eq(proto_encode_offset_data(out, 1, false, 0, 0), -EINVAL);
	cr_assert_eq(proto_encode_offset_data(out, 1, false, 0, UINT32_MAX - 7), -EINVAL);
	cr_assert_eq(proto_encode_offset_data(out, 1, false, 0, UINT32_MAX - 8), 28);
	cr_assert_eq(proto_encode_offset_hole(out, 1, false, 512, 0), -EINVAL);
	cr_assert_eq(proto_encode_offset_hole(out, 1, false, 512, 256), 32);
	cr_assert_arr_eq(out, hole, 32);
}

Test(proto_reply, block_status_clamped)
{
	struct proto_request req = {
	    .type = NBD_CMD_BLOCK_STATUS, .cookie = 3, .offset = 0, .length = 0xffffffff};
	struct proto_extent ext[] = {{0, 0}, {1ull << 40, NBD_STATE_HOLE}, {4096, 0}};
	uint8_t out[64], *p = out + 24;
	uint64_t covered = 0;

	/* one backend extent larger than the request (CVE-2025-47711): cut at the end */
	cr_assert_eq(proto_encode_block_status(out, sizeof(out), &req, true, 1, ext, 3, &covered),
	             32);
	cr_assert_eq(covered, 0xffffffff);
	cr_assert_eq(out[19], 12);
	cr_assert_eq(out[23], 1);
	cr_assert(!memcmp(p, "\xff\xff\xff\xff\0\0\0\1", 8));

	/* several extents, the last overshooting; REQ_ONE keeps one */
	struct proto_extent e2[] = {{512, 0}, {0, 3}, {1024, NBD_STATE_ZERO}, {1 << 20, 0}};
	req.length = 2048;
	cr_assert_eq(proto_encode_block_status(out, sizeof(out), &req, false, 1, e2, 4, &covered),
	             48);
	cr_assert_eq(covered, 2048);
	cr_assert(!memcmp(p, "\0\0\2\0\0\0\0\0\0\0\4\0\0\0\0\2\0\0\2\0\0\0\0\0", 24));
	cr_assert_eq(out[5], 0);
	req.flags = NBD_CMD_FLAG_REQ_ONE;
	cr_assert_eq(proto_encode_block_status(out, sizeof(out), &req, true, 1, e2, 4, &covered),
	             32);
	cr_assert_eq(covered, 512);
	/* output full: stops; nothing usable: errors */
	req.flags = 0;
	cr_assert_eq(proto_encode_block_status(out, 40, &req, true, 1, e2, 4, &covered), 40);
	cr_assert_eq(covered, 1536);
	cr_assert_eq(proto_encode_block_status(out, 31, &req, true, 1, e2, 4, NULL), -ENOSPC);
	cr_assert_eq(proto_encode_block_status(out, 64, &req, true, 1, ext, 1, NULL), -EINVAL);
	cr_assert_eq(proto_encode_block_status(out, 64, &req, true, 1, NULL, 0, NULL), -EINVAL);
}

Test(proto_reply, error_truncated)
{
	uint8_t *out = malloc(10000);
	char *msg = malloc(9000);
	int n;

	memset(msg, 'm', 8999);
	msg[8999] = '\0';
	cr_assert_eq(proto_encode_error(out, 10000, 1, true, 0, "x"), -EINVAL);
	n = proto_encode_error(out, 10000, 1, true, NBD_EIO, msg);
	cr_assert_eq(n, PROTO_MAX_ERROR_CHUNK);
	cr_assert_lt(n, 4096);
	cr_assert_eq((out[24] << 8 | out[25]), PROTO_MAX_ERROR_MSG);
	cr_assert_eq(proto_encode_error(out, 10000, 1, true, NBD_EIO, NULL), 26);
	cr_assert_eq(proto_encode_error(out, 30, 1, true, NBD_EIO, "hello"), 30);
	cr_assert_eq(out[25], 4);
	cr_assert_eq(proto_encode_error(out, 25, 1, true, NBD_EIO, "hello"), -ENOSPC);
	free(out);
	free(msg);
}

Test(proto_reply, tflags_and_errno)
{
	struct proto_export e = {.size_bytes = 1};

	cr_assert_eq(proto_tflags(&e, false), 0x0c6d);
	cr_assert_eq(proto_tflags(&e, true), 0x0ced);
	e.multi_conn = true;
	cr_assert_eq(proto_tflags(&e, true), 0x0ded);
	e.read_only = true;
	cr_assert_eq(proto_tflags(&e, false), 0x050f);
	cr_assert_eq(proto_errno_to_wire(0), 0);
	cr_assert_eq(proto_errno_to_wire(-EROFS), NBD_EPERM);
	cr_assert_eq(proto_errno_to_wire(ENOSPC), NBD_ENOSPC);
	cr_assert_eq(proto_errno_to_wire(-ENOTSUP), NBD_ENOTSUP);
	cr_assert_eq(proto_errno_to_wire(-EBADF), NBD_EIO);
}

Test(proto_reply, config_errors)
{
	struct proto_server_config cfg = {0};
	struct proto_server *s = NULL;

	cr_assert_eq(proto_server_new(&cfg, &s), -EINVAL);
	cr_assert_eq(proto_server_new(NULL, &s), -EINVAL);
	cr_assert_null(s);
	proto_server_free(NULL);
}

Test(proto_reply, status_replies)
{
	uint8_t out[PROTO_MAX_ERROR_CHUNK + 1];
	struct buf exp = {0};

	/* success: a simple reply, with or without structured replies */
	cr_assert_eq(proto_encode_status(out, sizeof(out), 7, true, 0, "ignored"), 16);
	s_simple(&exp, 7, 0);
	cr_assert_arr_eq(out, exp.p, 16);
	buf_free(&exp);
	/* failure: simple without structured replies, an ERROR chunk with them */
	cr_assert_eq(proto_encode_status(out, sizeof(out), 8, false, NBD_EIO, "x"), 16);
	s_simple(&exp, 8, NBD_EIO);
	cr_assert_arr_eq(out, exp.p, 16);
	buf_free(&exp);
	cr_assert_eq(proto_encode_status(out, sizeof(out), 9, true, NBD_ENOSPC, "full"), 30);
	s_err_chunk(&exp, 9, NBD_ENOSPC, "full");
	cr_assert_arr_eq(out, exp.p, 30);
	buf_free(&exp);
	cr_assert_eq(proto_encode_status(out, 15, 9, false, 0, NULL), -ENOSPC);
	cr_assert_eq(proto_encode_status(out, 20, 9, true, NBD_EIO, "m"), -ENOSPC);
}

/* Concatenates what IOV points at. */
static void flatten(const struct iovec *iov, int n, struct buf *b)
{
	for (int i = 0; i < n; i++)
		putn(b, iov[i].iov_base, iov[i].iov_len);
}

Test(proto_reply, frame_read)
{
	struct proto_request req = {
	    .type = NBD_CMD_READ, .cookie = 5, .offset = 4096, .length = 12};
	struct proto_read_piece pieces[] = {{0, 4, false}, {4, 4, true}, {8, 4, false}};
	uint8_t data[12], hdr[PROTO_READ_HDR_BYTES(3)];
	struct iovec iov[PROTO_READ_IOVS(3)];
	struct buf got = {0}, exp = {0};
	int n;

	/* structured, no DF: data, hole, data; the hole stays in the buffer untouched */
	memset(data, 0xab, sizeof(data));
	n = proto_frame_read(&req, true, pieces, 3, data, hdr, sizeof(hdr), iov, 6);
	cr_assert_eq(n, 5);
	flatten(iov, n, &got);
	put32(&exp, NBD_CHUNK_MAGIC);
	put16(&exp, 0);
	put16(&exp, NBD_REPLY_TYPE_OFFSET_DATA);
	put64(&exp, 5);
	put32(&exp, 12);
	put64(&exp, 4096);
	putn(&exp, data, 4);
	put32(&exp, NBD_CHUNK_MAGIC);
	put16(&exp, 0);
	put16(&exp, NBD_REPLY_TYPE_OFFSET_HOLE);
	put64(&exp, 5);
	put32(&exp, 12);
	put64(&exp, 4100);
	put32(&exp, 4);
	put32(&exp, NBD_CHUNK_MAGIC);
	put16(&exp, NBD_REPLY_FLAG_DONE);
	put16(&exp, NBD_REPLY_TYPE_OFFSET_DATA);
	put64(&exp, 5);
	put32(&exp, 12);
	put64(&exp, 4104);
	putn(&exp, data + 8, 4);
	cr_assert_eq(got.len, exp.len);
	cr_assert_arr_eq(got.p, exp.p, exp.len);
	cr_assert_eq(data[4], 0xab);
	buf_free(&got);
	buf_free(&exp);

	/* DF: one OFFSET_DATA chunk with the hole zero-filled */
	req.flags = NBD_CMD_FLAG_DF;
	n = proto_frame_read(&req, true, pieces, 3, data, hdr, sizeof(hdr), iov, 6);
	cr_assert_eq(n, 2);
	flatten(iov, n, &got);
	put32(&exp, NBD_CHUNK_MAGIC);
	put16(&exp, NBD_REPLY_FLAG_DONE);
	put16(&exp, NBD_REPLY_TYPE_OFFSET_DATA);
	put64(&exp, 5);
	put32(&exp, 20);
	put64(&exp, 4096);
	putn(&exp, "\xab\xab\xab\xab\0\0\0\0\xab\xab\xab\xab", 12);
	cr_assert_eq(got.len, exp.len);
	cr_assert_arr_eq(got.p, exp.p, exp.len);
	buf_free(&got);
	buf_free(&exp);

	/* no structured replies: simple reply + data, holes zero-filled */
	memset(data, 0xcd, sizeof(data));
	req.flags = 0;
	n = proto_frame_read(&req, false, pieces, 3, data, hdr, sizeof(hdr), iov, 6);
	cr_assert_eq(n, 2);
	flatten(iov, n, &got);
	s_simple(&exp, 5, 0);
	putn(&exp, "\xcd\xcd\xcd\xcd\0\0\0\0\xcd\xcd\xcd\xcd", 12);
	cr_assert_eq(got.len, exp.len);
	cr_assert_arr_eq(got.p, exp.p, exp.len);
	buf_free(&got);
	buf_free(&exp);
}

Test(proto_reply, frame_read_refuses_bad_pieces)
{
	struct proto_request req = {.type = NBD_CMD_READ, .cookie = 5, .offset = 0, .length = 8};
	struct proto_read_piece gap[] = {{0, 4, false}, {5, 3, false}};
	struct proto_read_piece empty[] = {{0, 0, true}, {0, 8, false}};
	struct proto_read_piece short_[] = {{0, 4, false}};
	struct proto_read_piece longer[] = {{0, 4, false}, {4, 8, true}};
	struct proto_read_piece ok[] = {{0, 4, true}, {4, 4, false}};
	uint8_t data[8], hdr[64];
	struct iovec iov[4];

	cr_assert_eq(proto_frame_read(&req, true, gap, 2, data, hdr, sizeof(hdr), iov, 4), -EINVAL);
	cr_assert_eq(proto_frame_read(&req, true, empty, 2, data, hdr, sizeof(hdr), iov, 4),
	             -EINVAL);
	cr_assert_eq(proto_frame_read(&req, true, short_, 1, data, hdr, sizeof(hdr), iov, 4),
	             -EINVAL);
	cr_assert_eq(proto_frame_read(&req, true, longer, 2, data, hdr, sizeof(hdr), iov, 4),
	             -EINVAL);
	/* room: a hole takes 32 header bytes and one iovec, data 28 and two */
	cr_assert_eq(proto_frame_read(&req, true, ok, 2, data, hdr, 59, iov, 4), -ENOSPC);
	cr_assert_eq(proto_frame_read(&req, true, ok, 2, data, hdr, 60, iov, 2), -ENOSPC);
	cr_assert_eq(proto_frame_read(&req, true, ok, 2, data, hdr, 60, iov, 3), 3);
	cr_assert_eq(proto_frame_read(&req, false, ok, 2, data, hdr, 15, iov, 4), -ENOSPC);
	cr_assert_eq(proto_frame_read(&req, false, ok, 2, data, hdr, 16, iov, 1), -ENOSPC);
}
