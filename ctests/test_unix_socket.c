/*
 * test_unix_socket: the same zero-copy round trip over the server's Unix domain socket
 * (HV_TEST_SOCKET, set by scripts/ctest.sh, which starts the server with --unixsocket): open
 * with socket_path and with a unix:// URL, 8 values of 2 segments (1 MiB each: 8 MiB, more than
 * the 2 MiB send buffer the library asks for, so writes wait for the server), byte-exact,
 * exists, stats, clear; a socket path where nothing listens is HICACHE_STATUS_CONNECTION naming
 * the path.
 */
#include "hv_test.h"

#define N 8

static const size_t SIZES[2] = {512 << 10, 512 << 10};

static void round_trip(hicache_valkey *h) {
    hv_keybuf kb[N];
    hicache_key keys[N];
    hicache_value wv[N], rv[N];
    hv_page w[N], r[N];
    int32_t out[N];
    uint8_t found[N];
    size_t lead = 0;
    hv_keys(keys, kb, N, "uds");
    for (size_t i = 0; i < N; i++) {
        hv_page_alloc(&w[i], 2, SIZES);
        hv_page_alloc(&r[i], 2, SIZES);
        hv_page_fill(&w[i], 77 + i);
        wv[i] = hv_page_value(&w[i]);
        rv[i] = hv_page_value(&r[i]);
    }
    CHECK_OK(hicache_valkey_batch_set(h, keys, wv, N, out));
    CHECK_OUTCOMES(out, N, HICACHE_OUTCOME_OK);
    CHECK_OK(hicache_valkey_batch_exists(h, keys, N, found, &lead));
    CHECK(lead == N);
    CHECK_OK(hicache_valkey_batch_get(h, keys, rv, N, out));
    CHECK_OUTCOMES(out, N, HICACHE_OUTCOME_OK);
    for (size_t i = 0; i < N; i++) CHECKF(hv_page_holds(&r[i], 77 + i), "page %zu", i);
    hicache_stats s;
    s.struct_size = sizeof s;
    CHECK_OK(hicache_valkey_stats(h, &s));
    CHECK(s.model_keys == N);
    uint64_t deleted = 0;
    CHECK_OK(hicache_valkey_clear(h, &deleted));
    CHECK(deleted == N);
    for (size_t i = 0; i < N; i++) {
        hv_page_free(&w[i]);
        hv_page_free(&r[i]);
    }
}

int main(void) {
    const char *sock = getenv("HV_TEST_SOCKET");
    if (sock == NULL || *sock == '\0') {
        fprintf(stderr, "HV_TEST_SOCKET is not set: run under scripts/ctest.sh\n");
        return 1;
    }
    char model[64], url[512];
    hv_model(model, sizeof model, "uds");

    hicache_valkey_options o;
    hv_options(&o, model);
    o.socket_path = sock;
    hicache_valkey *h = hv_open_opts(&o);
    round_trip(h);
    hicache_valkey_close(h);

    hv_options(&o, model);
    snprintf(url, sizeof url, "unix://%s", sock);
    o.url = url;
    h = hv_open_opts(&o);
    round_trip(h);
    hicache_valkey_close(h);

    hv_options(&o, model);
    o.socket_path = "/nonexistent-hicache-dir/valkey.sock";
    h = NULL;
    CHECK_FAILS(hicache_valkey_open(&o, &h), HICACHE_STATUS_CONNECTION);
    CHECK(h == NULL);
    CHECK(strstr(hv_last_error_str(), "/nonexistent-hicache-dir/valkey.sock") != NULL);
    return hv_done("test_unix_socket");
}
