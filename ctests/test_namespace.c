/*
 * test_namespace: what the key namespace isolates and what it shares.
 *   - tp ranks of an MHA model are separate (a miss across ranks);
 *   - MLA handles share one copy whatever their tp rank;
 *   - pp / cp ranks, databases and model names are separate (also a model whose name starts
 *     with another's, and one with ':', '%' and glob characters);
 *   - stats.model_keys counts one model in one database over all its ranks;
 *   - clear deletes exactly that, nothing of the other models or databases.
 */
#include "hv_test.h"

static const size_t SIZES[3] = {512, 512, 64};

typedef struct rank {
    int32_t tp_rank, tp_size, pp_rank, pp_size, cp_rank, cp_size, db;
    uint32_t mla;
} rank;

static hicache_valkey *open_rank(const char *model, rank r) {
    hicache_valkey_options o;
    hv_options(&o, model);
    o.tp_rank = r.tp_rank;
    o.tp_size = r.tp_size;
    o.pp_rank = r.pp_rank;
    o.pp_size = r.pp_size;
    o.cp_rank = r.cp_rank;
    o.cp_size = r.cp_size;
    o.db = r.db;
    o.is_mla = r.mla;
    return hv_open_opts(&o);
}

static void put(hicache_valkey *h, const char *key, uint64_t seed) { hv_put_page(h, key, seed, 3, SIZES); }

/* The outcome of reading `key`; on a hit, the payload must be `seed`; on a miss, untouched. */
static int32_t get(hicache_valkey *h, const char *key, uint64_t seed) {
    hv_page p;
    hv_page_alloc(&p, 3, SIZES);
    hv_page_memset(&p, 0xAB);
    hicache_key k = hv_key(key);
    hicache_value v = hv_page_value(&p);
    int32_t o = -1;
    CHECK_OK(hicache_valkey_batch_get(h, &k, &v, 1, &o));
    if (o == HICACHE_OUTCOME_OK) {
        CHECKF(hv_page_holds(&p, seed), "%s: not payload %llu", key, (unsigned long long)seed);
    } else {
        CHECK(hv_page_is(&p, 0xAB));
    }
    hv_page_free(&p);
    return o;
}

static int exists(hicache_valkey *h, const char *key) {
    hicache_key k = hv_key(key);
    uint8_t f = 0x77;
    size_t lead = 99;
    CHECK_OK(hicache_valkey_batch_exists(h, &k, 1, &f, &lead));
    CHECK(f <= 1 && lead == f);
    return f;
}

static uint64_t model_keys(hicache_valkey *h) {
    hicache_stats s;
    memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    CHECK_OK(hicache_valkey_stats(h, &s));
    return s.model_keys;
}

int main(void) {
    char a[64], b[96], c[128];
    hv_model(a, sizeof a, "ns");
    snprintf(b, sizeof b, "%s-other", a);         /* A's name is a prefix of B's */
    snprintf(c, sizeof c, "%s:weird*?[x]%%", a); /* ':' and '%' are escaped in keys */

    const rank tp0 = {0, 2, 0, 1, 0, 1, 0, 0};
    rank tp1 = tp0, mla0 = tp0, mla1 = tp0, pp1 = tp0, cp1 = tp0, db1 = tp0;
    tp1.tp_rank = 1;
    mla0.mla = 1;
    mla1.mla = 1;
    mla1.tp_rank = 1;
    pp1.pp_rank = 1;
    pp1.pp_size = 2;
    cp1.cp_rank = 1;
    cp1.cp_size = 2;
    db1.db = 1;

    hicache_valkey *a_tp0 = open_rank(a, tp0), *a_tp1 = open_rank(a, tp1);
    hicache_valkey *a_mla0 = open_rank(a, mla0), *a_mla1 = open_rank(a, mla1);
    hicache_valkey *a_pp1 = open_rank(a, pp1), *a_cp1 = open_rank(a, cp1), *a_db1 = open_rank(a, db1);
    hicache_valkey *b_tp0 = open_rank(b, tp0), *c_tp0 = open_rank(c, tp0);

    /* tp ranks of an MHA model do not share. */
    put(a_tp0, "k1", 1);
    CHECK(get(a_tp0, "k1", 1) == HICACHE_OUTCOME_OK);
    CHECK(get(a_tp1, "k1", 1) == HICACHE_OUTCOME_MISS);
    CHECK(exists(a_tp0, "k1") == 1 && exists(a_tp1, "k1") == 0);

    /* MLA: every tp rank reads the one copy; MLA and MHA keys differ. */
    put(a_mla0, "k2", 2);
    CHECK(get(a_mla1, "k2", 2) == HICACHE_OUTCOME_OK);
    CHECK(exists(a_mla1, "k2") == 1);
    CHECK(get(a_tp0, "k2", 2) == HICACHE_OUTCOME_MISS);
    CHECK(get(a_mla1, "k1", 1) == HICACHE_OUTCOME_MISS);
    put(a_mla1, "k2", 22); /* rank 1 overwrites the shared copy */
    CHECK(get(a_mla0, "k2", 22) == HICACHE_OUTCOME_OK);

    /* pp and cp ranks are separate. */
    CHECK(get(a_pp1, "k1", 1) == HICACHE_OUTCOME_MISS);
    CHECK(get(a_cp1, "k1", 1) == HICACHE_OUTCOME_MISS);
    put(a_pp1, "k1", 3);
    put(a_cp1, "k1", 4);
    CHECK(get(a_pp1, "k1", 3) == HICACHE_OUTCOME_OK && get(a_cp1, "k1", 4) == HICACHE_OUTCOME_OK);
    CHECK(get(a_tp0, "k1", 1) == HICACHE_OUTCOME_OK);

    /* Databases are separate. */
    CHECK(get(a_db1, "k1", 1) == HICACHE_OUTCOME_MISS);
    put(a_db1, "k3", 5);
    CHECK(get(a_tp0, "k3", 5) == HICACHE_OUTCOME_MISS);

    /* Models are separate, even with a common prefix or odd characters. */
    CHECK(get(b_tp0, "k1", 1) == HICACHE_OUTCOME_MISS && get(c_tp0, "k1", 1) == HICACHE_OUTCOME_MISS);
    put(b_tp0, "k1", 6);
    put(c_tp0, "k1", 7);
    CHECK(get(a_tp0, "k1", 1) == HICACHE_OUTCOME_OK);
    CHECK(get(b_tp0, "k1", 6) == HICACHE_OUTCOME_OK && get(c_tp0, "k1", 7) == HICACHE_OUTCOME_OK);

    /* model_keys: model A in db 0 over all ranks = k1@tp0, k2@mla, k1@pp1, k1@cp1. */
    CHECKF(model_keys(a_tp1) == 4, "model_keys(A) = %llu", (unsigned long long)model_keys(a_tp1));
    CHECK(model_keys(a_mla0) == 4);
    CHECK(model_keys(a_db1) == 1);
    CHECK(model_keys(b_tp0) == 1 && model_keys(c_tp0) == 1);

    /* clear from any handle of A deletes A's keys of every rank in its db, nothing else. */
    uint64_t deleted = 0;
    CHECK_OK(hicache_valkey_clear(a_tp1, &deleted));
    CHECKF(deleted == 4, "deleted %llu", (unsigned long long)deleted);
    CHECK(get(a_tp0, "k1", 1) == HICACHE_OUTCOME_MISS && get(a_mla1, "k2", 22) == HICACHE_OUTCOME_MISS);
    CHECK(get(a_pp1, "k1", 3) == HICACHE_OUTCOME_MISS && get(a_cp1, "k1", 4) == HICACHE_OUTCOME_MISS);
    CHECK(get(b_tp0, "k1", 6) == HICACHE_OUTCOME_OK && get(c_tp0, "k1", 7) == HICACHE_OUTCOME_OK);
    CHECK(get(a_db1, "k3", 5) == HICACHE_OUTCOME_OK);
    CHECK(model_keys(a_tp0) == 0 && model_keys(b_tp0) == 1 && model_keys(c_tp0) == 1);

    /* Clearing the oddly named model leaves B alone, and the other way round. */
    CHECK_OK(hicache_valkey_clear(c_tp0, &deleted));
    CHECK(deleted == 1);
    CHECK(get(b_tp0, "k1", 6) == HICACHE_OUTCOME_OK);
    CHECK_OK(hicache_valkey_clear(b_tp0, &deleted));
    CHECK(deleted == 1);
    CHECK_OK(hicache_valkey_clear(a_db1, &deleted));
    CHECK(deleted == 1);

    hicache_valkey *all[] = {a_tp0, a_tp1, a_mla0, a_mla1, a_pp1, a_cp1, a_db1, b_tp0, c_tp0};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) hicache_valkey_close(all[i]);
    return hv_done("test_namespace");
}
