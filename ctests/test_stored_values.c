/*
 * test_stored_values: what the stored header protects against, checked with a second, raw
 * connection to the same server (a minimal RESP client below) that looks at and damages the
 * stored values under their documented keys ("hicache:{model}:t{tp_rank}of{tp_size}:{key}") and
 * layout (32-byte header "HCVK", version, flags, length, value format, xxh3-64; then payload).
 *   - value_format: two handles with different fingerprints: FORMAT_MISMATCH, buffer untouched,
 *     while batch_exists still reports the key;
 *   - checksum option: the flag is stored; a handle without the option still verifies; a
 *     damaged payload is CHECKSUM_MISMATCH (and undetected without a checksum);
 *   - values not written by the library: FOREIGN, buffer untouched;
 *   - clear leaves keys outside the library's namespace alone.
 */
#include "hv_raw.h"

/* ---- the test ---- */

static const size_t SIZES[3] = {300, 700, 24}; /* total 1024 */
#define TOTAL 1024
#define HEADER 32

static int32_t get1(hicache_valkey *h, const char *key, hv_page *p) {
    hicache_key k = hv_key(key);
    hicache_value v = hv_page_value(p);
    int32_t o = -1;
    CHECK_OK(hicache_valkey_batch_get(h, &k, &v, 1, &o));
    return o;
}

static void set1(hicache_valkey *h, const char *key, uint64_t seed) { hv_put_page(h, key, seed, 3, SIZES); }

int main(void) {
    char model[64], full[4][128], other[96];
    hicache_valkey_options o;
    raw r;
    hv_page p;

    hv_model(model, sizeof model, "stored");
    hv_options(&o, model);
    o.value_format = 0xA;
    hicache_valkey *fmt_a = hv_open_opts(&o);
    o.value_format = 0xB;
    hicache_valkey *fmt_b = hv_open_opts(&o);
    o.value_format = 0xA;
    o.checksum = 1;
    hicache_valkey *ck = hv_open_opts(&o);
    raw_connect(&r);
    hv_page_alloc(&p, 3, SIZES);
    for (int i = 0; i < 4; i++) snprintf(full[i], sizeof full[i], "hicache:%s:t0of1:page-%d", model, i);

    /* value_format: B cannot read what A wrote; EXISTS cannot tell. */
    set1(fmt_a, "page-0", 100);
    hv_page_memset(&p, 0xAB);
    CHECK(get1(fmt_b, "page-0", &p) == HICACHE_OUTCOME_FORMAT_MISMATCH);
    CHECK(hv_page_is(&p, 0xAB));
    {
        hicache_key k = hv_key("page-0");
        uint8_t f = 0;
        size_t lead = 0;
        CHECK_OK(hicache_valkey_batch_exists(fmt_b, &k, 1, &f, &lead));
        CHECK(f == 1 && lead == 1);
    }
    CHECK(get1(fmt_a, "page-0", &p) == HICACHE_OUTCOME_OK && hv_page_holds(&p, 100));

    /* The documented key and value layout. */
    {
        const char *strlen_cmd[] = {"STRLEN", full[0]};
        CHECKF(raw_int(&r, 2, strlen_cmd) == HEADER + TOTAL, "%s is not stored as header + payload", full[0]);
        const char *head_cmd[] = {"GETRANGE", full[0], "0", "31"};
        reply rep = raw_cmd(&r, 4, head_cmd, NULL);
        CHECK(rep.type == '$' && rep.number == HEADER);
        const unsigned char *hd = (const unsigned char *)rep.data;
        CHECK(memcmp(hd, "HCVK", 4) == 0 && hd[4] == 1 && hd[5] == 0); /* magic, version 1 */
        CHECK((hd[6] & 1) == 0);                                     /* no checksum */
        CHECK(hd[8] == (TOTAL & 0xff) && hd[9] == (TOTAL >> 8));     /* payload length, LE */
        CHECK(hd[16] == 0xA);                                         /* value format, LE */
        free(rep.data);
    }

    /* checksum = 1: stored with the flag; read back by the checksum handle and by one without
     * the option (stored checksums are always verified). */
    set1(ck, "page-1", 101);
    {
        const char *head_cmd[] = {"GETRANGE", full[1], "6", "6"};
        reply rep = raw_cmd(&r, 4, head_cmd, NULL);
        CHECK(rep.type == '$' && rep.number == 1 && (rep.data[0] & 1) == 1);
        free(rep.data);
    }
    hv_page_memset(&p, 0);
    CHECK(get1(ck, "page-1", &p) == HICACHE_OUTCOME_OK && hv_page_holds(&p, 101));
    hv_page_memset(&p, 0);
    CHECK(get1(fmt_a, "page-1", &p) == HICACHE_OUTCOME_OK && hv_page_holds(&p, 101));

    /* Damage the last payload byte of both values. */
    for (int i = 0; i < 2; i++) {
        char off[16];
        snprintf(off, sizeof off, "%d", HEADER + TOTAL - 1);
        const char *get_cmd[] = {"GETRANGE", full[i], off, off};
        reply rep = raw_cmd(&r, 4, get_cmd, NULL);
        CHECK(rep.type == '$' && rep.number == 1);
        char flipped[1] = {(char)(rep.data[0] ^ 0x5A)};
        free(rep.data);
        const char *set_cmd[] = {"SETRANGE", full[i], off, flipped};
        const size_t lens[] = {8, strlen(full[i]), strlen(off), 1};
        rep = raw_cmd(&r, 4, set_cmd, lens);
        CHECK(rep.type == ':' && rep.number == HEADER + TOTAL);
    }
    CHECK(get1(ck, "page-1", &p) == HICACHE_OUTCOME_CHECKSUM_MISMATCH);
    CHECK(get1(fmt_a, "page-1", &p) == HICACHE_OUTCOME_CHECKSUM_MISMATCH);
    /* Without a checksum the damage goes unnoticed: that is what the option is for. */
    hv_page_memset(&p, 0);
    CHECK(get1(fmt_a, "page-0", &p) == HICACHE_OUTCOME_OK);
    CHECK(hv_page_first_diff(&p, 100) == TOTAL - 1); /* only the damaged byte differs */
    {
        const uint8_t *last = (const uint8_t *)p.seg[2].ptr + p.seg[2].len - 1;
        CHECK((uint8_t)(*last ^ 0x5A) == hv_pattern(100, TOTAL - 1));
    }

    /* Foreign values under the library's keys: plain text, a short value, a bad version, a
     * header whose length does not match the stored size. */
    {
        static char bad_version[HEADER + TOTAL], bad_length[HEADER + TOTAL];
        memset(bad_version, 0, sizeof bad_version);
        memcpy(bad_version, "HCVK\x02\x00", 6);
        memcpy(bad_length, "HCVK\x01\x00\x00\x00", 8);
        memset(bad_length + 8, 0, sizeof bad_length - 8);
        bad_length[8] = (char)0xff; /* claims 255 bytes, holds 1024 */
        bad_length[16] = 0xA;
        const char *values[4] = {"hello, world", "HCVK", bad_version, bad_length};
        const size_t lens[4] = {12, 4, sizeof bad_version, sizeof bad_length};
        for (int i = 0; i < 4; i++) {
            const char *set_cmd[] = {"SET", full[2], values[i]};
            const size_t set_lens[] = {3, strlen(full[2]), lens[i]};
            reply rep = raw_cmd(&r, 3, set_cmd, set_lens);
            CHECK(rep.type == '+');
            free(rep.data);
            hv_page_memset(&p, 0xAB);
            int32_t got = get1(fmt_a, "page-2", &p);
            CHECKF(got == HICACHE_OUTCOME_FOREIGN, "foreign value %d: %s", i, hicache_valkey_outcome_str(got));
            CHECK(hv_page_is(&p, 0xAB));
        }
        /* A value of another type (a list) under a page key: an error or a foreign value for
         * that key, never a hit, and the batch's other keys are served. */
        const char *del_cmd[] = {"DEL", full[3]};
        (void)raw_int(&r, 2, del_cmd);
        const char *push_cmd[] = {"RPUSH", full[3], "x"};
        CHECK(raw_int(&r, 3, push_cmd) == 1);
        hicache_key ks[2] = {hv_key("page-3"), hv_key("page-1")};
        hv_page q;
        hv_page_alloc(&q, 3, SIZES);
        hicache_value vs[2] = {hv_page_value(&p), hv_page_value(&q)};
        int32_t outs[2] = {-1, -1};
        hv_page_memset(&p, 0xAB);
        set1(ck, "page-1", 101); /* repair page-1 */
        CHECK_OK(hicache_valkey_batch_get(fmt_a, ks, vs, 2, outs));
        CHECKF(outs[0] != HICACHE_OUTCOME_OK && outs[0] != HICACHE_OUTCOME_MISS, "a list under a page key: %s",
               hicache_valkey_outcome_str(outs[0]));
        printf("a list under a page key reads as %s (last error: \"%s\")\n", hicache_valkey_outcome_str(outs[0]),
               hv_last_error_str());
        CHECK(hv_page_is(&p, 0xAB));
        CHECK(outs[1] == HICACHE_OUTCOME_OK && hv_page_holds(&q, 101));
        hv_page_free(&q);
    }

    /* clear: only this model's keys, not a key outside the namespace. */
    snprintf(other, sizeof other, "ctest-unrelated-%ld", (long)getpid());
    {
        const char *set_cmd[] = {"SET", other, "keep me"};
        reply rep = raw_cmd(&r, 3, set_cmd, NULL);
        free(rep.data);
    }
    uint64_t deleted = 0;
    CHECK_OK(hicache_valkey_clear(fmt_b, &deleted));
    CHECKF(deleted == 4, "deleted %llu", (unsigned long long)deleted);
    const char *exists_cmd[] = {"EXISTS", other, full[0], full[1], full[2], full[3]};
    CHECK(raw_int(&r, 6, exists_cmd) == 1);
    const char *del_cmd[] = {"DEL", other};
    CHECK(raw_int(&r, 2, del_cmd) == 1);

    close(r.fd);
    hv_page_free(&p);
    hicache_valkey_close(ck);
    hicache_valkey_close(fmt_b);
    hicache_valkey_close(fmt_a);
    return hv_done("test_stored_values");
}
