/*
 * test_sigpipe: a C caller with the DEFAULT SIGPIPE disposition survives the server dropping
 * its pooled connections, and the next large batch_set is retried on a fresh connection.
 *
 * The server drops the handle's connections three ways, each followed by a batch_set of
 * 8 values x 1 MiB (more than one socket write, so a dead socket answers EPIPE) and a
 * batch_get that checks every byte:
 *   kill     CLIENT KILL TYPE normal, sent from a raw connection;
 *   timeout  the server's idle timeout (CONFIG SET timeout 1, then 2.5 s of silence);
 *   restart  the server is killed and started again on the same port.
 * A library that writes with plain write/writev raises SIGPIPE on EPIPE, and the process dies
 * with status 141 (128 + SIGPIPE) in the first batch_set after a drop.
 *
 * The test runs a valkey-server of its own (fork + exec on a free loopback port, its own temp
 * dir): it changes server-wide settings and restarts it. The server dies with the test, also
 * when the test itself is killed (PR_SET_PDEATHSIG).
 *
 *   test_sigpipe [kill|timeout|restart]...   (default: all three, in that order)
 */
#include "hv_raw.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>

#define VALUES 8
#define VALUE_LEN (1u << 20)
/* Generous: under valgrind the library runs ~20x slower. */
#define TIMEOUT_MS 20000

static pid_t server_pid = -1;
static int server_port;

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

/* Starts valkey-server on `port`; 1 once it answers as itself (INFO's process_id is our
 * child's pid), 0 if it exited (port taken) or did not answer within 10 s. */
static int start_server_on(int port) {
    char dir[] = "/tmp/hv-sigpipe.XXXXXX";
    char port_s[16];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(port_s, sizeof port_s, "%d", port);
    fflush(NULL);
    pid_t parent = getpid();
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        /* Dies with the test, whatever kills the test. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) dup2(null, 1);
        char *argv[] = {"valkey-server", "--port", port_s, "--bind", "127.0.0.1", "--save", "", "--appendonly",
                        "no", "--dir", dir, "--protected-mode", "no", NULL};
        execvp(argv[0], argv);
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
        if (start_server_on(port)) {
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

/* The same server again on the same port (bind may race with another process: a few tries). */
static void restart_server(void) {
    stop_server();
    for (int attempt = 0; attempt < 20; attempt++) {
        if (start_server_on(server_port)) return;
        sleep_ms(100);
    }
    hv_fail(__FILE__, __LINE__, "could not restart valkey-server on port %d", server_port);
}

static long long connected_clients(raw *r) {
    const char *info[] = {"INFO", "clients"};
    reply rep = raw_cmd(r, 2, info, NULL);
    const char *p = rep.data != NULL ? strstr(rep.data, "connected_clients:") : NULL;
    long long n = p != NULL ? strtoll(p + strlen("connected_clients:"), NULL, 10) : -1;
    free(rep.data);
    return n;
}

/* Waits (at most 5 s) until the raw connection is the server's only client. */
static void wait_only_client(raw *r, const char *how) {
    long long n = -1;
    for (double until = now_s() + 5; now_s() < until; sleep_ms(50))
        if ((n = connected_clients(r)) == 1) return;
    hv_fail(__FILE__, __LINE__, "%s: the server still has %lld clients", how, n);
}

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

static int wanted(int argc, char **argv, const char *name) {
    if (argc < 2) return 1;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], name) == 0) return 1;
    return 0;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "kill") != 0 && strcmp(argv[i], "timeout") != 0 && strcmp(argv[i], "restart") != 0) {
            fprintf(stderr, "usage: %s [kill|timeout|restart]...\n", argv[0]);
            return 2;
        }
    }
    /* The disposition every C program starts with (a parent may have left it ignored). */
    CHECK(signal(SIGPIPE, SIG_DFL) != SIG_ERR);
    sigset_t pipe_set;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    CHECK(sigprocmask(SIG_UNBLOCK, &pipe_set, NULL) == 0);
    alarm(300); /* a hung test dies (and its server with it) */
    atexit(stop_server);
    start_server();
    printf("valkey-server %ld on port %d\n", (long)server_pid, server_port);

    char model[64];
    hv_keybuf kb[VALUES];
    hicache_key keys[VALUES];
    hicache_valkey_options o;
    pages w, r;
    raw conn;
    hv_model(model, sizeof model, "sigpipe");
    hv_options(&o, model);
    o.timeout_ms = TIMEOUT_MS;
    o.connect_timeout_ms = TIMEOUT_MS;
    o.connections = 2; /* two lanes: two pooled connections to drop */
    hicache_valkey *h = hv_open_opts(&o);
    hv_keys(keys, kb, VALUES, "sigpipe");
    pages_alloc(&w);
    pages_alloc(&r);
    uint32_t seed = 1;
    /* Pools the connections (and checks the data path before any drop). */
    move_data(h, keys, &w, &r, seed++, "before any drop");

    if (wanted(argc, argv, "kill")) {
        raw_connect(&conn);
        const char *kill_cmd[] = {"CLIENT", "KILL", "TYPE", "normal"}; /* SKIPME yes: not this one */
        CHECK(raw_int(&conn, 4, kill_cmd) >= 1);
        wait_only_client(&conn, "CLIENT KILL");
        move_data(h, keys, &w, &r, seed++, "after CLIENT KILL");
        raw_close(&conn);
    }

    if (wanted(argc, argv, "timeout")) {
        raw_connect(&conn);
        const char *set_timeout[] = {"CONFIG", "SET", "timeout", "1"};
        raw_ok(&conn, 4, set_timeout);
        raw_close(&conn); /* idle too: it would be closed as well */
        sleep_ms(2500);
        raw_connect(&conn);
        const char *no_timeout[] = {"CONFIG", "SET", "timeout", "0"};
        raw_ok(&conn, 4, no_timeout);
        wait_only_client(&conn, "idle timeout");
        move_data(h, keys, &w, &r, seed++, "after the idle timeout");
        raw_close(&conn);
    }

    if (wanted(argc, argv, "restart")) {
        restart_server();
        printf("restarted: valkey-server %ld on port %d\n", (long)server_pid, server_port);
        move_data(h, keys, &w, &r, seed++, "after the restart");
    }

    pages_free(&w);
    pages_free(&r);
    hicache_valkey_close(h);
    stop_server();
    return hv_done("test_sigpipe");
}
