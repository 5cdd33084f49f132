/*
 * test_tls: a C caller over TLS (rustls inside the library): a round trip of 8 x 1 MiB values
 * checked byte for byte, then a server restart under TLS with SIGPIPE at its DEFAULT
 * disposition (the pooled TLS connections die with the server; the next batch reconnects and
 * nothing raises SIGPIPE), then the status a plaintext handle gets from the TLS port
 * (HICACHE_STATUS_TLS, answered fast).
 *
 * The certificates (a throwaway CA and a server certificate for 127.0.0.1) are made at run time
 * with the openssl command in a temp dir and removed at exit. The test runs a valkey-server of
 * its own (fork + exec, a plaintext port for the readiness probe and a TLS port for the library),
 * which dies with the test (PR_SET_PDEATHSIG).
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
static int tls_port;
static char pki[] = "/tmp/hv-tls-pki.XXXXXX";

static void remove_pki(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", pki);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", pki);
}

/* A CA and a server certificate for 127.0.0.1 / localhost, by the openssl command. */
static void make_pki(void) {
    CHECK(mkdtemp(pki) != NULL);
    atexit(remove_pki);
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt"
             " -days 2 -subj /CN=hv-test-ca >/dev/null 2>&1"
             " && openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr"
             " -subj /CN=localhost >/dev/null 2>&1"
             " && printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > ext"
             " && openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2"
             " -extfile ext >/dev/null 2>&1",
             pki);
    CHECKF(system(cmd) == 0, "openssl could not make the test certificates (is the openssl command installed?)");
}

static char *pki_file(const char *name) {
    static char paths[4][256];
    static int next;
    char *p = paths[next++ % 4];
    snprintf(p, 256, "%s/%s", pki, name);
    return p;
}

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
    char dir[] = "/tmp/hv-tls.XXXXXX";
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
        char tls_s[16];
        snprintf(tls_s, sizeof tls_s, "%d", tls_port);
        char *argv[] = {"valkey-server", "--port", port_s, "--bind", "127.0.0.1", "--save", "", "--appendonly",
                        "no", "--dir", dir, "--protected-mode", "no", "--tls-port", tls_s,
                        "--tls-cert-file", pki_file("server.crt"), "--tls-key-file", pki_file("server.key"),
                        "--tls-ca-cert-file", pki_file("ca.crt"), "--tls-auth-clients", "no", NULL};
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
        tls_port = free_port();
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

/* Waits (at most 10 s) until the TLS port accepts connections. */
static void wait_tls_port(void) {
    for (double until = now_s() + 10; now_s() < until; sleep_ms(20)) {
        int fd = try_connect(tls_port);
        if (fd >= 0) {
            close(fd);
            return;
        }
    }
    hv_fail(__FILE__, __LINE__, "TLS port %d does not listen", tls_port);
}

int main(void) {
    /* The disposition every C program starts with (a parent may have left it ignored). */
    CHECK(signal(SIGPIPE, SIG_DFL) != SIG_ERR);
    sigset_t pipe_set;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    CHECK(sigprocmask(SIG_UNBLOCK, &pipe_set, NULL) == 0);
    alarm(300); /* a hung test dies (and its server with it) */
    make_pki();
    atexit(stop_server);
    start_server();
    wait_tls_port();
    printf("valkey-server %ld on port %d, TLS port %d\n", (long)server_pid, server_port, tls_port);

    char model[64];
    hv_keybuf kb[VALUES];
    hicache_key keys[VALUES];
    hicache_valkey_options o;
    pages w, r;
    hv_model(model, sizeof model, "tls");
    hv_options(&o, model);
    o.host = "127.0.0.1";
    o.port = tls_port;
    o.tls = 1;
    o.tls_ca_cert = pki_file("ca.crt");
    o.timeout_ms = TIMEOUT_MS;
    o.connect_timeout_ms = TIMEOUT_MS;
    o.connections = 2; /* two lanes: two pooled TLS connections to lose */
    hicache_valkey *h = hv_open_opts(&o);
    hv_keys(keys, kb, VALUES, "tls");
    pages_alloc(&w);
    pages_alloc(&r);
    uint32_t seed = 1;
    move_data(h, keys, &w, &r, seed++, "over TLS");

    restart_server();
    wait_tls_port();
    printf("restarted: valkey-server %ld on port %d, TLS port %d\n", (long)server_pid, server_port, tls_port);
    move_data(h, keys, &w, &r, seed++, "over TLS after the restart");

    /* Plaintext against the TLS port: the TLS status, fast (not the 20 s connect timeout). */
    hicache_valkey_options plain = o;
    plain.tls = 0;
    plain.tls_ca_cert = NULL;
    plain.connect_timeout_ms = 5000;
    hicache_valkey *ph = NULL;
    double t0 = now_s();
    CHECK_FAILS(hicache_valkey_open(&plain, &ph), HICACHE_STATUS_TLS);
    CHECKF(now_s() - t0 < 2.0, "plaintext on the TLS port took %.2f s", now_s() - t0);
    CHECK(ph == NULL);

    pages_free(&w);
    pages_free(&r);
    hicache_valkey_close(h);
    stop_server();
    return hv_done("test_tls");
}
