/* dnsload: a UDP load generator for DNS servers, in C so that the client is never the bottleneck (dnsperf was:
 * it sat at ~99 % of its core against NSD, Knot and sockhop, so its figures were its own cap).
 *
 *   dnsload HOST PORT QUERYFILE SECONDS [-q OUTSTANDING] [-s SOCKETS] [-t TIMEOUT] [-g GATHER] [-G 0|1] [-e] [-D]
 *           [-b SOURCE]
 *
 * QUERYFILE is in dnsperf's format: one question a line, "name TYPE" (blank lines and '#' comments skipped). Each
 * is encoded once, as dnsperf sends it by default: RD set, one question, class IN, no EDNS (-e adds an OPT record
 * with a 1232-byte payload, like dnsperf -e; -D also sets its DO bit, like dnsperf -D). The questions are sent in
 * file order, round and round. -b binds the sockets to a source address (any of 127.0.0.0/8: another client).
 *
 * Closed loop: OUTSTANDING queries (default 100, like dnsperf -q 100) are always in flight, spread over SOCKETS
 * connected UDP sockets (default 4: distinct source ports), sent and received in batches (sendmmsg, recvmmsg,
 * epoll). Each in-flight query has an ID unique on its socket; a reply is matched by socket and ID, and only counts
 * if it is a response (QR), a standard query's (opcode 0), to the very question asked. Each reply, or a query
 * unanswered after TIMEOUT seconds (default 1: it counts as lost), sends the next question in its place, so the
 * window never shrinks.
 *
 * Over loopback the kernel's per-datagram work is nearly all of a client's CPU: each send also runs the IP receive
 * path up to the server's socket on the client's core. Two things keep dnsload's share of it small:
 * - replies are gathered, as a network card moderates its interrupts: after each round dnsload sleeps until about
 *   GATHER of the window (default 0.25) can have come back at the rate so far (at most 1 ms), so that one wake-up,
 *   one recvmmsg and one sendmmsg handle a quarter of the window instead of one reply each -- while the other three
 *   quarters stay queued at the server, which therefore never runs dry (-g 0: answer each wake-up at once);
 * - queries of one length go out as one UDP_SEGMENT train (generic segmentation offload): IP output, the loopback
 *   device and IP input run once per train, and the train is cut into one datagram per query just before the
 *   server's socket, which receives exactly the datagrams it would otherwise (-G 0: one sendmmsg entry per query;
 *   kernels before 4.18 fall back to that by themselves).
 *
 * Prints one line of key=value fields:
 *   answered=N lost=N seconds=S cpu=S noerror=N nxdomain=N other=N invalid=N sent=N rounds=N bytes_out=N
 *   bytes_in=N truncated=N
 * answered = NOERROR + NXDOMAIN replies (the only ones that score); other = replies with any other RCODE (SERVFAIL,
 * REFUSED...); invalid = datagrams that are no reply to an outstanding question (malformed, unknown or late ID,
 * wrong question); cpu = dnsload's own user+system CPU seconds; rounds = wake-ups (sent / rounds: the batch);
 * bytes_out and bytes_in = DNS message bytes sent and received (what an amplifier multiplies); truncated = replies
 * with TC set (a rate limiter's slipped answers among them).
 * Loopback only; stops by itself after SECONDS.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_QUERY 512  /* a query: header, one question of at most 255 bytes of name, an OPT record */
#define MAX_REPLY 4096 /* a UDP reply (512 bytes without EDNS, 1232 with ours; bigger is read and truncated) */
#define BATCH 64       /* datagrams per sendmmsg / recvmmsg */
#define MAX_SOCKETS 64

typedef struct {
    uint8_t bytes[MAX_QUERY];
    uint16_t len;  /* the whole query */
    uint16_t qlen; /* its question: name, type, class (what the reply must repeat) */
} query_t;

enum { PENDING, INFLIGHT };

typedef struct {
    int sock;       /* index of the socket this slot of the window sends on */
    int state;      /* PENDING: waiting to be sent; INFLIGHT: sent, awaiting its reply */
    uint16_t id;    /* while in flight */
    uint32_t query; /* index into queries */
    double sent_at;
    uint8_t buf[MAX_QUERY];
} slot_t;

typedef struct {
    int fd;
    uint16_t next_id;
    int32_t *slot_of; /* 65536 entries: the slot in flight with that ID, or -1 */
    int *pending;     /* stack of slots waiting to be sent */
    int npending;
} sock_t;

static query_t *queries;
static size_t nqueries, next_query;
static slot_t *slots;
static sock_t socks[MAX_SOCKETS];
static long answered, lost, noerror, nxdomain, other, invalid, sent, rounds, bytes_out, bytes_in, truncated;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int qtype(const char *name) {
    static const struct { const char *name; int code; } types[] = {
        {"A", 1}, {"NS", 2}, {"CNAME", 5}, {"SOA", 6}, {"PTR", 12}, {"MX", 15}, {"TXT", 16}, {"AAAA", 28},
        {"SRV", 33}, {"NAPTR", 35}, {"DS", 43}, {"RRSIG", 46}, {"DNSKEY", 48}, {"SVCB", 64}, {"HTTPS", 65},
        {"ANY", 255}, {"CAA", 257},
    };
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (strcasecmp(name, types[i].name) == 0) return types[i].code;
    if (strncasecmp(name, "TYPE", 4) == 0 && isdigit((unsigned char)name[4])) return atoi(name + 4);
    return -1;
}

/* Encode "name TYPE" into q; 0 on success, -1 (with a message) if the line is no question. */
static int encode(query_t *q, const char *name, const char *type, int edns, int lineno) {
    int code = qtype(type);
    if (code < 0 || code > 65535) { fprintf(stderr, "dnsload: line %d: unknown type %s\n", lineno, type); return -1; }
    uint8_t *p = q->bytes;
    memset(p, 0, 12);
    p[2] = 0x01;                  /* RD */
    p[5] = 1;                     /* QDCOUNT */
    p[11] = edns ? 1 : 0;         /* ARCOUNT */
    size_t at = 12, start = 12;
    const char *label = name;
    while (*label) {
        const char *dot = strchr(label, '.');
        size_t n = dot ? (size_t)(dot - label) : strlen(label);
        if (n == 0 || n > 63 || at - start + n + 2 > 255) {
            fprintf(stderr, "dnsload: line %d: bad name %s\n", lineno, name);
            return -1;
        }
        p[at++] = (uint8_t)n;
        memcpy(p + at, label, n);
        at += n;
        label += n + (dot != NULL);
    }
    p[at++] = 0;
    p[at++] = code >> 8; p[at++] = code & 0xff;
    p[at++] = 0; p[at++] = 1; /* class IN */
    q->qlen = at - 12;
    if (edns) { /* OPT: root name, type 41, payload 1232, extended rcode/version 0, flags (DO with -D), no options */
        static const uint8_t opt[] = {0, 0, 41, 1232 >> 8, 1232 & 0xff, 0, 0, 0, 0, 0, 0};
        memcpy(p + at, opt, sizeof opt);
        if (edns == 2) p[at + 7] = 0x80;
        at += sizeof opt;
    }
    q->len = at;
    return 0;
}

static int load_queries(const char *path, int edns) {
    FILE *f = fopen(path, "r");
    if (!f) { fprintf(stderr, "dnsload: %s: %s\n", path, strerror(errno)); return -1; }
    size_t cap = 1024;
    queries = malloc(cap * sizeof *queries);
    char line[1024], name[512], type[64];
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char *s = line;
        while (isspace((unsigned char)*s)) s++;
        if (*s == '\0' || *s == '#') continue;
        if (sscanf(s, "%511s %63s", name, type) != 2) {
            fprintf(stderr, "dnsload: line %d: expected \"name TYPE\"\n", lineno);
            fclose(f);
            return -1;
        }
        if (nqueries == cap) queries = realloc(queries, (cap *= 2) * sizeof *queries);
        if (encode(&queries[nqueries], name, type, edns, lineno) < 0) { fclose(f); return -1; }
        nqueries++;
    }
    fclose(f);
    if (nqueries == 0) { fprintf(stderr, "dnsload: %s: no questions\n", path); return -1; }
    return 0;
}

/* The next free ID on socket s (IDs go round, so a late reply is unlikely to meet its ID reused). */
static uint16_t take_id(sock_t *s) {
    while (s->slot_of[s->next_id] >= 0) s->next_id++;
    return s->next_id++;
}

/* Send every pending slot of socket si, in batches; what the kernel refuses stays pending for the next round.
 * With gso, the queries of one length in a batch go out as one UDP_SEGMENT train (see the top of the file). */
static int gso = 1;

static void flush(int si, double t) {
    sock_t *s = &socks[si];
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    int batch[BATCH], first[BATCH + 1];
    union { char buf[CMSG_SPACE(sizeof(uint16_t))]; struct cmsghdr align; } control[BATCH];
    while (s->npending > 0) {
        int n = s->npending < BATCH ? s->npending : BATCH;
        for (int i = 0; i < n; i++) { /* the top n of the stack, in order of length (insertion sort: n <= 64) */
            int k = s->pending[s->npending - 1 - i], j = i;
            if (gso)
                for (; j > 0 && queries[slots[batch[j - 1]].query].len > queries[slots[k].query].len; j--)
                    batch[j] = batch[j - 1];
            batch[j] = k;
        }
        int groups = 0;
        for (int i = 0; i < n; i++) {
            slot_t *sl = &slots[batch[i]];
            query_t *q = &queries[sl->query];
            memcpy(sl->buf, q->bytes, q->len);
            sl->id = take_id(s);
            s->slot_of[sl->id] = batch[i]; /* reserved now; released below if not sent */
            sl->buf[0] = sl->id >> 8;
            sl->buf[1] = sl->id & 0xff;
            iov[i] = (struct iovec){.iov_base = sl->buf, .iov_len = q->len};
            if (i > 0 && gso && q->len == queries[slots[batch[i - 1]].query].len) {
                msgs[groups - 1].msg_hdr.msg_iovlen++;
                continue;
            }
            first[groups] = i;
            memset(&msgs[groups], 0, sizeof msgs[groups]);
            msgs[groups].msg_hdr.msg_iov = &iov[i];
            msgs[groups].msg_hdr.msg_iovlen = 1;
            groups++;
        }
        first[groups] = n;
        for (int g = 0; gso && g < groups; g++) {
            if (msgs[g].msg_hdr.msg_iovlen < 2) continue;
            struct msghdr *h = &msgs[g].msg_hdr;
            h->msg_control = control[g].buf;
            h->msg_controllen = sizeof control[g].buf;
            struct cmsghdr *c = CMSG_FIRSTHDR(h);
            c->cmsg_level = SOL_UDP;
            c->cmsg_type = UDP_SEGMENT;
            c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
            uint16_t size = iov[first[g]].iov_len;
            memcpy(CMSG_DATA(c), &size, sizeof size);
        }
        int done = sendmmsg(s->fd, msgs, groups, MSG_DONTWAIT);
        if (done < 0 && gso && (errno == EINVAL || errno == ENOPROTOOPT || errno == EIO))
            gso = 0; /* a kernel without UDP_SEGMENT (before 4.18): one datagram per query from the next round */
        if (done < 0) done = 0;
        for (int i = 0; i < n; i++) {
            slot_t *sl = &slots[batch[i]];
            if (i < first[done]) {
                sl->state = INFLIGHT;
                sl->sent_at = t;
                bytes_out += iov[i].iov_len;
            } else {
                s->slot_of[sl->id] = -1;
            }
        }
        s->npending -= n; /* and those not sent go back on the stack */
        for (int i = first[done]; i < n; i++) s->pending[s->npending++] = batch[i];
        sent += first[done];
        if (done < groups) return; /* a full buffer, or an ICMP error on this socket: again next round */
    }
}

/* Slot k gets the next question and waits to be sent. */
static void refill(int k) {
    slot_t *sl = &slots[k];
    sl->state = PENDING;
    sl->query = next_query;
    next_query = (next_query + 1) % nqueries;
    sock_t *s = &socks[sl->sock];
    s->pending[s->npending++] = k;
}

/* Does the reply at p (len bytes) repeat question q? The name case-insensitively (a server may answer in its own
 * case; label lengths are below 64, so never letters), then type and class exactly. */
static int same_question(const uint8_t *p, size_t len, const query_t *q) {
    if (len < 12u + q->qlen || p[4] != 0 || p[5] != 1) return 0; /* exactly one question */
    for (size_t i = 12; i < 12u + q->qlen - 4; i++)
        if (tolower(p[i]) != tolower(q->bytes[i])) return 0;
    return memcmp(p + 12 + q->qlen - 4, q->bytes + 12 + q->qlen - 4, 4) == 0;
}

static void reply(int si, const uint8_t *p, size_t len) {
    sock_t *s = &socks[si];
    bytes_in += len;
    if (len < 12) { invalid++; return; }
    if (p[2] & 0x02) truncated++;
    uint16_t id = (p[0] << 8) | p[1];
    int32_t k = s->slot_of[id];
    if (k < 0 || slots[k].state != INFLIGHT || !(p[2] & 0x80) || (p[2] & 0x78) != 0) { invalid++; return; }
    if (!same_question(p, len, &queries[slots[k].query])) { invalid++; return; }
    int rcode = p[3] & 0x0f;
    if (rcode == 0) noerror++;
    else if (rcode == 3) nxdomain++;
    else other++;
    s->slot_of[id] = -1;
    refill(k);
}

static void usage(void) {
    fprintf(stderr, "usage: dnsload HOST PORT QUERYFILE SECONDS "
                    "[-q OUTSTANDING] [-s SOCKETS] [-t TIMEOUT] [-g GATHER] [-G 0|1] [-e] [-D] [-b SOURCE]\n");
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 5) usage();
    int outstanding = 100, nsocks = 4, edns = 0;
    const char *source = NULL;
    double timeout = 1.0, gather = 0.25;
    for (int i = 5; i < argc; i++) {
        if (strcmp(argv[i], "-e") == 0) edns = edns ? edns : 1;
        else if (strcmp(argv[i], "-D") == 0) edns = 2;
        else if (i + 1 >= argc) usage();
        else if (strcmp(argv[i], "-b") == 0) source = argv[++i];
        else if (strcmp(argv[i], "-q") == 0) outstanding = atoi(argv[++i]);
        else if (strcmp(argv[i], "-s") == 0) nsocks = atoi(argv[++i]);
        else if (strcmp(argv[i], "-t") == 0) timeout = atof(argv[++i]);
        else if (strcmp(argv[i], "-g") == 0) gather = atof(argv[++i]);
        else if (strcmp(argv[i], "-G") == 0) gso = atoi(argv[++i]);
        else usage();
    }
    double seconds = atof(argv[4]);
    if (outstanding < 1 || nsocks < 1 || nsocks > MAX_SOCKETS || timeout <= 0 || seconds <= 0 || gather < 0) usage();
    if (nsocks > outstanding) nsocks = outstanding;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &addr.sin_addr) != 1) {
        fprintf(stderr, "dnsload: bad address %s\n", argv[1]);
        return 2;
    }
    if (load_queries(argv[3], edns) < 0) return 1;

    prctl(PR_SET_TIMERSLACK, 1UL);
    int ep = epoll_create1(0);
    for (int i = 0; i < nsocks; i++) {
        sock_t *s = &socks[i];
        s->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        struct sockaddr_in from = {.sin_family = AF_INET};
        if (source && inet_pton(AF_INET, source, &from.sin_addr) != 1) {
            fprintf(stderr, "dnsload: bad source address %s\n", source);
            return 2;
        }
        if (s->fd < 0 || (source && bind(s->fd, (struct sockaddr *)&from, sizeof from) < 0) ||
            connect(s->fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
            fprintf(stderr, "dnsload: socket: %s\n", strerror(errno));
            return 1;
        }
        int size = 1 << 20;
        setsockopt(s->fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
        setsockopt(s->fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
        s->slot_of = malloc(65536 * sizeof *s->slot_of);
        memset(s->slot_of, 0xff, 65536 * sizeof *s->slot_of);
        s->pending = malloc(outstanding * sizeof *s->pending);
        s->next_id = (uint16_t)(i * 7919); /* distinct starts, for nothing but readable captures */
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev);
    }
    slots = calloc(outstanding, sizeof *slots);
    for (int k = 0; k < outstanding; k++) {
        slots[k].sock = k % nsocks;
        refill(k);
    }

    static uint8_t rbuf[BATCH][MAX_REPLY];
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    struct epoll_event events[MAX_SOCKETS];
    double start = now(), end = start + seconds, t = start, last_scan = start;
    for (int i = 0; i < nsocks; i++) flush(i, t);
    while (t < end) {
        int wait_ms = (int)((end - t) * 1000) + 1;
        if (wait_ms > 10) wait_ms = 10; /* wake for the timeout scan and for sends a full buffer held back */
        int k = epoll_wait(ep, events, MAX_SOCKETS, wait_ms);
        rounds++;
        t = now();
        for (int e = 0; e < k; e++) {
            int si = events[e].data.u32;
            for (;;) {
                for (int i = 0; i < BATCH; i++) {
                    iov[i] = (struct iovec){.iov_base = rbuf[i], .iov_len = MAX_REPLY};
                    memset(&msgs[i], 0, sizeof msgs[i]);
                    msgs[i].msg_hdr.msg_iov = &iov[i];
                    msgs[i].msg_hdr.msg_iovlen = 1;
                }
                int n = recvmmsg(socks[si].fd, msgs, BATCH, MSG_DONTWAIT, NULL);
                if (n <= 0) break; /* EAGAIN; or ECONNREFUSED (nothing listening): those queries will time out */
                for (int i = 0; i < n; i++) reply(si, rbuf[i], msgs[i].msg_len);
                if (n < BATCH) break;
            }
        }
        if (t - last_scan >= 0.01) {
            last_scan = t;
            for (int s = 0; s < outstanding; s++) {
                if (slots[s].state == INFLIGHT && t - slots[s].sent_at >= timeout) {
                    lost++;
                    socks[slots[s].sock].slot_of[slots[s].id] = -1;
                    refill(s);
                }
            }
        }
        for (int i = 0; i < nsocks; i++)
            if (socks[i].npending) flush(i, t);
        double got = noerror + nxdomain + other;
        if (gather > 0 && got > outstanding) { /* the rate so far says how long a share of the window takes */
            double rest = gather * outstanding / (got / (t - start)) - (now() - t);
            if (rest > 0.001) rest = 0.001;
            if (rest > 0) {
                struct timespec ts = {0, (long)(rest * 1e9)};
                nanosleep(&ts, NULL);
            }
        }
    }
    double elapsed = now() - start;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    answered = noerror + nxdomain;
    printf("answered=%ld lost=%ld seconds=%.3f cpu=%.3f noerror=%ld nxdomain=%ld other=%ld invalid=%ld sent=%ld "
           "rounds=%ld bytes_out=%ld bytes_in=%ld truncated=%ld\n", answered, lost, elapsed, cpu, noerror, nxdomain,
           other, invalid, sent, rounds, bytes_out, bytes_in, truncated);
    return 0;
}
