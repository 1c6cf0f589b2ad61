/* SPDX-License-Identifier: MIT */
/*
 * unixsock.h - listening unix sockets only their owner may use.
 */
#ifndef BLOCKD_UNIXSOCK_H
#define BLOCKD_UNIXSOCK_H

/*
 * A listening SOCK_STREAM unix socket at PATH, mode 0600 whatever the
 * umask, never reachable by others on the way; whatever was at PATH is
 * replaced (the caller knows no live server uses it).  FLAGS: SOCK_CLOEXEC,
 * SOCK_NONBLOCK.  Returns the descriptor, or -errno after logging why.
 * Thread-safe: it leaves the umask and the working directory alone.
 */
int unixsock_listen(const char *path, int flags);

#endif
