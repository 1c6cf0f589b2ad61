/* SPDX-License-Identifier: MIT */
/*
 * proto_limits.h - every cap the NBD protocol machine puts on what a client
 * sends, with the reason for each.  Nothing is ever allocated from a client
 * length: the machine's buffers are sized from these caps at creation.
 */
#ifndef BLOCKD_PROTO_LIMITS_H
#define BLOCKD_PROTO_LIMITS_H

/*
 * Strings (export names, meta-context queries, descriptions): the NBD spec
 * says they MUST NOT exceed 4096 bytes.  Longer ones are consumed and
 * refused with ERR_INVALID (EXPORT_NAME cannot answer: it disconnects).
 */
#define PROTO_MAX_STRING 4096u

/*
 * Client strings echoed into error messages are cut to this many bytes, so
 * a message never grows with client input (CVE-2020-10761: qemu asserted
 * on a 4 KiB name echoed into a message longer than 4096 bytes).
 */
#define PROTO_MAX_ECHO 80u

/*
 * Meta-context queries in one LIST/SET_META_CONTEXT.  We offer one context
 * (base:allocation); real clients send one or two queries.  More are
 * consumed and refused with ERR_TOO_BIG, which bounds the work per option.
 */
#define PROTO_MAX_META_QUERIES 1024u

/*
 * Option data length above which the connection is dropped at the option
 * header, without reading the data (CVE-2017-15119: qemu read and discarded
 * up to 4 GiB).  The largest option we would parse in full is a
 * SET_META_CONTEXT with a 4096-byte name and PROTO_MAX_META_QUERIES queries
 * of 4096 bytes (about 4.2 MiB); 8 MiB leaves room and is still a bound.
 */
#define PROTO_MAX_OPTION_BYTES (8u << 20)

/*
 * WRITE payload (and READ length): 32 MiB, qemu's NBD_MAX_BUFFER_SIZE and
 * the largest request any client we know sends.  A WRITE announcing more
 * is a disconnect (its payload cannot be skipped cheaply); a READ asking
 * for more gets EINVAL.
 */
#define PROTO_MAX_PAYLOAD (32u << 20)

/*
 * Exports listed by one NBD_OPT_LIST: the list callback is asked for at
 * most this many entries, so a broken callback cannot loop forever.
 */
#define PROTO_MAX_LIST_EXPORTS 65536u

/*
 * A structured ERROR chunk (20-byte header + 6 + message) stays below 4096
 * bytes: messages are truncated to fit (see CVE-2020-10761 above).
 */
#define PROTO_MAX_ERROR_CHUNK 4095u
#define PROTO_MAX_ERROR_MSG   (PROTO_MAX_ERROR_CHUNK - 20u - 6u)

/*
 * Output buffer of one connection: the largest batch of bytes the machine
 * produces at once, INFO/GO replies with NAME and DESCRIPTION of 4096 bytes
 * each (8.3 KiB), or one LIST entry with a name and a description.
 */
#define PROTO_OUT_BYTES (16u << 10)

#endif
