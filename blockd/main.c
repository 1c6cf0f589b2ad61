/* SPDX-License-Identifier: MIT */
/*
 * main.c - blockd: options, data directory, listening sockets, signals.
 *
 *   blockd [--data-dir DIR] [--listen HOST:PORT] [--socket PATH] [--threads N]
 *          [--cache-size BYTES] [--max-client-connections N] [--idle-timeout SEC]
 *          [--payload-timeout SEC] [--log-level LEVEL]
 *
 * The main thread only waits for signals: SIGHUP rescans the volumes,
 * SIGTERM and SIGINT stop the workers (they finish what is in flight),
 * then every image is flushed and closed cleanly.  Once a second it also
 * has the store close volumes that have been idle a while.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <malloc.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "clients.h"
#include "control.h"
#include "daemon.h"
#include "datadir.h"
#include "daemon_limits.h"
#include "exec.h"
#include "log.h"
#include "manage.h"
#include "proto.h"
#include "size.h"
#include "store.h"
#include "unixsock.h"

#define DEFAULT_LISTEN "127.0.0.1:10809"

struct options {
	char data_dir[PATH_MAX];
	const char *listen;
	char socket_path[PATH_MAX];
	unsigned threads;
	uint64_t cache_bytes;
	unsigned max_client_connections;
	unsigned idle_timeout_sec;
	unsigned payload_timeout_sec;
};

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: blockd [--data-dir DIR] [--listen HOST:PORT] [--socket PATH]\n"
	        "              [--threads N] [--cache-size BYTES] [--max-client-connections N]\n"
	        "              [--idle-timeout SEC] [--payload-timeout SEC] [--log-level LEVEL]\n"
	        "\n"
	        "Serves the qcow2 volumes in DIR/volumes over NBD.\n"
	        "  --data-dir DIR      default /var/lib/blockd as root, else\n"
	        "                      $XDG_STATE_HOME/blockd or ~/.local/state/blockd\n"
	        "  --listen HOST:PORT  TCP address, default " DEFAULT_LISTEN " (\"none\": no TCP)\n"
	        "  --socket PATH       unix socket, default DIR/nbd.sock\n"
	        "  --threads N         event loops, default the number of CPUs\n"
	        "  --cache-size BYTES  metadata cache per volume (e.g. 64M), default 32M\n"
	        "  --max-client-connections N\n"
	        "                      connections one client (an IP address, a uid on the\n"
	        "                      unix socket) may hold at once, default %u\n"
	        "  --idle-timeout SEC  cut off a connection with nothing in flight after SEC\n"
	        "                      seconds without a byte, default %u (0: never)\n"
	        "  --payload-timeout SEC\n"
	        "                      cut off a connection whose write payload stops for SEC\n"
	        "                      seconds, default %u\n"
	        "  --log-level LEVEL   debug, info (default), warn or error\n",
	        DEFAULT_MAX_CLIENT_CONNECTIONS, DEFAULT_IDLE_TIMEOUT_SEC,
	        DEFAULT_PAYLOAD_TIMEOUT_SEC);
}

/* A decimal number in min..max for option NAME; -1 (and a message) if it is not one. */
static int parse_uint(const char *name, const char *arg, unsigned min, unsigned max, unsigned *out)
{
	unsigned long v;
	char *end;

	errno = 0;
	v = strtoul(arg, &end, 10);
	if (errno || *end || arg[0] < '0' || arg[0] > '9' || v < min || v > max) {
		fprintf(stderr, "blockd: --%s: expected %u to %u, got \"%s\"\n", name, min, max,
		        arg);
		return -1;
	}
	*out = (unsigned)v;
	return 0;
}

/* mkdir -p, mode 0700 for what it creates. */
static int make_dirs(const char *path)
{
	char buf[PATH_MAX];

	if ((size_t)snprintf(buf, sizeof(buf), "%s", path) >= sizeof(buf))
		return -ENAMETOOLONG;
	for (char *p = buf + 1;; p++) {
		if (*p == '/' || *p == '\0') {
			char saved = *p;

			*p = '\0';
			if (mkdir(buf, 0700) < 0 && errno != EEXIST)
				return -errno;
			*p = saved;
			if (saved == '\0')
				break;
		}
	}
	return 0;
}

static int parse_options(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = {
	    {"data-dir", required_argument, NULL, 'd'},
	    {"listen", required_argument, NULL, 'l'},
	    {"socket", required_argument, NULL, 's'},
	    {"threads", required_argument, NULL, 't'},
	    {"cache-size", required_argument, NULL, 'c'},
	    {"log-level", required_argument, NULL, 'L'},
	    {"max-client-connections", required_argument, NULL, 'C'},
	    {"idle-timeout", required_argument, NULL, 'I'},
	    {"payload-timeout", required_argument, NULL, 'P'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *sock = NULL;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	int opt, level;
	char *end;

	o->listen = DEFAULT_LISTEN;
	o->max_client_connections = DEFAULT_MAX_CLIENT_CONNECTIONS;
	o->idle_timeout_sec = DEFAULT_IDLE_TIMEOUT_SEC;
	o->payload_timeout_sec = DEFAULT_PAYLOAD_TIMEOUT_SEC;
	o->threads = cpus > 0 ? (unsigned)cpus : 1;
	if (o->threads > MAX_THREADS)
		o->threads = MAX_THREADS;
	o->data_dir[0] = '\0';
	while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (opt) {
		case 'd':
			if ((size_t)snprintf(o->data_dir, sizeof(o->data_dir), "%s", optarg) >=
			    sizeof(o->data_dir)) {
				fprintf(stderr, "blockd: --data-dir: path too long\n");
				return -1;
			}
			break;
		case 'l':
			o->listen = optarg;
			break;
		case 's':
			sock = optarg;
			break;
		case 't': {
			unsigned long v;

			errno = 0;
			v = strtoul(optarg, &end, 10);
			if (errno || *end || optarg[0] < '1' || optarg[0] > '9' ||
			    v > MAX_THREADS) {
				fprintf(stderr, "blockd: --threads: expected 1 to %u, got \"%s\"\n",
				        MAX_THREADS, optarg);
				return -1;
			}
			o->threads = (unsigned)v;
			break;
		}
		case 'c':
			if (size_parse(optarg, &o->cache_bytes) < 0 ||
			    o->cache_bytes < MIN_CACHE_BYTES) {
				fprintf(stderr,
				        "blockd: --cache-size: expected a size of at least 1M, got "
				        "\"%s\"\n",
				        optarg);
				return -1;
			}
			break;
		case 'C':
			if (parse_uint("max-client-connections", optarg, 1, MAX_CONNECTIONS,
			               &o->max_client_connections) < 0)
				return -1;
			break;
		case 'I':
			if (parse_uint("idle-timeout", optarg, 0, MAX_IDLE_TIMEOUT_SEC,
			               &o->idle_timeout_sec) < 0)
				return -1;
			break;
		case 'P':
			if (parse_uint("payload-timeout", optarg, 1, MAX_PAYLOAD_TIMEOUT_SEC,
			               &o->payload_timeout_sec) < 0)
				return -1;
			break;
		case 'L':
			level = log_parse_level(optarg);
			if (level < 0) {
				fprintf(stderr,
				        "blockd: --log-level: expected debug, info, warn or "
				        "error\n");
				return -1;
			}
			log_set_level((enum log_level)level);
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "blockd: unexpected argument \"%s\"\n", argv[optind]);
		usage(stderr);
		return -1;
	}
	if (!o->data_dir[0] && datadir_default(o->data_dir, sizeof(o->data_dir)) < 0) {
		fprintf(stderr, "blockd: no HOME or XDG_STATE_HOME: give --data-dir\n");
		return -1;
	}
	if ((size_t)snprintf(o->socket_path, sizeof(o->socket_path), "%s", sock ? sock : "") >=
	        sizeof(o->socket_path) ||
	    (!sock &&
	     datadir_nbd_socket(o->data_dir, o->socket_path, sizeof(o->socket_path)) < 0)) {
		fprintf(stderr, "blockd: socket path too long\n");
		return -1;
	}
	return 0;
}

/*
 * bind(2), waiting up to STALE_WAIT_MS while the address is in use: a port a
 * killed daemon's ring still listens on goes away within milliseconds.
 */
static int bind_waiting(int fd, const struct sockaddr *sa, socklen_t len)
{
	for (int waited = 0;; waited += STALE_RETRY_MS) {
		if (bind(fd, sa, len) == 0)
			return 0;
		if (errno != EADDRINUSE || waited >= STALE_WAIT_MS)
			return -1;
		usleep(STALE_RETRY_MS * 1000);
	}
}

static int listen_tcp(const char *spec, char *shown, size_t shown_len)
{
	char host[256], port[16];
	const char *colon = strrchr(spec, ':');
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
	                         .ai_socktype = SOCK_STREAM,
	                         .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	struct addrinfo *res;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	size_t hl;
	int fd, one = 1, rc;

	if (!colon || colon == spec || strlen(colon + 1) == 0 ||
	    strlen(colon + 1) >= sizeof(port)) {
		log_error("--listen: expected HOST:PORT, got \"%s\"", spec);
		return -1;
	}
	hl = (size_t)(colon - spec);
	if (spec[0] == '[' && hl >= 2 && spec[hl - 1] == ']') {
		spec++;
		hl -= 2;
	}
	if (hl >= sizeof(host)) {
		log_error("--listen: host too long");
		return -1;
	}
	memcpy(host, spec, hl);
	host[hl] = '\0';
	strcpy(port, colon + 1);
	rc = getaddrinfo(host, port, &hints, &res);
	if (rc != 0) {
		log_error("--listen %s: %s", spec, gai_strerror(rc));
		return -1;
	}
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind_waiting(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
		log_error("cannot listen on %s:%s: %s", host, port, strerror(errno));
		if (fd >= 0)
			close(fd);
		freeaddrinfo(res);
		return -1;
	}
	freeaddrinfo(res);
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
		char addr[INET6_ADDRSTRLEN];
		unsigned p;

		if (ss.ss_family == AF_INET) {
			struct sockaddr_in *in = (struct sockaddr_in *)&ss;

			inet_ntop(AF_INET, &in->sin_addr, addr, sizeof(addr));
			p = ntohs(in->sin_port);
			snprintf(shown, shown_len, "%s:%u", addr, p);
		} else {
			struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;

			inet_ntop(AF_INET6, &in6->sin6_addr, addr, sizeof(addr));
			p = ntohs(in6->sin6_port);
			snprintf(shown, shown_len, "[%s]:%u", addr, p);
		}
		log_info("listening on %s", shown);
	}
	return fd;
}

static int listen_unix(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		log_error("unix socket path %s is longer than %zu bytes", path,
		          sizeof(sa.sun_path) - 1);
		return -1;
	}
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	/*
	 * A socket left by a daemon that died is replaced; a live one is not.
	 * A daemon killed a moment ago may still accept for a while: its
	 * io_uring, which holds the listening socket, is torn down after the
	 * process is gone.  So a connectable socket is asked again for up to
	 * STALE_WAIT_MS before it counts as another server's.
	 */
	for (int waited = 0; connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	     waited += STALE_RETRY_MS) {
		close(fd);
		if (waited >= STALE_WAIT_MS) {
			log_error("%s: another server is listening there", path);
			return -1;
		}
		usleep(STALE_RETRY_MS * 1000);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -1;
	}
	close(fd);
	fd = unixsock_listen(path, SOCK_CLOEXEC); /* 0600, like control.sock */
	if (fd < 0)
		return -1;
	log_info("listening on %s", path);
	return fd;
}

/*
 * Waits for signals until asked to stop; SIGHUP rescans.  Once a second
 * it lets the store close idle volumes.  -1 if it cannot wait.
 */
static int wait_for_stop(struct manager *m, struct store *st)
{
	sigset_t set;
	struct signalfd_siginfo si;
	int sfd;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sfd = signalfd(-1, &set, SFD_CLOEXEC);
	if (sfd < 0) {
		log_error("signalfd: %s", strerror(errno));
		return -1;
	}
	for (;;) {
		struct pollfd pfd = {.fd = sfd, .events = POLLIN};
		int ready = poll(&pfd, 1, 1000);
		ssize_t n;

		if (ready <= 0) {
			if (ready < 0 && errno != EINTR)
				break;
			store_tick(st);
			continue;
		}
		n = read(sfd, &si, sizeof(si));
		if (n < 0 && errno == EINTR)
			continue;
		if (n != (ssize_t)sizeof(si))
			break;
		if (si.ssi_signo == SIGHUP) {
			int added = manage_rescan(m);

			log_info("rescan: %d new volume(s)", added < 0 ? 0 : added);
			continue;
		}
		log_info("%s: stopping", strsignal((int)si.ssi_signo));
		break;
	}
	close(sfd);
	return 0;
}

/* Room for MAX_CONNECTIONS sockets plus a few descriptors per volume. */
static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			log_warn("cannot raise the open-file limit: %s", strerror(errno));
	}
}

int main(int argc, char **argv)
{
	struct options o = {0};
	struct daemon d = {.listen_fd = {-1, -1}};
	struct store_config scfg;
	struct worker *workers[MAX_THREADS];
	char lock_path[PATH_MAX + 16], control_path[PATH_MAX + 16], tcp_shown[300] = "";
	struct control *ctl = NULL;
	struct manager *m = NULL;
	unsigned started = 0;
	sigset_t set;
	int lock_fd, rc, status = 0;

	if (parse_options(argc, argv, &o) < 0)
		return 2;
	raise_fd_limit();
	mallopt(M_MMAP_THRESHOLD, (int)HEAP_MMAP_THRESHOLD_BYTES);
	mallopt(M_TRIM_THRESHOLD, (int)HEAP_TRIM_THRESHOLD_BYTES);
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL); /* threads inherit it; signalfd reads them */

	rc = make_dirs(o.data_dir);
	if (rc < 0) {
		log_error("cannot create data directory %s: %s", o.data_dir, strerror(-rc));
		return 1;
	}
	snprintf(lock_path, sizeof(lock_path), "%s/blockd.lock", o.data_dir);
	lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (lock_fd < 0 || flock(lock_fd, LOCK_EX | LOCK_NB) < 0) {
		log_error("%s: %s", o.data_dir,
		          errno == EWOULDBLOCK ? "another blockd is using this data directory"
		                               : strerror(errno));
		return 1;
	}
	log_info("data directory %s", o.data_dir);

	d.idle_timeout_sec = o.idle_timeout_sec;
	d.payload_timeout_sec = o.payload_timeout_sec;
	rc = clients_new(o.max_client_connections, &d.clients);
	if (rc < 0) {
		log_error("cannot start: %s", strerror(-rc));
		return 1;
	}
	rc = exec_new(POOL_THREADS_PER_LOOP * o.threads + POOL_THREADS_EXTRA, &d.exec);
	if (rc < 0) {
		log_error("cannot start threads: %s", strerror(-rc));
		clients_free(d.clients);
		return 1;
	}
	scfg = (struct store_config){
	    .data_dir = o.data_dir, .cache_bytes = o.cache_bytes, .exec = d.exec};
	rc = store_open(&scfg, &d.store);
	if (rc < 0) {
		exec_free(d.exec);
		clients_free(d.clients);
		return 1;
	}
	rc = manage_new(d.store, &m);
	if (rc < 0)
		status = 1;
	if (status == 0 && strcmp(o.listen, "none") != 0) {
		d.listen_fd[0] = listen_tcp(o.listen, tcp_shown, sizeof(tcp_shown));
		if (d.listen_fd[0] < 0)
			status = 1;
	}
	if (status == 0) {
		d.listen_fd[1] = listen_unix(o.socket_path);
		if (d.listen_fd[1] < 0)
			status = 1;
	}
	if (status == 0 &&
	    (datadir_control_socket(o.data_dir, control_path, sizeof(control_path)) < 0 ||
	     control_start(d.store, m, &d, control_path, tcp_shown[0] ? tcp_shown : NULL,
	                   o.socket_path, &ctl) < 0))
		status = 1;
	for (; status == 0 && started < o.threads; started++) {
		rc = worker_start(&d, started, &workers[started]);
		if (rc < 0) {
			log_error("cannot start worker %u: %s", started, strerror(-rc));
			status = 1;
			break;
		}
	}
	if (status == 0) {
		log_info("ready: %u worker(s)", started);
		if (wait_for_stop(m, d.store) < 0)
			status = 1;
	}

	if (ctl)
		control_stop(ctl);
	atomic_store(&d.stopping, true);
	for (unsigned i = 0; i < started; i++)
		worker_wake(workers[i]);
	for (unsigned i = 0; i < started; i++)
		worker_join(workers[i]);
	for (int i = 0; i < DAEMON_LISTENERS; i++)
		if (d.listen_fd[i] >= 0)
			close(d.listen_fd[i]);
	if (d.listen_fd[1] >= 0)
		unlink(o.socket_path);
	exec_free(d.exec); /* runs what is queued: volumes let go of last */
	if (store_close(d.store) < 0)
		status = 1;
	if (m)
		manage_free(m);
	clients_free(d.clients);
	log_info("stopped");
	close(lock_fd);
	return status;
}
