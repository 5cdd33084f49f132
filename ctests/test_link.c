/*
 * test_static_link / test_shared_link: the same smoke test linked against libhicache_valkey.a
 * (hicache_valkey::hicache_valkey_static) and against the shared library; /proc/self/maps tells
 * which one the process really uses.
 */
#include "hv_test.h"

#ifndef HV_EXPECT_STATIC
#define HV_EXPECT_STATIC 0
#endif

/* Whether a libhicache_valkey.so is mapped into this process. */
static int shared_library_mapped(void) {
    char line[1024];
    int mapped = 0;
    FILE *f = fopen("/proc/self/maps", "r");
    CHECK(f != NULL);
    while (fgets(line, sizeof line, f) != NULL)
        if (strstr(line, "libhicache_valkey.so") != NULL) mapped = 1;
    fclose(f);
    return mapped;
}

int main(void) {
    char model[64];
    hv_model(model, sizeof model, HV_EXPECT_STATIC ? "static" : "shared");
    CHECKF(shared_library_mapped() == !HV_EXPECT_STATIC, "libhicache_valkey.so %s mapped",
           HV_EXPECT_STATIC ? "is" : "is not");
    CHECK(strcmp(hicache_valkey_version(), HV_EXPECTED_VERSION) == 0);

    hicache_valkey *h = hv_open(model);
    const size_t sizes[2] = {65536, 65536};
    hv_page w, r;
    hv_page_alloc(&w, 2, sizes);
    hv_page_alloc(&r, 2, sizes);
    hv_page_fill(&w, 5);
    hicache_key k = hv_key("link-page");
    hicache_value wv = hv_page_value(&w), rv = hv_page_value(&r);
    int32_t out = -1;
    CHECK_OK(hicache_valkey_batch_set(h, &k, &wv, 1, &out));
    CHECK(out == HICACHE_OUTCOME_OK);
    CHECK_OK(hicache_valkey_batch_get(h, &k, &rv, 1, &out));
    CHECK(out == HICACHE_OUTCOME_OK && hv_page_holds(&r, 5));
    CHECK_OK(hicache_valkey_ping(h, NULL));
    uint64_t deleted = 0;
    CHECK_OK(hicache_valkey_clear(h, &deleted));
    CHECK(deleted == 1);
    CHECK_FAILS(hicache_valkey_ping(NULL, NULL), HICACHE_STATUS_INVALID_ARGUMENT);
    hicache_valkey_close(h);
    hv_page_free(&w);
    hv_page_free(&r);
    return hv_done(HV_EXPECT_STATIC ? "test_static_link" : "test_shared_link");
}
