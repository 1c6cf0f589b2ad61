/* SPDX-License-Identifier: MIT */
/*
 * unixsock.c - unix sockets born 0600.
 *
 * bind(2) gives a unix socket the mode 0777 minus the umask, and a socket's
 * mode cannot be set before it has a name.  A chmod after bind leaves a
 * window where the socket is as open as the umask allows; a temporary
 * umask closes it but is the whole process's, and other threads run.  So
 * the socket is bound in a fresh directory only we may enter (made beside
 * PATH, so that the rename stays on one filesystem), set to 0600 there,
 * made to listen, and renamed into place: at PATH it is 0600 and accepting
 * from its first moment.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon_limits.h"
#include "log.h"
#include "unixsock.h"

int unixsock_listen(const char *path, int flags)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	char dir[sizeof(sa.sun_path) - sizeof("/s") + 1]; /* room for DIR/s in sun_path */
	const char *slash = strrchr(path, '/');
	int fd = -1, rc, n;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		log_error("unix socket path %s is longer than %zu bytes", path,
		          sizeof(sa.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	/* The private directory: PATH's directory, then .blockd-XXXXXX. */
	if (slash)
		n = snprintf(dir, sizeof(dir), "%.*s/.blockd-XXXXXX", (int)(slash - path), path);
	else
		n = snprintf(dir, sizeof(dir), ".blockd-XXXXXX");
	if (n < 0 || (size_t)n >= sizeof(dir)) {
		log_error("unix socket path %s: its directory's name is too long (the socket is "
		          "made as DIR/.blockd-XXXXXX/s first, at most %zu bytes)",
		          path, sizeof(sa.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	if (!mkdtemp(dir)) {
		rc = -errno;
		log_error("cannot listen on %s: cannot make a private directory beside it: %s",
		          path, strerror(-rc));
		return rc;
	}
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/s", dir);
	/* mkdtemp's 0700 minus the umask: the owner needs in, whatever the umask. */
	if (chmod(dir, 0700) < 0 || (fd = socket(AF_UNIX, SOCK_STREAM | flags, 0)) < 0 ||
	    bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || chmod(sa.sun_path, 0600) < 0 ||
	    listen(fd, LISTEN_BACKLOG) < 0 || rename(sa.sun_path, path) < 0) {
		rc = -errno;
		log_error("cannot listen on %s: %s", path, strerror(-rc));
		if (fd >= 0)
			close(fd);
		unlink(sa.sun_path);
		rmdir(dir);
		return rc;
	}
	rmdir(dir);
	return fd;
}
