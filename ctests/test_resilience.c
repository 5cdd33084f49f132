/*
 * test_resilience: the data path when the server misbehaves, driven from a raw connection.
 *   - CLIENT KILL drops the handle's connections: the next batches and ping reconnect by
 *     themselves (all keys OK) and stats counts a reconnect; the same for a batch_get of values
 *     large enough to be read over two connections at once (both dropped);
 *   - CLIENT PAUSE stalls the server: batch_get on a live connection gives up after timeout_ms
 *     with HICACHE_OUTCOME_TIMEOUT per key (the call itself returns OK and says why in the last
 *     error), batch_exists counts the keys as absent, and open() fails with
 *     HICACHE_STATUS_TIMEOUT after connect_timeout_ms; once the pause ends everything works.
 */
#include "hv_raw.h"

#include <time.h>

#define PAGES 8
#define PAUSE_MS 1500
#define TIMEOUT_MS 300
#define HV_STR_(x) #x
#define HV_STR(x) HV_STR_(x)

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static void sleep_ms(double ms) {
    struct timespec t;
    t.tv_sec = (time_t)(ms / 1e3);
    t.tv_nsec = (long)((ms - (double)t.tv_sec * 1e3) * 1e6);
    nanosleep(&t, NULL);
}

int main(void) {
    char model[64];
    hv_keybuf kb[PAGES];
    hicache_key keys[PAGES];
    hicache_value wv[PAGES], rv[PAGES];
    int32_t out[PAGES];
    uint8_t found[PAGES];
    size_t lead = 0;
    const size_t sizes[2] = {20000, 20000};
    hv_page w, r;
    hicache_valkey_options o;
    raw conn;

    hv_model(model, sizeof model, "resilience");
    hv_options(&o, model);
    o.timeout_ms = TIMEOUT_MS;
    o.connect_timeout_ms = TIMEOUT_MS;
    o.connections = 1; /* one lane: the pause test knows which connection is used */
    hicache_valkey *h = hv_open_opts(&o);
    raw_connect(&conn);
    hv_keys(keys, kb, PAGES, "res");
    hv_page_alloc(&w, 2, sizes);
    hv_page_alloc(&r, 2, sizes);
    hv_page_fill(&w, 11);
    for (size_t i = 0; i < PAGES; i++) {
        wv[i] = hv_page_value(&w);
        rv[i] = hv_page_value(&r);
    }
    CHECK_OK(hicache_valkey_batch_set(h, keys, wv, PAGES, out));
    CHECK_OUTCOMES(out, PAGES, HICACHE_OUTCOME_OK);

    /* ---- dropped connections: transparent reconnect on the data path ---- */
    const char *kill[] = {"CLIENT", "KILL", "TYPE", "normal"}; /* SKIPME yes: not this one */
    for (int round = 0; round < 3; round++) {
        CHECK(raw_int(&conn, 4, kill) >= 1);
        hv_page_memset(&r, 0);
        CHECK_OK(hicache_valkey_batch_get(h, &keys[round], &rv[round], 1, out));
        CHECK(out[0] == HICACHE_OUTCOME_OK && hv_page_holds(&r, 11));
        CHECK(raw_int(&conn, 4, kill) >= 1);
        CHECK_OK(hicache_valkey_batch_set(h, keys, wv, PAGES, out));
        CHECK_OUTCOMES(out, PAGES, HICACHE_OUTCOME_OK);
        CHECK(raw_int(&conn, 4, kill) >= 1);
        CHECK_OK(hicache_valkey_batch_exists(h, keys, PAGES, found, &lead));
        CHECK(lead == PAGES);
        CHECK(raw_int(&conn, 4, kill) >= 1);
        CHECK_OK(hicache_valkey_ping(h, NULL));
    }

    /* ---- large values (a lane reads them over two connections): both dropped between calls ---- */
    {
        enum { BIG = 4 };
        const size_t big[2] = {3u << 19, 3u << 19}; /* 3 MiB a value, in two segments */
        hv_keybuf bkb[BIG];
        hicache_key bkeys[BIG];
        hicache_value bwv[BIG], brv[BIG];
        int32_t bout[BIG];
        hv_page bw, br;
        hv_keys(bkeys, bkb, BIG, "res-big");
        hv_page_alloc(&bw, 2, big);
        hv_page_alloc(&br, 2, big);
        hv_page_fill(&bw, 12);
        for (size_t i = 0; i < BIG; i++) {
            bwv[i] = hv_page_value(&bw);
            brv[i] = hv_page_value(&br);
        }
        CHECK_OK(hicache_valkey_batch_set(h, bkeys, bwv, BIG, bout));
        CHECK_OUTCOMES(bout, BIG, HICACHE_OUTCOME_OK);
        for (int round = 0; round < 2; round++) {
            hv_page_memset(&br, 0);
            CHECK_OK(hicache_valkey_batch_get(h, bkeys, brv, BIG, bout));
            CHECK_OUTCOMES(bout, BIG, HICACHE_OUTCOME_OK);
            CHECK(hv_page_holds(&br, 12));
            CHECK(raw_int(&conn, 4, kill) >= 2); /* the lane's two pooled connections */
        }
        hv_page_free(&bw);
        hv_page_free(&br);
    }

    /* ---- a stalled server: bounded waits, then recovery ---- */
    CHECK_OK(hicache_valkey_ping(h, NULL)); /* a live pooled connection */
    const char *pause[] = {"CLIENT", "PAUSE", HV_STR(PAUSE_MS), "ALL"};
    raw_ok(&conn, 4, pause);
    const double paused_at = now_ms();

    double t0 = now_ms();
    for (size_t i = 0; i < PAGES; i++) out[i] = -1;
    CHECK_OK(hicache_valkey_batch_get(h, keys, rv, PAGES, out));
    double took = now_ms() - t0;
    CHECKF(took >= TIMEOUT_MS * 0.9 && took < PAUSE_MS * 0.8, "batch_get took %.0f ms with timeout_ms %d", took,
           TIMEOUT_MS);
    CHECK_OUTCOMES(out, PAGES, HICACHE_OUTCOME_TIMEOUT);
    CHECKF(strstr(hv_last_error_str(), "timed out") != NULL, "last error: %s", hv_last_error_str());
    printf("stalled batch_get: %.0f ms, \"%s\"\n", took, hv_last_error_str());

    /* A new connection cannot finish its handshake: open() times out. */
    hicache_valkey *h2 = (hicache_valkey *)(uintptr_t)0x10;
    t0 = now_ms();
    CHECK_FAILS(hicache_valkey_open(&o, &h2), HICACHE_STATUS_TIMEOUT);
    took = now_ms() - t0;
    CHECK(h2 == NULL);
    CHECKF(took < PAUSE_MS * 0.9, "open took %.0f ms with connect_timeout_ms %d", took, TIMEOUT_MS);
    printf("open while stalled: %.0f ms, \"%s\"\n", took, hv_last_error_str());
    CHECKF(now_ms() - paused_at < PAUSE_MS, "the checks outlasted the pause; timings are off");

    /* After the pause: back to normal. */
    sleep_ms(PAUSE_MS - (now_ms() - paused_at) + 200);
    hv_page_memset(&r, 0);
    CHECK_OK(hicache_valkey_batch_get(h, keys, rv, PAGES, out));
    CHECK_OUTCOMES(out, PAGES, HICACHE_OUTCOME_OK);
    CHECK(hv_page_holds(&r, 11));
    CHECK_OK(hicache_valkey_batch_exists(h, keys, PAGES, found, &lead));
    CHECK(lead == PAGES);
    CHECK(hicache_valkey_last_error(NULL, 0) == 0);

    hicache_stats s;
    memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    CHECK_OK(hicache_valkey_stats(h, &s));
    CHECKF(s.reconnects >= 1, "reconnects %llu", (unsigned long long)s.reconnects);
    CHECKF(s.errors >= PAGES, "errors %llu", (unsigned long long)s.errors);
    uint64_t deleted = 0;
    CHECK_OK(hicache_valkey_clear(h, &deleted));
    CHECK(deleted == PAGES + 4);

    raw_close(&conn);
    hv_page_free(&w);
    hv_page_free(&r);
    hicache_valkey_close(h);
    return hv_done("test_resilience");
}
