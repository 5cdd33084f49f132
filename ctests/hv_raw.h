/*
 * hv_raw.h - a minimal RESP2 client for the C tests (header only): a second connection to the
 * test server, to look at or damage what the library stored, or to pause and kill its clients.
 * Enough for commands with simple, error, integer and bulk string replies.
 */
#ifndef HV_RAW_H
#define HV_RAW_H

#include "hv_test.h"

#include <netdb.h>
#include <sys/socket.h>
#include <sys/types.h>

typedef struct raw {
    int fd;
    char buf[4096];
    size_t len, pos;
} raw;

typedef struct reply {
    char type;        /* '+', '-', ':', '$' */
    long long number; /* ':' value, or the length of a '$' string (-1: nil) */
    char *data;       /* '+', '-', '$' payload (NUL-terminated), malloc'ed */
} reply;

static inline void raw_connect(raw *r) {
    char port[16];
    struct addrinfo hints, *res = NULL;
    snprintf(port, sizeof port, "%d", (int)hv_port());
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    CHECK(getaddrinfo(hv_host(), port, &hints, &res) == 0 && res != NULL);
    r->fd = socket(res->ai_family, res->ai_socktype, res->ai_protocol);
    CHECK(r->fd >= 0);
    CHECK(connect(r->fd, res->ai_addr, res->ai_addrlen) == 0);
    freeaddrinfo(res);
    r->len = r->pos = 0;
}

static inline int raw_byte(raw *r) {
    if (r->pos == r->len) {
        ssize_t n = recv(r->fd, r->buf, sizeof r->buf, 0);
        CHECKF(n > 0, "raw connection: recv returned %ld", (long)n);
        r->len = (size_t)n;
        r->pos = 0;
    }
    return (unsigned char)r->buf[r->pos++];
}

static inline char *raw_line(raw *r) {
    size_t cap = 64, n = 0;
    char *s = hv_xmalloc(cap);
    for (;;) {
        int c = raw_byte(r);
        if (c == '\r') {
            CHECK(raw_byte(r) == '\n');
            break;
        }
        if (n + 1 >= cap) {
            cap *= 2;
            char *t = realloc(s, cap);
            CHECK(t != NULL);
            s = t;
        }
        s[n++] = (char)c;
    }
    s[n] = '\0';
    return s;
}

/* Sends one command as a RESP array, in a single send() (several small writes would meet
 * Nagle's algorithm and delayed ACKs: 40 ms per command). */
static inline void raw_send(raw *r, size_t argc, const char *const *argv, const size_t *lens) {
    size_t cap = 32, n = 0;
    for (size_t i = 0; i < argc; i++) cap += 32 + (lens != NULL ? lens[i] : strlen(argv[i]));
    char *msg = hv_xmalloc(cap);
    n += (size_t)snprintf(msg, cap, "*%zu\r\n", argc);
    for (size_t i = 0; i < argc; i++) {
        size_t len = lens != NULL ? lens[i] : strlen(argv[i]);
        n += (size_t)snprintf(msg + n, cap - n, "$%zu\r\n", len);
        memcpy(msg + n, argv[i], len);
        n += len;
        memcpy(msg + n, "\r\n", 2);
        n += 2;
    }
    CHECK(n <= cap);
    for (size_t done = 0; done < n;) {
        ssize_t k = send(r->fd, msg + done, n - done, 0);
        CHECKF(k > 0, "raw connection: send returned %ld", (long)k);
        done += (size_t)k;
    }
    free(msg);
}

static inline reply raw_reply(raw *r) {
    reply rep;
    memset(&rep, 0, sizeof rep);
    rep.type = (char)raw_byte(r);
    char *line = raw_line(r);
    switch (rep.type) {
    case '+':
    case '-':
        rep.data = line;
        return rep;
    case ':':
        rep.number = strtoll(line, NULL, 10);
        free(line);
        return rep;
    case '$':
        rep.number = strtoll(line, NULL, 10);
        free(line);
        if (rep.number >= 0) {
            rep.data = hv_xmalloc((size_t)rep.number + 1);
            for (long long i = 0; i < rep.number; i++) rep.data[i] = (char)raw_byte(r);
            rep.data[rep.number] = '\0';
            CHECK(raw_byte(r) == '\r' && raw_byte(r) == '\n');
        }
        return rep;
    default:
        hv_fail(__FILE__, __LINE__, "unexpected RESP reply type '%c' (%s)", rep.type, line);
        return rep;
    }
}

/* Runs a command; fails the test on an error reply. */
static inline reply raw_cmd(raw *r, size_t argc, const char *const *argv, const size_t *lens) {
    raw_send(r, argc, argv, lens);
    reply rep = raw_reply(r);
    CHECKF(rep.type != '-', "%s: %s", argv[0], rep.data);
    return rep;
}

static inline long long raw_int(raw *r, size_t argc, const char *const *argv) {
    reply rep = raw_cmd(r, argc, argv, NULL);
    CHECKF(rep.type == ':', "%s: not an integer reply", argv[0]);
    free(rep.data);
    return rep.number;
}

/* Runs a command that answers +OK (or another simple string). */
static inline void raw_ok(raw *r, size_t argc, const char *const *argv) {
    reply rep = raw_cmd(r, argc, argv, NULL);
    CHECKF(rep.type == '+', "%s: not a simple string reply", argv[0]);
    free(rep.data);
}

static inline void raw_close(raw *r) {
    close(r->fd);
    r->fd = -1;
}

#endif /* HV_RAW_H */
