/*
 * test_bad_input: every invalid argument or configuration returns its documented status, never
 * crashes, leaves a non-empty last error message, and leaves the handle usable.
 */
#include "hv_test.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

static const size_t SIZES[3] = {64, 64, 64};
static hicache_valkey *const SENTINEL = (hicache_valkey *)(uintptr_t)0x10;

/* open() must fail with `want` and set *out to NULL. */
static void open_fails(const hicache_valkey_options *o, hicache_status want, const char *what) {
    hicache_valkey *h = SENTINEL;
    int32_t st = hicache_valkey_open(o, &h);
    if (st != (int32_t)want) {
        hv_fail(__FILE__, __LINE__, "open with %s: %s, expected %s (last error \"%s\")", what,
                hicache_valkey_status_str(st), hicache_valkey_status_str(want), hv_last_error_str());
    }
    CHECKF(hicache_valkey_last_error(NULL, 0) > 0, "open with %s: no message", what);
    CHECKF(h == NULL, "open with %s failed but *out is not NULL", what);
    if (getenv("HV_TEST_VERBOSE") != NULL) printf("  ok: open with %s -> %s: %s\n", what, hicache_valkey_status_str(st), hv_last_error_str());
    if (h != NULL && h != SENTINEL) hicache_valkey_close(h);
}

static void test_handle_calls(hicache_valkey *h) {
    hv_page p;
    hv_page_alloc(&p, 3, SIZES);
    hv_page_fill(&p, 1);
    hicache_key keys[2] = {hv_key("bad-0"), hv_key("bad-1")};
    hicache_value vals[2] = {hv_page_value(&p), hv_page_value(&p)};
    int32_t out[2] = {-1, -1};
    uint8_t found[2];
    size_t lead = 0;
    uint64_t u64 = 0;
    hicache_stats st;

    /* NULL handle, everywhere. */
    CHECK_FAILS(hicache_valkey_batch_set(NULL, keys, vals, 2, out), HICACHE_STATUS_INVALID_ARGUMENT);
    CHECK_FAILS(hicache_valkey_batch_get(NULL, keys, vals, 2, out), HICACHE_STATUS_INVALID_ARGUMENT);
    CHECK_FAILS(hicache_valkey_batch_exists(NULL, keys, 2, found, &lead), HICACHE_STATUS_INVALID_ARGUMENT);
    CHECK_FAILS(hicache_valkey_batch_set(NULL, NULL, NULL, 0, NULL), HICACHE_STATUS_INVALID_ARGUMENT);
    memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    CHECK_FAILS(hicache_valkey_stats(NULL, &st), HICACHE_STATUS_INVALID_ARGUMENT);
    CHECK_FAILS(hicache_valkey_clear(NULL, &u64), HICACHE_STATUS_INVALID_ARGUMENT);
    CHECK_FAILS(hicache_valkey_ping(NULL, &u64), HICACHE_STATUS_INVALID_ARGUMENT);

    /* NULL arrays with n > 0. */
    CHECK_FAILS(hicache_valkey_batch_set(h, NULL, vals, 2, out), HICACHE_STATUS_INVALID_ARGUMENT);
    CHECK_FAILS(hicache_valkey_batch_set(h, keys, NULL, 2, out), HICACHE_STATUS_INVALID_ARGUMENT);
    CHECK_FAILS(hicache_valkey_batch_set(h, keys, vals, 2, NULL), HICACHE_STATUS_INVALID_ARGUMENT);
    CHECK_FAILS(hicache_valkey_batch_get(h, NULL, vals, 2, out), HICACHE_STATUS_INVALID_ARGUMENT);
    CHECK_FAILS(hicache_valkey_batch_get(h, keys, NULL, 2, out), HICACHE_STATUS_INVALID_ARGUMENT);
    CHECK_FAILS(hicache_valkey_batch_get(h, keys, vals, 2, NULL), HICACHE_STATUS_INVALID_ARGUMENT);
    CHECK_FAILS(hicache_valkey_batch_exists(h, NULL, 2, found, &lead), HICACHE_STATUS_INVALID_ARGUMENT);
    CHECK_FAILS(hicache_valkey_batch_exists(h, keys, 2, found, NULL), HICACHE_STATUS_INVALID_ARGUMENT);
    CHECK_FAILS(hicache_valkey_batch_exists(h, NULL, 0, NULL, NULL), HICACHE_STATUS_INVALID_ARGUMENT);

    /* n == 0 with NULL arrays is fine. */
    CHECK_OK(hicache_valkey_batch_set(h, NULL, NULL, 0, NULL));
    CHECK_OK(hicache_valkey_batch_get(h, NULL, NULL, 0, NULL));
    lead = 5;
    CHECK_OK(hicache_valkey_batch_exists(h, NULL, 0, NULL, &lead));
    CHECK(lead == 0);

    /* An empty key; a NULL key pointer with a length. The bad key is the second one: nothing
     * of the batch may be stored. */
    hicache_key bad[2] = {keys[0], {(const uint8_t *)"x", 0}};
    CHECK_FAILS(hicache_valkey_batch_set(h, bad, vals, 2, out), HICACHE_STATUS_INVALID_ARGUMENT);
    CHECK_FAILS(hicache_valkey_batch_get(h, bad, vals, 2, out), HICACHE_STATUS_INVALID_ARGUMENT);
    CHECK_FAILS(hicache_valkey_batch_exists(h, bad, 2, found, &lead), HICACHE_STATUS_INVALID_ARGUMENT);
    bad[1].ptr = NULL;
    bad[1].len = 3;
    CHECK_FAILS(hicache_valkey_batch_set(h, bad, vals, 2, out), HICACHE_STATUS_INVALID_ARGUMENT);
    CHECK_FAILS(hicache_valkey_batch_get(h, bad, vals, 2, out), HICACHE_STATUS_INVALID_ARGUMENT);
    CHECK_FAILS(hicache_valkey_batch_exists(h, bad, 2, found, &lead), HICACHE_STATUS_INVALID_ARGUMENT);
    bad[1].len = 0; /* NULL and empty */
    CHECK_FAILS(hicache_valkey_batch_exists(h, bad, 2, found, &lead), HICACHE_STATUS_INVALID_ARGUMENT);

    /* A NULL segment pointer with a non-zero length; a NULL segment array with a count. */
    hicache_segment segs[3] = {p.seg[0], {NULL, 64}, p.seg[2]};
    hicache_value badv[2] = {vals[0], {segs, 3}};
    CHECK_FAILS(hicache_valkey_batch_set(h, keys, badv, 2, out), HICACHE_STATUS_INVALID_ARGUMENT);
    CHECK_FAILS(hicache_valkey_batch_get(h, keys, badv, 2, out), HICACHE_STATUS_INVALID_ARGUMENT);
    badv[1].segments = NULL;
    badv[1].count = 2;
    CHECK_FAILS(hicache_valkey_batch_set(h, keys, badv, 2, out), HICACHE_STATUS_INVALID_ARGUMENT);
    CHECK_FAILS(hicache_valkey_batch_get(h, keys, badv, 2, out), HICACHE_STATUS_INVALID_ARGUMENT);

    /* None of the rejected batches stored its valid first key. */
    CHECK_OK(hicache_valkey_batch_exists(h, keys, 2, found, &lead));
    CHECK(found[0] == 0 && found[1] == 0 && lead == 0);

    /* stats: struct_size too small, NULL out. */
    st.struct_size = 0;
    CHECK_FAILS(hicache_valkey_stats(h, &st), HICACHE_STATUS_INVALID_ARGUMENT);
    /* Shorter than the first published struct (which ended before cluster_primaries). */
    st.struct_size = offsetof(hicache_stats, cluster_primaries) - 1;
    CHECK_FAILS(hicache_valkey_stats(h, &st), HICACHE_STATUS_INVALID_ARGUMENT);
    st.struct_size = 8;
    CHECK_FAILS(hicache_valkey_stats(h, &st), HICACHE_STATUS_INVALID_ARGUMENT);
    CHECK_FAILS(hicache_valkey_stats(h, NULL), HICACHE_STATUS_INVALID_ARGUMENT);

    /* The handle still works. */
    CHECK_OK(hicache_valkey_ping(h, &u64));
    CHECK_OK(hicache_valkey_batch_set(h, keys, vals, 2, out));
    CHECK_OUTCOMES(out, 2, HICACHE_OUTCOME_OK);
    st.struct_size = sizeof st;
    CHECK_OK(hicache_valkey_stats(h, &st));
    CHECK(st.model_keys == 2);
    CHECK_OK(hicache_valkey_clear(h, &u64));
    CHECK(u64 == 2);
    hv_page_free(&p);
}

/* A loopback port where nothing listens: bound (so nobody else takes it) but not listening, so
 * a connection is refused at once. */
static int refused_port(int *fd_out) {
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    CHECK(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    *fd_out = fd;
    return ntohs(a.sin_port);
}

static void test_open_errors(const char *model) {
    hicache_valkey_options o;
    hicache_valkey *h = SENTINEL;
    char port_text[16], url[96];

    CHECK_FAILS(hicache_valkey_open(NULL, NULL), HICACHE_STATUS_INVALID_ARGUMENT);
    hv_options(&o, model);
    CHECK_FAILS(hicache_valkey_open(&o, NULL), HICACHE_STATUS_INVALID_ARGUMENT);

    /* struct_size too small (not initialised, or from an older, smaller struct). */
    memset(&o, 0, sizeof o);
    open_fails(&o, HICACHE_STATUS_INVALID_ARGUMENT, "struct_size 0");
    hv_options(&o, model);
    o.struct_size = HICACHE_VALKEY_OPTIONS_V1_SIZE - 8;
    open_fails(&o, HICACHE_STATUS_INVALID_ARGUMENT, "struct_size below the first published size");

    /* Invalid option values: INVALID_CONFIG, checked before connecting. */
    struct {
        const char *what;
        int32_t *field;
        int32_t value;
    } ints[] = {
        {"port 0", &o.port, 0},
        {"port 65536", &o.port, 65536},
        {"port -5", &o.port, -5},
        {"db -2", &o.db, -2},
        {"tp_rank 2 of 2", &o.tp_rank, 2},
        {"tp_size 0", &o.tp_size, 0},
        {"pp_rank -3", &o.pp_rank, -3},
        {"cp_size 0", &o.cp_size, 0},
        {"checksum 2", &o.checksum, 2},
        {"connections 0", &o.connections, 0},
        {"connections 65", &o.connections, 65},
        {"timeout_ms 0", &o.timeout_ms, 0},
        {"connect_timeout_ms -7", &o.connect_timeout_ms, -7},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        hv_options(&o, model);
        if (ints[i].field == &o.tp_rank) o.tp_size = 2;
        *ints[i].field = ints[i].value;
        open_fails(&o, HICACHE_STATUS_INVALID_CONFIG, ints[i].what);
    }
    const char *urls[] = {"http://127.0.0.1:6379", "valkey://", "not a url", "valkey://127.0.0.1:99999"};
    for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) {
        hv_options(&o, model);
        o.url = urls[i];
        open_fails(&o, HICACHE_STATUS_INVALID_CONFIG, urls[i]);
    }
    hv_options(&o, "");
    open_fails(&o, HICACHE_STATUS_INVALID_CONFIG, "an empty model name");
    hv_options(&o, "\xff\xfe-not-utf8");
    open_fails(&o, HICACHE_STATUS_INVALID_CONFIG, "a model name that is not UTF-8");
    hv_options(&o, model);
    o.host = "";
    open_fails(&o, HICACHE_STATUS_INVALID_CONFIG, "an empty host");

    /* Invalid environment: a non-numeric VALKEY_PORT, with NULL options and with options that
     * leave the port unset; a non-boolean HICACHE_VALKEY_CHECKSUM; a non-numeric VALKEY_DB. */
    snprintf(port_text, sizeof port_text, "%d", (int)hv_port());
    CHECK(setenv("VALKEY_PORT", "sixty-three-seventy-nine", 1) == 0);
    h = SENTINEL;
    CHECK_FAILS(hicache_valkey_open(NULL, &h), HICACHE_STATUS_INVALID_CONFIG);
    CHECK(h == NULL);
    hv_options(&o, model);
    open_fails(&o, HICACHE_STATUS_INVALID_CONFIG, "VALKEY_PORT=sixty-three-seventy-nine");
    CHECK(setenv("VALKEY_PORT", "0", 1) == 0);
    open_fails(NULL, HICACHE_STATUS_INVALID_CONFIG, "VALKEY_PORT=0");
    CHECK(setenv("VALKEY_PORT", port_text, 1) == 0);
    CHECK(setenv("HICACHE_VALKEY_CHECKSUM", "maybe", 1) == 0);
    open_fails(NULL, HICACHE_STATUS_INVALID_CONFIG, "HICACHE_VALKEY_CHECKSUM=maybe");
    CHECK(unsetenv("HICACHE_VALKEY_CHECKSUM") == 0);
    CHECK(setenv("VALKEY_DB", "one", 1) == 0);
    open_fails(NULL, HICACHE_STATUS_INVALID_CONFIG, "VALKEY_DB=one");
    CHECK(unsetenv("VALKEY_DB") == 0);
    CHECK(setenv("HICACHE_VALKEY_CONNECTIONS", "lots", 1) == 0);
    open_fails(NULL, HICACHE_STATUS_INVALID_CONFIG, "HICACHE_VALKEY_CONNECTIONS=lots");
    CHECK(unsetenv("HICACHE_VALKEY_CONNECTIONS") == 0);

    /* Nothing listens: CONNECTION, by fields, by URL and from the environment. */
    int fd = -1;
    int port = refused_port(&fd);
    hv_options(&o, model);
    o.host = "127.0.0.1";
    o.port = port;
    o.connect_timeout_ms = 1000;
    open_fails(&o, HICACHE_STATUS_CONNECTION, "a port where nothing listens");
    hv_options(&o, model);
    snprintf(url, sizeof url, "valkey://127.0.0.1:%d", port);
    o.url = url;
    open_fails(&o, HICACHE_STATUS_CONNECTION, url);
    snprintf(url, sizeof url, "%d", port);
    CHECK(setenv("VALKEY_PORT", url, 1) == 0);
    open_fails(NULL, HICACHE_STATUS_CONNECTION, "VALKEY_PORT where nothing listens");
    CHECK(setenv("VALKEY_PORT", port_text, 1) == 0);
    close(fd);

    /* The environment is sane again: NULL options open. */
    CHECK(setenv("HICACHE_VALKEY_MODEL", model, 1) == 0);
    h = NULL;
    CHECK_OK(hicache_valkey_open(NULL, &h));
    CHECK(h != NULL);
    CHECK_OK(hicache_valkey_ping(h, NULL));
    hicache_valkey_close(h);
    CHECK(unsetenv("HICACHE_VALKEY_MODEL") == 0);
}

int main(void) {
    char model[64];
    hv_model(model, sizeof model, "badinput");
    (void)hv_host();
    (void)hv_port();
    hicache_valkey *h = hv_open(model);
    test_handle_calls(h);
    test_open_errors(model);
    hicache_valkey_close(h);
    return hv_done("test_bad_input");
}
