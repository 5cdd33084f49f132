/*
 * test_basics: version and its macros, status/outcome names, the last error message, options
 * defaults, opening from the environment and from explicit options (fields and URL), ping,
 * close(NULL).
 */
#include "hv_test.h"

#ifndef HV_EXPECTED_VERSION
#error "the build passes HV_EXPECTED_VERSION, the version find_package() found"
#endif

#if HICACHE_VALKEY_VERSION_NUMBER != \
    HICACHE_VALKEY_VERSION_MAJOR * 10000 + HICACHE_VALKEY_VERSION_MINOR * 100 + HICACHE_VALKEY_VERSION_PATCH
#error "HICACHE_VALKEY_VERSION_NUMBER is not MAJOR * 10000 + MINOR * 100 + PATCH"
#endif

static void test_version(void) {
    const char *v = hicache_valkey_version();
    char expect[32];
    CHECK(v != NULL);
    snprintf(expect, sizeof expect, "%d.%d.%d", HICACHE_VALKEY_VERSION_MAJOR, HICACHE_VALKEY_VERSION_MINOR,
             HICACHE_VALKEY_VERSION_PATCH);
    CHECKF(strcmp(v, expect) == 0, "hicache_valkey_version() is \"%s\", the header's macros say \"%s\"", v, expect);
    CHECKF(strcmp(v, HV_EXPECTED_VERSION) == 0, "hicache_valkey_version() is \"%s\", the CMake package says \"%s\"", v,
           HV_EXPECTED_VERSION);
    CHECK(HICACHE_VALKEY_VERSION_NUMBER ==
          HICACHE_VALKEY_VERSION_MAJOR * 10000 + HICACHE_VALKEY_VERSION_MINOR * 100 + HICACHE_VALKEY_VERSION_PATCH);
    CHECK(hicache_valkey_version() == v); /* static: the same pointer every time */
    printf("library version %s (HICACHE_VALKEY_VERSION_NUMBER %d)\n", v, HICACHE_VALKEY_VERSION_NUMBER);
}

static void test_names(void) {
    static const char *const statuses[] = {
        "HICACHE_STATUS_OK",         "HICACHE_STATUS_INVALID_ARGUMENT", "HICACHE_STATUS_INVALID_CONFIG",
        "HICACHE_STATUS_CONNECTION", "HICACHE_STATUS_AUTH",             "HICACHE_STATUS_TIMEOUT",
        "HICACHE_STATUS_PROTOCOL",   "HICACHE_STATUS_SERVER",           "HICACHE_STATUS_PANIC",
        "HICACHE_STATUS_PERMISSION", "HICACHE_STATUS_TLS",
    };
    static const char *const outcomes[] = {
        "HICACHE_OUTCOME_OK",          "HICACHE_OUTCOME_MISS",         "HICACHE_OUTCOME_SIZE_MISMATCH",
        "HICACHE_OUTCOME_FOREIGN",     "HICACHE_OUTCOME_FORMAT_MISMATCH", "HICACHE_OUTCOME_CHECKSUM_MISMATCH",
        "HICACHE_OUTCOME_TIMEOUT",     "HICACHE_OUTCOME_IO_ERROR",     "HICACHE_OUTCOME_SERVER_ERROR",
        "HICACHE_OUTCOME_OUT_OF_MEMORY", "HICACHE_OUTCOME_TOO_LARGE",
    };
    const int32_t unknown[] = {-1, 11, 99, 1000, INT32_MIN, INT32_MAX};
    CHECK(HICACHE_STATUS_PERMISSION == 9 && HICACHE_STATUS_TLS == 10 && HICACHE_OUTCOME_TOO_LARGE == 10);
    for (int32_t i = 0; i < (int32_t)(sizeof statuses / sizeof statuses[0]); i++) {
        const char *s = hicache_valkey_status_str(i);
        CHECKF(s != NULL && strcmp(s, statuses[i]) == 0, "status_str(%d) = %s", (int)i, s ? s : "(null)");
    }
    for (int32_t i = 0; i < (int32_t)(sizeof outcomes / sizeof outcomes[0]); i++) {
        const char *s = hicache_valkey_outcome_str(i);
        CHECKF(s != NULL && strcmp(s, outcomes[i]) == 0, "outcome_str(%d) = %s", (int)i, s ? s : "(null)");
    }
    CHECK(strcmp(hicache_valkey_status_str(HICACHE_STATUS_AUTH), "HICACHE_STATUS_AUTH") == 0);
    CHECK(strcmp(hicache_valkey_outcome_str(HICACHE_OUTCOME_MISS), "HICACHE_OUTCOME_MISS") == 0);
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        CHECK(strcmp(hicache_valkey_status_str(unknown[i]), "HICACHE_STATUS_UNKNOWN") == 0);
        CHECK(strcmp(hicache_valkey_outcome_str(unknown[i]), "HICACHE_OUTCOME_UNKNOWN") == 0);
    }
    CHECK(strcmp(hicache_valkey_status_str(11), "HICACHE_STATUS_UNKNOWN") == 0);
}

static void test_last_error(void) {
    const char *expect = "opts is NULL";
    size_t n = strlen(expect);
    char buf[64];

    /* A failing call leaves its message; options_init(NULL) is documented to fail. */
    CHECK_FAILS(hicache_valkey_options_init(NULL, sizeof(hicache_valkey_options)), HICACHE_STATUS_INVALID_ARGUMENT);
    /* NULL buffer: only the length, with any buf_len. */
    CHECK(hicache_valkey_last_error(NULL, 0) == n);
    CHECK(hicache_valkey_last_error(NULL, 1000) == n);
    /* Full copy. */
    memset(buf, 'X', sizeof buf);
    CHECK(hicache_valkey_last_error(buf, sizeof buf) == n);
    CHECKF(strcmp(buf, expect) == 0, "last error is \"%s\"", buf);
    /* Exactly fitting (n + 1 bytes) and truncated to buf_len - 1 bytes, always NUL-terminated. */
    memset(buf, 'X', sizeof buf);
    CHECK(hicache_valkey_last_error(buf, n + 1) == n);
    CHECK(strcmp(buf, expect) == 0);
    memset(buf, 'X', sizeof buf);
    CHECK(hicache_valkey_last_error(buf, 5) == n);
    CHECK(memcmp(buf, "opts", 4) == 0 && buf[4] == '\0' && buf[5] == 'X');
    memset(buf, 'X', sizeof buf);
    CHECK(hicache_valkey_last_error(buf, n) == n); /* one byte short */
    CHECK(memcmp(buf, expect, n - 1) == 0 && buf[n - 1] == '\0' && buf[n] == 'X');
    memset(buf, 'X', sizeof buf);
    CHECK(hicache_valkey_last_error(buf, 1) == n);
    CHECK(buf[0] == '\0' && buf[1] == 'X');
    /* buf_len 0: nothing is written, not even a NUL. */
    memset(buf, 'X', sizeof buf);
    CHECK(hicache_valkey_last_error(buf, 0) == n);
    CHECK(buf[0] == 'X');
    /* Reading the message does not consume it; neither do the static-string helpers, so
     * printf("%s: %s", status_str(st), <last error>) works. */
    CHECK(hicache_valkey_last_error(NULL, 0) == n);
    (void)hicache_valkey_status_str(HICACHE_STATUS_INVALID_ARGUMENT);
    (void)hicache_valkey_outcome_str(HICACHE_OUTCOME_OK);
    (void)hicache_valkey_version();
    CHECK(hicache_valkey_last_error(NULL, 0) == n);

    /* The message is per thread and a successful call clears it. */
    hicache_valkey_options o;
    memset(buf, 'X', sizeof buf);
    CHECK_OK(HICACHE_VALKEY_OPTIONS_INIT(&o));
    CHECK(hicache_valkey_last_error(buf, sizeof buf) == 0);
    CHECK(buf[0] == '\0');

    /* A long message (a Valkey error naming the port) truncates cleanly too. */
    o.host = "127.0.0.1";
    o.port = 0;
    CHECK_FAILS(hicache_valkey_open(&o, &(hicache_valkey *){NULL}), HICACHE_STATUS_INVALID_CONFIG);
    size_t full = hicache_valkey_last_error(NULL, 0);
    char *all = hv_xmalloc(full + 1);
    CHECK(hicache_valkey_last_error(all, full + 1) == full);
    CHECK(strlen(all) == full);
    for (size_t cut = 1; cut <= full + 1; cut++) {
        memset(buf, 'X', sizeof buf);
        size_t room = cut < sizeof buf ? cut : sizeof buf;
        CHECK(hicache_valkey_last_error(buf, room) == full);
        CHECK(strlen(buf) == room - 1 && memcmp(buf, all, room - 1) == 0);
    }
    free(all);
}

static void test_options_init(void) {
    hicache_valkey_options o;
    memset(&o, 0xA5, sizeof o);
    CHECK_OK(HICACHE_VALKEY_OPTIONS_INIT(&o));
    CHECK(o.struct_size == sizeof(hicache_valkey_options));
    CHECK(o.port == HICACHE_VALKEY_UNSET && o.db == HICACHE_VALKEY_UNSET);
    CHECK(o.tp_rank == HICACHE_VALKEY_UNSET && o.tp_size == HICACHE_VALKEY_UNSET);
    CHECK(o.pp_rank == HICACHE_VALKEY_UNSET && o.pp_size == HICACHE_VALKEY_UNSET);
    CHECK(o.cp_rank == HICACHE_VALKEY_UNSET && o.cp_size == HICACHE_VALKEY_UNSET);
    CHECK(o.checksum == HICACHE_VALKEY_UNSET && o.connections == HICACHE_VALKEY_UNSET);
    CHECK(o.connect_timeout_ms == HICACHE_VALKEY_UNSET && o.timeout_ms == HICACHE_VALKEY_UNSET);
    CHECK(o.is_mla == 0 && o.value_format == 0);
    CHECK(o.url == NULL && o.host == NULL && o.username == NULL && o.password == NULL && o.model_name == NULL);
    CHECK_FAILS(hicache_valkey_options_init(NULL, sizeof(hicache_valkey_options)), HICACHE_STATUS_INVALID_ARGUMENT);
}

/* Opens from the environment only (opts NULL), then from explicit fields and from a URL, and
 * checks all three see the same data; ping on each. */
static void test_open_and_ping(void) {
    char model[64], url[320], port_text[16], host[256];
    hicache_valkey *env_h = NULL, *field_h = NULL, *url_h = NULL;
    hicache_valkey_options o;
    const int32_t port = hv_port();

    snprintf(host, sizeof host, "%s", hv_host()); /* a copy: the variable is unset below */

    hv_model(model, sizeof model, "basics");
    CHECK(setenv("HICACHE_VALKEY_MODEL", model, 1) == 0);
    env_h = (hicache_valkey *)0x1; /* must be overwritten */
    CHECK_OK(hicache_valkey_open(NULL, &env_h));
    CHECK(env_h != NULL && env_h != (hicache_valkey *)0x1);
    CHECK(unsetenv("HICACHE_VALKEY_MODEL") == 0);

    /* Explicit fields, with the environment's address taken out of the picture. */
    snprintf(port_text, sizeof port_text, "%d", (int)port);
    CHECK(unsetenv("VALKEY_HOST") == 0 && unsetenv("VALKEY_PORT") == 0);
    CHECK_OK(HICACHE_VALKEY_OPTIONS_INIT(&o));
    o.host = host;
    o.port = port;
    o.model_name = model;
    o.connections = 2;
    o.connect_timeout_ms = 3000;
    o.timeout_ms = 4000;
    field_h = hv_open_opts(&o);

    CHECK_OK(HICACHE_VALKEY_OPTIONS_INIT(&o));
    snprintf(url, sizeof url, "valkey://%s:%d/0", host, (int)port);
    o.url = url;
    o.model_name = model;
    url_h = hv_open_opts(&o);
    CHECK(setenv("VALKEY_HOST", host, 1) == 0 && setenv("VALKEY_PORT", port_text, 1) == 0);

    /* One write through the env handle, read by the two others. */
    size_t sizes[3] = {100, 200, 300};
    hv_page w, r;
    hv_page_alloc(&w, 3, sizes);
    hv_page_alloc(&r, 3, sizes);
    hv_page_fill(&w, 42);
    hicache_key k = hv_key("basics-key");
    hicache_value wv = hv_page_value(&w), rv = hv_page_value(&r);
    int32_t outcome = -1;
    CHECK_OK(hicache_valkey_batch_set(env_h, &k, &wv, 1, &outcome));
    CHECK(outcome == HICACHE_OUTCOME_OK);
    CHECK(hicache_valkey_last_error(NULL, 0) == 0);
    hicache_valkey *readers[2] = {field_h, url_h};
    for (int i = 0; i < 2; i++) {
        hv_page_memset(&r, 0);
        outcome = -1;
        CHECK_OK(hicache_valkey_batch_get(readers[i], &k, &rv, 1, &outcome));
        CHECK(outcome == HICACHE_OUTCOME_OK);
        CHECK(hv_page_holds(&r, 42));
    }

    /* ping, with and without the round-trip time. */
    hicache_valkey *all[3] = {env_h, field_h, url_h};
    for (int i = 0; i < 3; i++) {
        uint64_t rtt = UINT64_MAX;
        CHECK_OK(hicache_valkey_ping(all[i], &rtt));
        CHECKF(rtt < 10u * 1000 * 1000, "ping rtt %llu us", (unsigned long long)rtt);
        CHECK_OK(hicache_valkey_ping(all[i], NULL));
    }

    uint64_t deleted = 0;
    CHECK_OK(hicache_valkey_clear(env_h, &deleted));
    CHECK(deleted == 1);
    hv_page_free(&w);
    hv_page_free(&r);
    hicache_valkey_close(url_h);
    hicache_valkey_close(field_h);
    hicache_valkey_close(env_h);
    hicache_valkey_close(NULL); /* a no-op */
}

int main(void) {
    (void)hv_host();
    (void)hv_port();

    test_version();
    test_names();
    test_last_error();
    test_options_init();
    test_open_and_ping();
    return hv_done("test_basics");
}
