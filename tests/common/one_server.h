/* SPDX-License-Identifier: MIT */
/*
 * one_server.h - a server for client tests: a unix socket in a fresh
 * folder under /tmp and a thread that accepts one connection and hands it
 * to the test's handler.  Failures to set it up fail the test.
 */
#ifndef BLOCKD_TESTS_ONE_SERVER_H
#define BLOCKD_TESTS_ONE_SERVER_H

#include <pthread.h>
#include <stddef.h>

struct one_server {
	char dir[64];
	char path[96]; /* the socket */
	int fd;
	pthread_t thread;
	void (*handle)(struct one_server *s, int conn); /* conn is closed after it returns */
	void *data;                                     /* the handler's */
};

/* Listens on DIR/sock_name and serves one connection with handle. */
void one_server_start(struct one_server *s, const char *sock_name,
                      void (*handle)(struct one_server *s, int conn), void *data);

/* Stops listening, waits for the handler and removes the socket and its folder. */
void one_server_stop(struct one_server *s);

/* All of buf to conn: 0, or -1 when the client went away. */
int one_server_put(int conn, const void *buf, size_t len);

/* len bytes from conn into buf: 0, or -1 when the client went away first. */
int one_server_get(int conn, void *buf, size_t len);

/* Reads and drops what conn sends until the client closes it. */
void one_server_drain(int conn);

#endif
