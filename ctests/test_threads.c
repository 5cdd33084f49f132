/*
 * test_threads: one handle shared by THREADS pthreads at once. Each thread, for ITERS rounds,
 * writes its own keys and keys shared by all threads in one batch, reads both back and checks
 * them, runs batch_exists, ping and stats, and makes a failing call to check that the last
 * error message is per thread. Shared values are self-describing (their first 8 bytes name the
 * writer), so a reader checks it got one writer's whole value, never a mix.
 */
#include "hv_test.h"

#include <pthread.h>

#define THREADS 6
#define ITERS 20
#define OWN 8
#define SHARED 4
#define BATCH (OWN + SHARED)

static const size_t SIZES[3] = {3000, 3000, 200};
static hicache_valkey *handle;
static pthread_barrier_t start;

/* seed = key << 32 | thread << 16 | round: a shared value's first 8 bytes hold its seed. */
static uint64_t make_seed(uint64_t key, uint64_t tid, uint64_t round) { return key << 32 | tid << 16 | round; }

static void fill_shared(hv_page *p, uint64_t seed) {
    hv_page_fill(p, seed);
    memcpy(p->seg[0].ptr, &seed, sizeof seed);
}

/* Whether p holds a whole value written for shared key `key` by some thread in some round. */
static int holds_shared(const hv_page *p, uint64_t key) {
    uint64_t seed;
    memcpy(&seed, p->seg[0].ptr, sizeof seed);
    if (seed >> 32 != key || ((seed >> 16) & 0xffff) >= THREADS || (seed & 0xffff) >= ITERS) return 0;
    size_t off = 0;
    for (size_t i = 0; i < p->count; i++) {
        const uint8_t *b = (const uint8_t *)p->seg[i].ptr;
        for (size_t j = 0; j < p->seg[i].len; j++, off++)
            if (off >= sizeof seed && b[j] != hv_pattern(seed, off)) return 0;
    }
    return 1;
}

static void *worker(void *arg) {
    const uint64_t tid = (uint64_t)(uintptr_t)arg;
    hv_keybuf kb[BATCH];
    hicache_key keys[BATCH];
    hv_page w[BATCH], r[BATCH];
    hicache_value wv[BATCH], rv[BATCH];
    int32_t out[BATCH];
    uint8_t found[BATCH];
    char prefix[16];

    snprintf(prefix, sizeof prefix, "t%d", (int)tid);
    hv_keys(keys, kb, OWN, prefix);
    hv_keys(keys + OWN, kb + OWN, SHARED, "shared");
    for (size_t i = 0; i < BATCH; i++) {
        hv_page_alloc(&w[i], 3, SIZES);
        hv_page_alloc(&r[i], 3, SIZES);
        wv[i] = hv_page_value(&w[i]);
        rv[i] = hv_page_value(&r[i]);
    }
    pthread_barrier_wait(&start);

    for (uint64_t round = 0; round < ITERS; round++) {
        for (uint64_t i = 0; i < OWN; i++) hv_page_fill(&w[i], make_seed(100 + i, tid, round));
        for (uint64_t i = 0; i < SHARED; i++) fill_shared(&w[OWN + i], make_seed(i, tid, round));
        /* Alternate: everything in one batch, or own and shared keys in two. */
        if (round % 2 == 0) {
            CHECK_OK(hicache_valkey_batch_set(handle, keys, wv, BATCH, out));
        } else {
            CHECK_OK(hicache_valkey_batch_set(handle, keys + OWN, wv + OWN, SHARED, out + OWN));
            CHECK_OK(hicache_valkey_batch_set(handle, keys, wv, OWN, out));
        }
        CHECK_OUTCOMES(out, BATCH, HICACHE_OUTCOME_OK);
        CHECK(hicache_valkey_last_error(NULL, 0) == 0);

        for (size_t i = 0; i < BATCH; i++) hv_page_memset(&r[i], 0);
        CHECK_OK(hicache_valkey_batch_get(handle, keys, rv, BATCH, out));
        CHECK_OUTCOMES(out, BATCH, HICACHE_OUTCOME_OK);
        for (uint64_t i = 0; i < OWN; i++)
            CHECKF(hv_page_holds(&r[i], make_seed(100 + i, tid, round)), "thread %d round %d own key %d", (int)tid,
                   (int)round, (int)i);
        for (uint64_t i = 0; i < SHARED; i++)
            CHECKF(holds_shared(&r[OWN + i], i), "thread %d round %d: shared key %d holds a torn or foreign value",
                   (int)tid, (int)round, (int)i);

        size_t lead = 0;
        memset(found, 0, sizeof found);
        CHECK_OK(hicache_valkey_batch_exists(handle, keys, BATCH, found, &lead));
        CHECK(lead == BATCH);
        for (size_t i = 0; i < BATCH; i++) CHECK(found[i] == 1);

        /* A failing call sets this thread's message only; the next good call clears it. */
        hicache_key empty = {(const uint8_t *)"", 0};
        CHECK_FAILS(hicache_valkey_batch_exists(handle, &empty, 1, NULL, &lead), HICACHE_STATUS_INVALID_ARGUMENT);
        CHECK(strstr(hv_last_error_str(), "empty") != NULL);
        if (round % 5 == 0) {
            uint64_t rtt = 0;
            CHECK_OK(hicache_valkey_ping(handle, &rtt));
            hicache_stats s;
            memset(&s, 0, sizeof s);
            s.struct_size = sizeof s;
            CHECK_OK(hicache_valkey_stats(handle, &s));
            CHECK(s.model_keys >= OWN + SHARED);
        } else {
            CHECK_OK(hicache_valkey_ping(handle, NULL));
        }
        CHECK(hicache_valkey_last_error(NULL, 0) == 0);
    }

    for (size_t i = 0; i < BATCH; i++) {
        hv_page_free(&w[i]);
        hv_page_free(&r[i]);
    }
    return NULL;
}

int main(void) {
    char model[64];
    pthread_t threads[THREADS];
    hicache_valkey_options o;

    hv_model(model, sizeof model, "threads");
    hv_options(&o, model);
    o.connections = 3; /* several connections, so batches really run in parallel */
    handle = hv_open_opts(&o);
    CHECK(pthread_barrier_init(&start, NULL, THREADS) == 0);
    for (uintptr_t t = 0; t < THREADS; t++) CHECK(pthread_create(&threads[t], NULL, worker, (void *)t) == 0);
    for (int t = 0; t < THREADS; t++) CHECK(pthread_join(threads[t], NULL) == 0);
    CHECK(pthread_barrier_destroy(&start) == 0);

    /* Afterwards: own keys hold their thread's last round; shared keys one whole value. */
    hv_page p;
    hv_page_alloc(&p, 3, SIZES);
    hicache_value v = hv_page_value(&p);
    for (uint64_t t = 0; t < THREADS; t++) {
        for (uint64_t i = 0; i < OWN; i++) {
            char key[32];
            snprintf(key, sizeof key, "t%d-%d", (int)t, (int)i);
            hicache_key k = hv_key(key);
            int32_t out = -1;
            CHECK_OK(hicache_valkey_batch_get(handle, &k, &v, 1, &out));
            CHECK(out == HICACHE_OUTCOME_OK && hv_page_holds(&p, make_seed(100 + i, t, ITERS - 1)));
        }
    }
    for (uint64_t i = 0; i < SHARED; i++) {
        char key[32];
        snprintf(key, sizeof key, "shared-%d", (int)i);
        hicache_key k = hv_key(key);
        int32_t out = -1;
        CHECK_OK(hicache_valkey_batch_get(handle, &k, &v, 1, &out));
        CHECK(out == HICACHE_OUTCOME_OK && holds_shared(&p, i));
    }
    hv_page_free(&p);

    hicache_stats s;
    memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    CHECK_OK(hicache_valkey_stats(handle, &s));
    CHECK(s.model_keys == THREADS * OWN + SHARED);
    CHECKF(s.pages_written == (uint64_t)THREADS * ITERS * BATCH, "pages_written %llu",
           (unsigned long long)s.pages_written);
    CHECK(s.get_hits == (uint64_t)THREADS * ITERS * BATCH + THREADS * OWN + SHARED && s.get_misses == 0);
    CHECK(s.exists_hits == (uint64_t)THREADS * ITERS * BATCH);
    CHECK(s.set_calls == (uint64_t)THREADS * (ITERS / 2) * 3);
    CHECK(s.errors == 0 && s.reconnects == 0);
    printf("%d threads x %d rounds: %llu pages written, %llu read; set p50 %llu us, get p50 %llu us\n", THREADS,
           ITERS, (unsigned long long)s.pages_written, (unsigned long long)s.pages_read,
           (unsigned long long)s.set_p50_us, (unsigned long long)s.get_p50_us);

    uint64_t deleted = 0;
    CHECK_OK(hicache_valkey_clear(handle, &deleted));
    CHECK(deleted == THREADS * OWN + SHARED);
    hicache_valkey_close(handle);
    return hv_done("test_threads");
}
