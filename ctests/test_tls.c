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

#define VALUES 8
#define VALUE_LEN (1u << 20)
/* Generous: under valgrind the library runs ~20x slower. */
#define TIMEOUT_MS 20000

#include "hv_server.h"

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

/* The server's TLS port and certificates (new ports for a fresh server, the same on restart). */
static int tls_extra_args(const char **argv, int max, int fresh) {
    static char tls_s[16];
    if (fresh) tls_port = free_port();
    snprintf(tls_s, sizeof tls_s, "%d", tls_port);
    const char *args[] = {"--tls-port", tls_s, "--tls-cert-file", pki_file("server.crt"), "--tls-key-file",
                          pki_file("server.key"), "--tls-ca-cert-file", pki_file("ca.crt"), "--tls-auth-clients", "no"};
    int n = (int)(sizeof args / sizeof args[0]);
    CHECK(n <= max);
    for (int i = 0; i < n; i++) argv[i] = args[i];
    return n;
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
    server_extra_args = tls_extra_args;
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
