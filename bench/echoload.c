/* echoload: a load generator for echo servers, in C so that the client is never the bottleneck.
 *
 *   echoload HOST PORT rt   CONNECTIONS SECONDS [SIZE]   round trips: each connection sends SIZE bytes and waits
 *                                                       for them to come back, over and over
 *   echoload HOST PORT conn CONCURRENCY SECONDS [SIZE]   new connections: connect, one exchange, close, repeat
 *
 * Prints one line: "<mode> <count> <seconds> <per-second> <errors>". Loopback only; stops by itself after SECONDS.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int fd;
    size_t sent, got;
    int connecting;
} conn_t;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static struct sockaddr_in addr;
static int ep;
static size_t size = 64;
static char *buf, *rbuf;
static long errors;

static int open_conn(conn_t *c, int blocking_connect) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (!blocking_connect) fcntl(fd, F_SETFL, O_NONBLOCK);
    int r = connect(fd, (struct sockaddr *)&addr, sizeof addr);
    if (r < 0 && errno != EINPROGRESS) { close(fd); return -1; }
    if (blocking_connect) fcntl(fd, F_SETFL, O_NONBLOCK);
    c->fd = fd; c->sent = 0; c->got = 0; c->connecting = (r < 0);
    struct epoll_event ev = {.events = EPOLLIN | (c->connecting ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    return 0;
}

static void send_request(conn_t *c) {
    while (c->sent < size) {
        ssize_t n = send(c->fd, buf + c->sent, size - c->sent, MSG_NOSIGNAL);
        if (n <= 0) break;
        c->sent += n;
    }
    if (c->sent < size) {
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    }
}

int main(int argc, char **argv) {
    if (argc < 6) { fprintf(stderr, "usage: echoload HOST PORT rt|conn N SECONDS [SIZE]\n"); return 2; }
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons(atoi(argv[2]));
    inet_pton(AF_INET, argv[1], &addr.sin_addr);
    int conn_mode = strcmp(argv[3], "conn") == 0;
    int n = atoi(argv[4]);
    double seconds = atof(argv[5]);
    if (argc > 6) size = atol(argv[6]);
    buf = malloc(size); rbuf = malloc(65536);
    memset(buf, 'x', size);
    ep = epoll_create1(0);
    conn_t *conns = calloc(n, sizeof(conn_t));
    for (int i = 0; i < n; i++) {
        if (open_conn(&conns[i], !conn_mode) < 0) { fprintf(stderr, "connect failed\n"); return 1; }
        if (!conns[i].connecting) send_request(&conns[i]);
    }
    long count = 0;
    double start = now(), end = start + seconds;
    struct epoll_event events[1024];
    while (1) {
        double t = now();
        if (t >= end) break;
        int k = epoll_wait(ep, events, 1024, (int)((end - t) * 1000) + 1);
        for (int i = 0; i < k; i++) {
            conn_t *c = events[i].data.ptr;
            if (c->connecting && (events[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
                int err = 0; socklen_t len = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err) { errors++; close(c->fd); open_conn(c, 0); continue; }
                c->connecting = 0;
                struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                send_request(c);
                continue;
            }
            if (events[i].events & EPOLLOUT && c->sent < size) {
                send_request(c);
                if (c->sent == size) {
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                }
            }
            if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                ssize_t r = recv(c->fd, rbuf, 65536, 0);
                if (r > 0) {
                    c->got += r;
                    if (c->got >= size) {
                        count++;
                        if (conn_mode) {
                            close(c->fd);
                            open_conn(c, 0);
                            if (!c->connecting) send_request(c);
                        } else {
                            c->got = 0; c->sent = 0;
                            send_request(c);
                        }
                    }
                } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                    errors++;
                    close(c->fd);
                    open_conn(c, !conn_mode);
                    if (!c->connecting) send_request(c);
                }
            }
        }
    }
    double elapsed = now() - start;
    printf("%s %ld %.3f %.1f %ld\n", argv[3], count, elapsed, count / elapsed, errors);
    return 0;
}
