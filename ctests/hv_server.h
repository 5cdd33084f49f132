/*
 * hv_server.h: a valkey-server of the test's own, for tests that change server-wide settings,
 * restart the server or need TLS ports (the shared server of scripts/with-valkey.sh stays
 * untouched). fork + exec on a free loopback port with its own temp dir; ready only when it
 * answers as itself (INFO's process_id is our child's pid); a port taken by another process is
 * replaced by a new one; the server dies with the test, whatever kills the test
 * (PR_SET_PDEATHSIG).
 *
 * Before start_server(), a test may set server_extra_args to add arguments of its own.
 * move_data() moves VALUES x VALUE_LEN bytes out and back and checks every byte (the test defines
 * VALUES and VALUE_LEN before including this header).
 */
#ifndef HV_SERVER_H
#define HV_SERVER_H

#include "hv_raw.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>

#define HV_SERVER_MAX_EXTRA 24

/* Appends arguments for one start to `argv` (at most `max`) and returns how many; `fresh` is 1
 * for a new server (pick new ports), 0 for a restart on the same ones. */
typedef int (*hv_extra_args_fn)(const char **argv, int max, int fresh);

static pid_t server_pid = -1;
static int server_port;
static hv_extra_args_fn server_extra_args;

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {
    }
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void stop_server(void) {
    if (server_pid > 0) {
        kill(server_pid, SIGKILL);
        while (waitpid(server_pid, NULL, 0) < 0 && errno == EINTR) {
        }
        server_pid = -1;
    }
}

static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    CHECK(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* A connection to 127.0.0.1:port, or -1. */
static int try_connect(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0) return fd;
    if (fd >= 0) close(fd);
    return -1;
}

/* Starts valkey-server on `port`; 1 once it answers as itself, 0 if it exited (port taken) or
 * did not answer within 10 s. */
static int start_server_on(int port, int fresh) {
    char dir[] = "/tmp/hv-own-server.XXXXXX";
    char port_s[16];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(port_s, sizeof port_s, "%d", port);
    const char *argv[16 + HV_SERVER_MAX_EXTRA] = {"valkey-server", "--port", port_s, "--bind", "127.0.0.1", "--save", "",
                                                 "--appendonly", "no", "--dir", dir, "--protected-mode", "no"};
    int argc = 13;
    if (server_extra_args != NULL) argc += server_extra_args(argv + argc, HV_SERVER_MAX_EXTRA, fresh);
    argv[argc] = NULL;
    fflush(NULL);
    pid_t parent = getpid();
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) dup2(null, 1);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    server_pid = pid;
    char want[48];
    snprintf(want, sizeof want, "process_id:%ld\r\n", (long)pid);
    int ready = 0;
    for (double until = now_s() + 10; !ready && now_s() < until; sleep_ms(20)) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            fprintf(stderr, "valkey-server on port %d exited (status %d)\n", port, status);
            server_pid = -1;
            break;
        }
        int fd = try_connect(port);
        if (fd < 0) continue;
        raw r;
        r.fd = fd;
        r.len = r.pos = 0;
        const char *info[] = {"INFO", "server"};
        raw_send(&r, 2, info, NULL);
        reply rep = raw_reply(&r);
        ready = rep.type == '$' && rep.data != NULL && strstr(rep.data, want) != NULL;
        free(rep.data);
        raw_close(&r);
    }
    rmdir(dir); /* the server chdir'ed into it and writes nothing there (no persistence, no log) */
    if (!ready) stop_server();
    return ready;
}

/* A server on a free port; the environment points the library and hv_raw.h at it. */
static void start_server(void) {
    for (int attempt = 0; attempt < 5; attempt++) {
        int port = free_port();
        if (start_server_on(port, 1)) {
            char port_s[16];
            snprintf(port_s, sizeof port_s, "%d", port);
            setenv("VALKEY_HOST", "127.0.0.1", 1);
            setenv("VALKEY_PORT", port_s, 1);
            server_port = port;
            return;
        }
    }
    hv_fail(__FILE__, __LINE__, "could not start valkey-server");
}

/* The same server again on the same ports (bind may race with another process: a few tries). */
static void restart_server(void) {
    stop_server();
    for (int attempt = 0; attempt < 20; attempt++) {
        if (start_server_on(server_port, 0)) return;
        sleep_ms(100);
    }
    hv_fail(__FILE__, __LINE__, "could not restart valkey-server on port %d", server_port);
}

/* ---- bulk data: VALUES values of VALUE_LEN bytes (the test defines both) ------------------- */

typedef struct pages {
    uint8_t *buf[VALUES];
    hicache_segment seg[VALUES];
    hicache_value val[VALUES];
} pages;

static void pages_alloc(pages *p) {
    for (size_t i = 0; i < VALUES; i++) {
        p->buf[i] = hv_xmalloc(VALUE_LEN);
        p->seg[i].ptr = p->buf[i];
        p->seg[i].len = VALUE_LEN;
        p->val[i].segments = &p->seg[i];
        p->val[i].count = 1;
    }
}

static void pages_free(pages *p) {
    for (size_t i = 0; i < VALUES; i++) free(p->buf[i]);
}

/* Value i of round `seed`: cheap to make and check (valgrind), different per round and value. */
static void pages_fill(pages *p, uint32_t seed) {
    for (size_t i = 0; i < VALUES; i++) {
        uint32_t *w = (uint32_t *)(void *)p->buf[i];
        for (size_t j = 0; j < VALUE_LEN / 4; j++) w[j] = seed * 0x9E3779B1u ^ (uint32_t)(i << 24) ^ (uint32_t)j;
    }
}

static size_t pages_first_diff(const pages *p, uint32_t seed, size_t *value) {
    for (size_t i = 0; i < VALUES; i++) {
        const uint32_t *w = (const uint32_t *)(const void *)p->buf[i];
        for (size_t j = 0; j < VALUE_LEN / 4; j++) {
            if (w[j] != (seed * 0x9E3779B1u ^ (uint32_t)(i << 24) ^ (uint32_t)j)) {
                *value = i;
                return j * 4;
            }
        }
    }
    return SIZE_MAX;
}

/* 8 MiB out and back after the server dropped the handle's connections. */
static void move_data(hicache_valkey *h, const hicache_key *keys, pages *w, pages *r, uint32_t seed, const char *how) {
    int32_t out[VALUES];
    for (size_t i = 0; i < VALUES; i++) out[i] = -1;
    pages_fill(w, seed);
    printf("%s: batch_set of %d x %u bytes\n", how, VALUES, VALUE_LEN);
    fflush(stdout);
    double t0 = now_s();
    CHECK_OK(hicache_valkey_batch_set(h, keys, w->val, VALUES, out));
    CHECK_OUTCOMES(out, VALUES, HICACHE_OUTCOME_OK);
    printf("%s: stored in %.2f s\n", how, now_s() - t0);
    for (size_t i = 0; i < VALUES; i++) {
        memset(r->buf[i], 0, VALUE_LEN);
        out[i] = -1;
    }
    CHECK_OK(hicache_valkey_batch_get(h, keys, r->val, VALUES, out));
    CHECK_OUTCOMES(out, VALUES, HICACHE_OUTCOME_OK);
    size_t value = 0, off = pages_first_diff(r, seed, &value);
    CHECKF(off == SIZE_MAX, "%s: value %zu differs at offset %zu", how, value, off);
    fflush(stdout);
}

#endif
