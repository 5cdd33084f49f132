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

#define VALUES 8
#define VALUE_LEN (1u << 20)
/* Generous: under valgrind the library runs ~20x slower. */
#define TIMEOUT_MS 20000

#include "hv_server.h"

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
