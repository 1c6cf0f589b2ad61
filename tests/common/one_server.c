/* SPDX-License-Identifier: MIT */
/* one_server.c - a one-connection unix socket server for client tests (see one_server.h). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "one_server.h"

static void *serve(void *arg)
{
	struct one_server *s = arg;
	int conn = accept(s->fd, NULL, NULL);

	if (conn >= 0) {
		s->handle(s, conn);
		close(conn);
	}
	return NULL;
}

void one_server_start(struct one_server *s, const char *sock_name,
                      void (*handle)(struct one_server *s, int conn), void *data)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};

	memset(s, 0, sizeof(*s));
	snprintf(s->dir, sizeof(s->dir), "/tmp/test_common.XXXXXX");
	cr_assert_not_null(mkdtemp(s->dir));
	cr_assert_lt((size_t)snprintf(s->path, sizeof(s->path), "%s/%s", s->dir, sock_name),
	             sizeof(sa.sun_path));
	memcpy(sa.sun_path, s->path, strlen(s->path) + 1);
	s->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(s->fd, 0);
	cr_assert_eq(bind(s->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	cr_assert_eq(listen(s->fd, 4), 0);
	s->handle = handle;
	s->data = data;
	cr_assert_eq(pthread_create(&s->thread, NULL, serve, s), 0);
}

void one_server_stop(struct one_server *s)
{
	shutdown(s->fd, SHUT_RDWR); /* an accept() still waiting returns */
	pthread_join(s->thread, NULL);
	close(s->fd);
	unlink(s->path);
	rmdir(s->dir);
}

int one_server_put(int conn, const void *buf, size_t len)
{
	for (const char *p = buf; len > 0;) {
		ssize_t k = send(conn, p, len, MSG_NOSIGNAL);

		if (k <= 0)
			return -1;
		p += k;
		len -= (size_t)k;
	}
	return 0;
}

int one_server_get(int conn, void *buf, size_t len)
{
	for (char *p = buf; len > 0;) {
		ssize_t k = recv(conn, p, len, 0);

		if (k <= 0)
			return -1;
		p += k;
		len -= (size_t)k;
	}
	return 0;
}

void one_server_drain(int conn)
{
	char byte;

	while (recv(conn, &byte, 1, 0) > 0)
		;
}
