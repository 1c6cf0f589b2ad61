/* SPDX-License-Identifier: MIT */
/*
 * reply.c - transmission flags and the reply encoders (NBD protocol,
 * 'Transmission flags', 'Simple reply message', 'Structured reply chunk
 * message' and 'Structured reply types').  Pure functions: no state, no
 * allocation.  The encoders enforce
 * the chunk rules clients check strictly (libnbd drops the connection on a
 * violation): OFFSET_DATA/HOLE lengths > 0, extents > 0 and inside the
 * request (CVE-2025-47711: clamp what the backend says), error chunks
 * with a non-zero error and a bounded message.
 */
#include "internal.h"

uint16_t proto_tflags(const struct proto_export *e, bool structured)
{
	uint16_t f =
	    NBD_TFLAG_HAS_FLAGS | NBD_TFLAG_SEND_FLUSH | NBD_TFLAG_SEND_FUA | NBD_TFLAG_SEND_CACHE;

	if (e->read_only)
		f |= NBD_TFLAG_READ_ONLY;
	else
		f |= NBD_TFLAG_SEND_TRIM | NBD_TFLAG_SEND_WRITE_ZEROES | NBD_TFLAG_SEND_FAST_ZERO;
	if (structured)
		f |= NBD_TFLAG_SEND_DF;
	if (e->multi_conn)
		f |= NBD_TFLAG_CAN_MULTI_CONN;
	return f;
}

uint32_t proto_errno_to_wire(int err)
{
	switch (err < 0 ? -err : err) {
	case 0:
		return 0;
	case EPERM:
	case EROFS:
		return NBD_EPERM;
	case ENOMEM:
		return NBD_ENOMEM;
	case EINVAL:
		return NBD_EINVAL;
	case ENOSPC:
	case EFBIG:
	case EDQUOT:
		return NBD_ENOSPC;
	case EOVERFLOW:
		return NBD_EOVERFLOW;
	case ENOTSUP:
		return NBD_ENOTSUP;
	case ESHUTDOWN:
		return NBD_ESHUTDOWN;
	default:
		return NBD_EIO;
	}
}

int proto_encode_simple(uint8_t out[NBD_SIMPLE_REPLY_BYTES], uint64_t cookie, uint32_t nbd_error)
{
	put_be32(out, NBD_SIMPLE_MAGIC);
	put_be32(out + 4, nbd_error);
	put_be64(out + 8, cookie);
	return NBD_SIMPLE_REPLY_BYTES;
}

static void chunk_header(uint8_t *out, uint64_t cookie, bool done, uint16_t type, uint32_t len)
{
	put_be32(out, NBD_CHUNK_MAGIC);
	put_be16(out + 4, done ? NBD_REPLY_FLAG_DONE : 0);
	put_be16(out + 6, type);
	put_be64(out + 8, cookie);
	put_be32(out + 16, len);
}

int proto_encode_done(uint8_t out[NBD_CHUNK_HEADER_BYTES], uint64_t cookie)
{
	chunk_header(out, cookie, true, NBD_REPLY_TYPE_NONE, 0);
	return NBD_CHUNK_HEADER_BYTES;
}

int proto_encode_offset_data(uint8_t out[28], uint64_t cookie, bool done, uint64_t offset,
                             uint32_t data_len)
{
	if (data_len == 0 || data_len > UINT32_MAX - 8)
		return -EINVAL;
	chunk_header(out, cookie, done, NBD_REPLY_TYPE_OFFSET_DATA, 8 + data_len);
	put_be64(out + 20, offset);
	return 28;
}

int proto_encode_offset_hole(uint8_t out[32], uint64_t cookie, bool done, uint64_t offset,
                             uint32_t hole_len)
{
	if (hole_len == 0)
		return -EINVAL;
	chunk_header(out, cookie, done, NBD_REPLY_TYPE_OFFSET_HOLE, 12);
	put_be64(out + 20, offset);
	put_be32(out + 28, hole_len);
	return 32;
}

int proto_encode_block_status(uint8_t *out, size_t out_len, const struct proto_request *req,
                              bool done, uint32_t context_id, const struct proto_extent *ext,
                              size_t n_ext, uint64_t *covered)
{
	uint64_t left = req->length;
	size_t k = 0, room;

	if (out_len < NBD_CHUNK_HEADER_BYTES + 4 + 8)
		return -ENOSPC;
	room = (out_len - NBD_CHUNK_HEADER_BYTES - 4) / 8;
	for (size_t i = 0; i < n_ext && left && k < room; i++) {
		uint64_t len = ext[i].length;
		uint8_t *p = out + NBD_CHUNK_HEADER_BYTES + 4 + 8 * k;

		if (len == 0)
			continue;
		if (len > left)
			len = left; /* <= req->length, so fits in 32 bits */
		put_be32(p, (uint32_t)len);
		put_be32(p + 4, ext[i].flags);
		left -= len;
		k++;
		if (req->flags & NBD_CMD_FLAG_REQ_ONE)
			break;
	}
	if (k == 0)
		return -EINVAL;
	chunk_header(out, req->cookie, done, NBD_REPLY_TYPE_BLOCK_STATUS, (uint32_t)(4 + 8 * k));
	put_be32(out + NBD_CHUNK_HEADER_BYTES, context_id);
	if (covered)
		*covered = req->length - left;
	return (int)(NBD_CHUNK_HEADER_BYTES + 4 + 8 * k);
}

int proto_encode_error(uint8_t *out, size_t out_len, uint64_t cookie, bool done, uint32_t nbd_error,
                       const char *msg)
{
	size_t mlen = msg ? strnlen(msg, PROTO_MAX_ERROR_MSG) : 0;

	if (nbd_error == 0)
		return -EINVAL;
	if (out_len < NBD_CHUNK_HEADER_BYTES + 6)
		return -ENOSPC;
	if (mlen > out_len - NBD_CHUNK_HEADER_BYTES - 6)
		mlen = out_len - NBD_CHUNK_HEADER_BYTES - 6;
	chunk_header(out, cookie, done, NBD_REPLY_TYPE_ERROR, (uint32_t)(6 + mlen));
	put_be32(out + 20, nbd_error);
	put_be16(out + 24, (uint16_t)mlen);
	memcpy(out + 26, msg ? msg : "", mlen);
	return (int)(NBD_CHUNK_HEADER_BYTES + 6 + mlen);
}

int proto_encode_status(uint8_t *out, size_t out_len, uint64_t cookie, bool structured,
                        uint32_t nbd_error, const char *msg)
{
	if (!structured || nbd_error == 0) {
		if (out_len < NBD_SIMPLE_REPLY_BYTES)
			return -ENOSPC;
		return proto_encode_simple(out, cookie, nbd_error);
	}
	return proto_encode_error(out, out_len, cookie, true, nbd_error, msg);
}

static bool pieces_cover(const struct proto_request *req, const struct proto_read_piece *p,
                         size_t n)
{
	uint32_t pos = 0;

	for (size_t i = 0; i < n; i++) {
		if (p[i].pos != pos || p[i].len == 0 || p[i].len > req->length - pos)
			return false;
		pos += p[i].len;
	}
	return pos == req->length;
}

int proto_frame_read(const struct proto_request *req, bool structured,
                     const struct proto_read_piece *pieces, size_t n_pieces, uint8_t *data,
                     uint8_t *hdr, size_t hdr_len, struct iovec *iov, size_t max_iov)
{
	bool split = structured && !(req->flags & NBD_CMD_FLAG_DF);
	size_t n_iov = 0, used = 0;

	if (!pieces_cover(req, pieces, n_pieces))
		return -EINVAL;
	if (!split) {
		size_t need = structured ? 28 : NBD_SIMPLE_REPLY_BYTES;

		if (hdr_len < need || max_iov < 2)
			return -ENOSPC;
		for (size_t i = 0; i < n_pieces; i++)
			if (pieces[i].hole)
				memset(data + pieces[i].pos, 0, pieces[i].len);
		if (structured)
			proto_encode_offset_data(hdr, req->cookie, true, req->offset, req->length);
		else
			proto_encode_simple(hdr, req->cookie, 0);
		iov[0] = (struct iovec){hdr, need};
		iov[1] = (struct iovec){data, req->length};
		return 2;
	}
	for (size_t i = 0; i < n_pieces; i++) {
		const struct proto_read_piece *p = &pieces[i];
		bool done = i + 1 == n_pieces;
		size_t need = p->hole ? 32 : 28;

		if (hdr_len - used < need || max_iov - n_iov < (p->hole ? 1u : 2u))
			return -ENOSPC;
		if (p->hole)
			proto_encode_offset_hole(hdr + used, req->cookie, done,
			                         req->offset + p->pos, p->len);
		else
			proto_encode_offset_data(hdr + used, req->cookie, done,
			                         req->offset + p->pos, p->len);
		iov[n_iov++] = (struct iovec){hdr + used, need};
		if (!p->hole)
			iov[n_iov++] = (struct iovec){data + p->pos, p->len};
		used += need;
	}
	return (int)n_iov;
}
