/*
 * test_roundtrip: batch_set / batch_get / batch_exists with scatter-gather values of 3 segments,
 * byte-exact; reading with another segmentation; leading hits with a gap; found == NULL; mixed
 * hits and misses; size mismatch (buffers untouched); empty values and zero-length segments;
 * binary keys; overwrite; n == 0 with NULL arrays; stats (struct_size, model_keys, memory,
 * counters); clear.
 */
#include "hv_test.h"

#define N 16

static const size_t SIZES[3] = {1000, 4096, 123}; /* K part, V part, odd tail */

static void stats_of(const hicache_valkey *h, hicache_stats *s) {
    memset(s, 0xCC, sizeof *s);
    s->struct_size = sizeof *s;
    CHECK_OK(hicache_valkey_stats(h, s));
    CHECK(s->struct_size == sizeof *s);
    CHECK(memchr(s->used_memory_human, '\0', sizeof s->used_memory_human) != NULL);
    CHECK(memchr(s->maxmemory_policy, '\0', sizeof s->maxmemory_policy) != NULL);
    CHECK(memchr(s->server_version, '\0', sizeof s->server_version) != NULL);
}

int main(void) {
    char model[64];
    hv_keybuf kb[N];
    hicache_key keys[N];
    hicache_value wv[N], rv[N];
    hv_page w[N], r[N];
    int32_t out[N];
    uint8_t found[N + 2];
    size_t lead = 0;

    hv_model(model, sizeof model, "roundtrip");
    hicache_valkey *h = hv_open(model);
    hv_keys(keys, kb, N, "page");

    hicache_stats s0, s1;
    stats_of(h, &s0);
    CHECK(s0.model_keys == 0);
    CHECK(s0.pages_written == 0 && s0.pages_read == 0 && s0.set_calls == 0 && s0.get_calls == 0);

    /* ---- write N pages of 3 segments, read them back into zeroed buffers ---- */
    for (size_t i = 0; i < N; i++) {
        hv_page_alloc(&w[i], 3, SIZES);
        hv_page_alloc(&r[i], 3, SIZES);
        hv_page_fill(&w[i], 1000 + i);
        wv[i] = hv_page_value(&w[i]);
        rv[i] = hv_page_value(&r[i]);
        out[i] = -1;
    }
    CHECK_OK(hicache_valkey_batch_set(h, keys, wv, N, out));
    CHECK_OUTCOMES(out, N, HICACHE_OUTCOME_OK);
    CHECK(hicache_valkey_last_error(NULL, 0) == 0);

    for (size_t i = 0; i < N; i++) out[i] = -1;
    CHECK_OK(hicache_valkey_batch_get(h, keys, rv, N, out));
    CHECK_OUTCOMES(out, N, HICACHE_OUTCOME_OK);
    for (size_t i = 0; i < N; i++) CHECKF(hv_page_holds(&r[i], 1000 + i), "page %zu", i);

    /* ---- the payload is the segments' concatenation: read it with another split ---- */
    {
        const size_t other[4] = {1, 2000, 0, 3218}; /* same total, one empty segment */
        hv_page p;
        hv_page_alloc(&p, 4, other);
        CHECK(p.total == w[0].total);
        hicache_value v = hv_page_value(&p);
        int32_t o = -1;
        CHECK_OK(hicache_valkey_batch_get(h, &keys[3], &v, 1, &o));
        CHECK(o == HICACHE_OUTCOME_OK);
        CHECK(hv_page_holds(&p, 1003));
        hv_page_free(&p);
    }

    /* ---- exists: leading hits stop at the first gap ---- */
    {
        hicache_key probe[N + 2];
        hicache_key missing = hv_key("page-not-stored");
        /* page-0..4, missing, page-5..N-1, missing */
        size_t m = 0;
        for (size_t i = 0; i < 5; i++) probe[m++] = keys[i];
        probe[m++] = missing;
        for (size_t i = 5; i < N; i++) probe[m++] = keys[i];
        probe[m++] = missing;
        CHECK(m == N + 2);
        memset(found, 0x77, sizeof found);
        lead = 12345;
        CHECK_OK(hicache_valkey_batch_exists(h, probe, m, found, &lead));
        CHECKF(lead == 5, "leading hits %zu", lead);
        for (size_t i = 0; i < m; i++) {
            int expect = !(i == 5 || i == m - 1);
            CHECKF(found[i] == expect, "found[%zu] = %d", i, found[i]);
        }
        /* found may be NULL: only the leading hits. */
        lead = 12345;
        CHECK_OK(hicache_valkey_batch_exists(h, probe, m, NULL, &lead));
        CHECK(lead == 5);
        /* All present; first missing. */
        CHECK_OK(hicache_valkey_batch_exists(h, keys, N, found, &lead));
        CHECK(lead == N);
        for (size_t i = 0; i < N; i++) CHECK(found[i] == 1);
        CHECK_OK(hicache_valkey_batch_exists(h, &probe[5], 3, found, &lead));
        CHECK(lead == 0 && found[0] == 0 && found[1] == 1 && found[2] == 1);
    }

    /* ---- mixed hits and misses; a miss leaves its buffer alone ---- */
    {
        hicache_key mk[3] = {keys[0], hv_key("page-absent"), keys[1]};
        hicache_value mv[3];
        hv_page mp[3];
        int32_t o[3] = {-1, -1, -1};
        for (int i = 0; i < 3; i++) {
            hv_page_alloc(&mp[i], 3, SIZES);
            hv_page_memset(&mp[i], 0xAB);
            mv[i] = hv_page_value(&mp[i]);
        }
        CHECK_OK(hicache_valkey_batch_get(h, mk, mv, 3, o));
        CHECK(o[0] == HICACHE_OUTCOME_OK && o[1] == HICACHE_OUTCOME_MISS && o[2] == HICACHE_OUTCOME_OK);
        CHECK(hv_page_holds(&mp[0], 1000) && hv_page_is(&mp[1], 0xAB) && hv_page_holds(&mp[2], 1001));
        /* A miss is not a failure: no message. */
        CHECK(hicache_valkey_last_error(NULL, 0) == 0);
        for (int i = 0; i < 3; i++) hv_page_free(&mp[i]);
    }

    /* ---- size mismatch: a total one byte longer or shorter is refused, buffers untouched ---- */
    {
        const size_t longer[3] = {1000, 4096, 124}, shorter[3] = {1000, 4095, 123}, half[1] = {2600};
        const size_t *shapes[3] = {longer, shorter, half};
        const size_t counts[3] = {3, 3, 1};
        for (int t = 0; t < 3; t++) {
            hv_page p;
            hv_page_alloc(&p, counts[t], shapes[t]);
            hv_page_memset(&p, 0xAB);
            hicache_value v = hv_page_value(&p);
            int32_t o = -1;
            CHECK_OK(hicache_valkey_batch_get(h, &keys[2], &v, 1, &o));
            CHECKF(o == HICACHE_OUTCOME_SIZE_MISMATCH, "shape %d: %s", t, hicache_valkey_outcome_str(o));
            CHECKF(hv_page_is(&p, 0xAB), "shape %d: the caller's buffer was written", t);
            hv_page_free(&p);
        }
    }

    /* ---- binary keys, an empty value, zero-length segments ---- */
    {
        static const uint8_t bin[] = {'k', 0, 0xff, 0x80, '\n', ':', '*'};
        hicache_key bk[3];
        bk[0].ptr = bin;
        bk[0].len = sizeof bin;
        bk[1].ptr = bin;
        bk[1].len = 1; /* "k": a prefix of the first, a different key */
        bk[2] = hv_key("page-empty-value");
        const size_t with_empty[3] = {0, 77, 0};
        hv_page p0, p1, q0, q1;
        hv_page_alloc(&p0, 3, with_empty);
        hv_page_alloc(&q0, 3, with_empty);
        const size_t one[1] = {31};
        hv_page_alloc(&p1, 1, one);
        hv_page_alloc(&q1, 1, one);
        hv_page_fill(&p0, 7);
        hv_page_fill(&p1, 8);
        hicache_value bv[3] = {hv_page_value(&p0), hv_page_value(&p1), {NULL, 0}};
        int32_t o[3] = {-1, -1, -1};
        CHECK_OK(hicache_valkey_batch_set(h, bk, bv, 3, o));
        CHECK_OUTCOMES(o, 3, HICACHE_OUTCOME_OK);
        hicache_value qv[3] = {hv_page_value(&q0), hv_page_value(&q1), {NULL, 0}};
        o[0] = o[1] = o[2] = -1;
        CHECK_OK(hicache_valkey_batch_get(h, bk, qv, 3, o));
        CHECK_OUTCOMES(o, 3, HICACHE_OUTCOME_OK);
        CHECK(hv_page_holds(&q0, 7) && hv_page_holds(&q1, 8));
        /* The empty value is not a page of 31 bytes. */
        o[0] = -1;
        hv_page_memset(&q1, 0xAB);
        CHECK_OK(hicache_valkey_batch_get(h, &bk[2], &qv[1], 1, o));
        CHECK(o[0] == HICACHE_OUTCOME_SIZE_MISMATCH && hv_page_is(&q1, 0xAB));
        hv_page_free(&p0);
        hv_page_free(&p1);
        hv_page_free(&q0);
        hv_page_free(&q1);
    }

    /* ---- overwrite ---- */
    hv_page_fill(&w[4], 9999);
    CHECK_OK(hicache_valkey_batch_set(h, &keys[4], &wv[4], 1, out));
    CHECK(out[0] == HICACHE_OUTCOME_OK);
    hv_page_memset(&r[4], 0);
    CHECK_OK(hicache_valkey_batch_get(h, &keys[4], &rv[4], 1, out));
    CHECK(out[0] == HICACHE_OUTCOME_OK && hv_page_holds(&r[4], 9999));

    /* ---- n == 0: a no-op, NULL arrays allowed ---- */
    lead = 99;
    CHECK_OK(hicache_valkey_batch_set(h, NULL, NULL, 0, NULL));
    CHECK_OK(hicache_valkey_batch_get(h, NULL, NULL, 0, NULL));
    CHECK_OK(hicache_valkey_batch_exists(h, NULL, 0, NULL, &lead));
    CHECK(lead == 0);

    /* ---- stats: this handle's counters moved, the model's keys are counted ---- */
    stats_of(h, &s1);
    const uint64_t stored = N + 3; /* N pages, two binary keys, the empty value */
    CHECKF(s1.model_keys == stored, "model_keys %llu", (unsigned long long)s1.model_keys);
    CHECK(s1.db_keys >= s1.model_keys);
    CHECK(s1.used_memory_bytes > 0 && s1.used_memory_human[0] != '\0');
    CHECK(s1.maxmemory_policy[0] != '\0' && s1.server_version[0] >= '1' && s1.server_version[0] <= '9');
    CHECK(s1.connected_clients >= 1);
    CHECK(s1.keyspace_hit_ratio >= 0.0 && s1.keyspace_hit_ratio <= 1.0);
    CHECKF(s1.pages_written == N + 3 + 1, "pages_written %llu", (unsigned long long)s1.pages_written);
    CHECK(s1.bytes_written >= (N + 1) * w[0].total);
    CHECK(s1.set_calls >= 3 && s1.get_calls >= 6 && s1.exists_calls >= 4);
    /* get: N pages, 1 re-split, 2 of the mixed batch, 3 binary/empty, 1 overwrite = N + 7 hits;
     * misses: 1 absent, 3 size mismatches, 1 empty-vs-31-bytes = 5. */
    CHECKF(s1.get_hits == N + 7 && s1.get_misses == 5, "get_hits %llu get_misses %llu",
           (unsigned long long)s1.get_hits, (unsigned long long)s1.get_misses);
    CHECK(s1.get_hit_ratio > 0.0 && s1.get_hit_ratio < 1.0);
    CHECKF(s1.exists_hits == 3 * N + 2 && s1.exists_misses == 5, "exists_hits %llu exists_misses %llu",
           (unsigned long long)s1.exists_hits, (unsigned long long)s1.exists_misses);
    CHECKF(s1.pages_read == s1.get_hits, "pages_read %llu", (unsigned long long)s1.pages_read);
    CHECK(s1.bytes_read >= (N + 1) * w[0].total);
    CHECK(s1.errors == 0 && s1.reconnects == 0);
    CHECK(s1.set_p50_us <= s1.set_p99_us && s1.get_p50_us <= s1.get_p99_us);
    CHECK(s1.exists_p50_us <= s1.exists_p99_us);
    printf("stats: model_keys=%llu used_memory=%s get_hit_ratio=%.3f set p50/p99=%llu/%llu us\n",
           (unsigned long long)s1.model_keys, s1.used_memory_human, s1.get_hit_ratio,
           (unsigned long long)s1.set_p50_us, (unsigned long long)s1.set_p99_us);

    /* A caller compiled against a newer, larger struct: the library fills what it knows. */
    {
        unsigned char big[sizeof(hicache_stats) + 64];
        hicache_stats *bs = (hicache_stats *)(void *)big;
        memset(big, 0xEE, sizeof big);
        bs->struct_size = sizeof big;
        CHECK_OK(hicache_valkey_stats(h, bs));
        CHECK(bs->struct_size == sizeof(hicache_stats));
        CHECK(bs->model_keys == stored);
        for (size_t i = sizeof(hicache_stats); i < sizeof big; i++) CHECK(big[i] == 0xEE);
    }

    /* ---- clear: every key of the model goes ---- */
    uint64_t deleted = 0;
    CHECK_OK(hicache_valkey_clear(h, &deleted));
    CHECKF(deleted == stored, "deleted %llu", (unsigned long long)deleted);
    CHECK_OK(hicache_valkey_batch_exists(h, keys, N, found, &lead));
    CHECK(lead == 0);
    for (size_t i = 0; i < N; i++) CHECK(found[i] == 0);
    CHECK_OK(hicache_valkey_clear(h, NULL));
    stats_of(h, &s1);
    CHECK(s1.model_keys == 0);
    CHECK_OK(hicache_valkey_clear(h, &deleted));
    CHECK(deleted == 0);

    for (size_t i = 0; i < N; i++) {
        hv_page_free(&w[i]);
        hv_page_free(&r[i]);
    }
    hicache_valkey_close(h);
    return hv_done("test_roundtrip");
}
