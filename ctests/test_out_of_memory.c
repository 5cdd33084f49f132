/*
 * test_out_of_memory: against a server started with --maxmemory 4mb --maxmemory-policy
 * noeviction (ctest runs it under its own scripts/with-valkey.sh). Writing more than fits gives
 * HICACHE_OUTCOME_OUT_OF_MEMORY for the keys that did not fit while the call itself succeeds
 * and names the failure in the last error; the stored keys stay readable, and after clear the
 * server takes writes again.
 */
#include "hv_test.h"

#define PAGES 64 /* 64 x 256 KiB = 16 MiB, four times maxmemory */

int main(void) {
    char model[64];
    hv_keybuf kb[PAGES];
    hicache_key keys[PAGES];
    hicache_value vals[PAGES];
    int32_t out[PAGES];
    const size_t sizes[2] = {128 * 1024, 128 * 1024};
    hv_page p, r;

    hv_model(model, sizeof model, "oom");
    hicache_valkey *h = hv_open(model);
    hv_keys(keys, kb, PAGES, "oom");
    hv_page_alloc(&p, 2, sizes);
    hv_page_alloc(&r, 2, sizes);
    hv_page_fill(&p, 3);
    for (size_t i = 0; i < PAGES; i++) vals[i] = hv_page_value(&p);

    hicache_stats s;
    memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    CHECK_OK(hicache_valkey_stats(h, &s));
    CHECK(s.maxmemory_bytes == 4u * 1024 * 1024 && strcmp(s.maxmemory_policy, "noeviction") == 0);

    CHECK_OK(hicache_valkey_batch_set(h, keys, vals, PAGES, out));
    size_t ok = 0, oom = 0;
    for (size_t i = 0; i < PAGES; i++) {
        if (out[i] == HICACHE_OUTCOME_OK) ok++;
        else if (out[i] == HICACHE_OUTCOME_OUT_OF_MEMORY) oom++;
        else hv_fail(__FILE__, __LINE__, "key %zu: %s", i, hicache_valkey_outcome_str(out[i]));
    }
    const char *msg = hv_last_error_str();
    printf("stored %zu of %d pages, %zu out of memory; last error: \"%s\"\n", ok, PAGES, oom, msg);
    CHECK(oom > 0 && ok + oom == PAGES);
    CHECK(msg[0] != '\0');
    CHECK(strstr(msg, "OOM") != NULL || strstr(msg, "memory") != NULL);

    /* What was stored reads back. */
    hicache_value rv = hv_page_value(&r);
    for (size_t i = 0; i < PAGES; i++) {
        int32_t o = -1;
        hv_page_memset(&r, 0);
        CHECK_OK(hicache_valkey_batch_get(h, &keys[i], &rv, 1, &o));
        if (out[i] == HICACHE_OUTCOME_OK) CHECK(o == HICACHE_OUTCOME_OK && hv_page_holds(&r, 3));
        else CHECK(o == HICACHE_OUTCOME_MISS);
    }
    CHECK_OK(hicache_valkey_stats(h, &s));
    CHECK(s.model_keys == ok && s.errors >= oom);

    /* Free the memory; writing works again. */
    uint64_t deleted = 0;
    CHECK_OK(hicache_valkey_clear(h, &deleted));
    CHECK(deleted == ok);
    CHECK_OK(hicache_valkey_batch_set(h, keys, vals, 1, out));
    CHECK(out[0] == HICACHE_OUTCOME_OK);
    CHECK_OK(hicache_valkey_clear(h, NULL));

    hv_page_free(&p);
    hv_page_free(&r);
    hicache_valkey_close(h);
    return hv_done("test_out_of_memory");
}
