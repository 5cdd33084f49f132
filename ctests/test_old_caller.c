/*
 * test_old_caller: a program compiled against the first published header (0.1) keeps working
 * with this library, whatever fields later versions append to hicache_valkey_options.
 *
 * The "old" caller declares its own copy of the first published options layout (104 bytes,
 * HICACHE_VALKEY_OPTIONS_V1_SIZE) instead of using the header's struct, puts it in a larger
 * buffer filled with a guard pattern, and checks that
 *   - hicache_valkey_options_init(opts, 104) writes the 104 bytes and not one byte past them;
 *   - open() with that struct connects, and a set / get / exists round trip works;
 *   - a size below 104 and a size above this library's struct are INVALID_ARGUMENT, writing
 *     nothing, the latter with a message that names a newer header.
 */
#include "hv_test.h"

#include <stddef.h>

/* The first published hicache_valkey_options (hicache_valkey 0.1.0), field for field. Never
 * change this copy: it stands for programs built against that header. */
typedef struct old_options_v1 {
    uint32_t struct_size;
    int32_t port;
    int32_t db;
    int32_t tp_rank;
    int32_t tp_size;
    int32_t pp_rank;
    int32_t pp_size;
    int32_t cp_rank;
    int32_t cp_size;
    int32_t checksum;
    int32_t connect_timeout_ms;
    int32_t timeout_ms;
    int32_t connections;
    uint32_t is_mla;
    uint64_t value_format;
    const char *url;
    const char *host;
    const char *username;
    const char *password;
    const char *model_name;
} old_options_v1;

#if UINTPTR_MAX == 0xffffffffffffffffu
_Static_assert(sizeof(old_options_v1) == 104, "the first published options struct is 104 bytes");
_Static_assert(HICACHE_VALKEY_OPTIONS_V1_SIZE == 104, "HICACHE_VALKEY_OPTIONS_V1_SIZE pins the first size");
_Static_assert(offsetof(old_options_v1, value_format) == 56, "v1 layout");
_Static_assert(offsetof(old_options_v1, model_name) == 96, "v1 layout");
#endif
/* Later versions only append: the fields the old caller knows keep their offsets. */
_Static_assert(offsetof(hicache_valkey_options, port) == offsetof(old_options_v1, port), "port moved");
_Static_assert(offsetof(hicache_valkey_options, timeout_ms) == offsetof(old_options_v1, timeout_ms), "timeout_ms moved");
_Static_assert(offsetof(hicache_valkey_options, value_format) == offsetof(old_options_v1, value_format), "value_format moved");
_Static_assert(offsetof(hicache_valkey_options, host) == offsetof(old_options_v1, host), "host moved");
_Static_assert(offsetof(hicache_valkey_options, model_name) == offsetof(old_options_v1, model_name), "model_name moved");
_Static_assert(sizeof(hicache_valkey_options) >= sizeof(old_options_v1), "the options struct only grows");

#define GUARD 0xA5
#define GUARD_LEN 256

/* The old caller's struct with guard bytes behind it (and enough room for any newer size). */
typedef struct old_buffer {
    old_options_v1 opts;
    unsigned char guard[GUARD_LEN];
} old_buffer;

static int guard_intact(const old_buffer *b) {
    for (size_t i = 0; i < GUARD_LEN; i++)
        if (b->guard[i] != GUARD) {
            fprintf(stderr, "  guard byte %zu past the 104-byte struct is 0x%02x\n", i, b->guard[i]);
            return 0;
        }
    return 1;
}

static int all_bytes(const void *p, size_t n, unsigned char byte) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != byte) return 0;
    return 1;
}

int main(void) {
    old_buffer b;
    memset(&b, GUARD, sizeof b);

    /* ---- init writes exactly the old struct ---- */
    CHECK_OK(hicache_valkey_options_init((hicache_valkey_options *)(void *)&b.opts, sizeof b.opts));
    CHECK(guard_intact(&b));
    CHECK(b.opts.struct_size == 104);
    CHECK(b.opts.port == HICACHE_VALKEY_UNSET && b.opts.db == HICACHE_VALKEY_UNSET);
    CHECK(b.opts.tp_rank == HICACHE_VALKEY_UNSET && b.opts.tp_size == HICACHE_VALKEY_UNSET);
    CHECK(b.opts.pp_rank == HICACHE_VALKEY_UNSET && b.opts.pp_size == HICACHE_VALKEY_UNSET);
    CHECK(b.opts.cp_rank == HICACHE_VALKEY_UNSET && b.opts.cp_size == HICACHE_VALKEY_UNSET);
    CHECK(b.opts.checksum == HICACHE_VALKEY_UNSET && b.opts.connections == HICACHE_VALKEY_UNSET);
    CHECK(b.opts.connect_timeout_ms == HICACHE_VALKEY_UNSET && b.opts.timeout_ms == HICACHE_VALKEY_UNSET);
    CHECK(b.opts.is_mla == 0 && b.opts.value_format == 0);
    CHECK(b.opts.url == NULL && b.opts.host == NULL && b.opts.username == NULL && b.opts.password == NULL &&
          b.opts.model_name == NULL);

    /* ---- open with it, and a round trip ---- */
    char model[64];
    hv_model(model, sizeof model, "old-caller");
    b.opts.host = hv_host();
    b.opts.port = hv_port();
    b.opts.model_name = model;
    b.opts.value_format = 0x01d0ca11e5ull;
    hicache_valkey *h = NULL;
    CHECK_OK(hicache_valkey_open((const hicache_valkey_options *)(const void *)&b.opts, &h));
    CHECK(h != NULL);
    CHECK(guard_intact(&b));

    const size_t sizes[2] = {3000, 5000};
    hv_page w, r;
    hv_page_alloc(&w, 2, sizes);
    hv_page_alloc(&r, 2, sizes);
    hv_page_fill(&w, 104);
    hicache_key k = hv_key("old-caller-page");
    hicache_value wv = hv_page_value(&w), rv = hv_page_value(&r);
    int32_t out = -1;
    CHECK_OK(hicache_valkey_batch_set(h, &k, &wv, 1, &out));
    CHECK(out == HICACHE_OUTCOME_OK);
    out = -1;
    CHECK_OK(hicache_valkey_batch_get(h, &k, &rv, 1, &out));
    CHECK(out == HICACHE_OUTCOME_OK);
    CHECK(hv_page_holds(&r, 104));
    uint8_t found = 0;
    size_t lead = 0;
    CHECK_OK(hicache_valkey_batch_exists(h, &k, 1, &found, &lead));
    CHECK(found == 1 && lead == 1);
    uint64_t deleted = 0;
    CHECK_OK(hicache_valkey_clear(h, &deleted));
    CHECK(deleted == 1);
    hicache_valkey_close(h);
    hv_page_free(&w);
    hv_page_free(&r);

    /* ---- sizes the library cannot serve: rejected, nothing written ---- */
    const size_t too_small[] = {0, 4, 8, HICACHE_VALKEY_OPTIONS_V1_SIZE - 8, HICACHE_VALKEY_OPTIONS_V1_SIZE - 1};
    for (size_t i = 0; i < sizeof too_small / sizeof too_small[0]; i++) {
        memset(&b, GUARD, sizeof b);
        CHECK_FAILS(hicache_valkey_options_init((hicache_valkey_options *)(void *)&b.opts, too_small[i]),
                    HICACHE_STATUS_INVALID_ARGUMENT);
        CHECKF(all_bytes(&b, sizeof b, GUARD), "init with size %zu wrote into the struct", too_small[i]);
    }
    /* A program built against a header newer than this library. */
    const size_t newer = sizeof(hicache_valkey_options) + 8;
    CHECK(newer <= sizeof b);
    memset(&b, GUARD, sizeof b);
    CHECK_FAILS(hicache_valkey_options_init((hicache_valkey_options *)(void *)&b, newer), HICACHE_STATUS_INVALID_ARGUMENT);
    CHECKF(strstr(hv_last_error_str(), "newer") != NULL &&
               (strstr(hv_last_error_str(), "hicache_valkey.h") != NULL || strstr(hv_last_error_str(), "header") != NULL),
           "message does not name a newer header: \"%s\"", hv_last_error_str());
    CHECK(all_bytes(&b, sizeof b, GUARD));

    /* open() checks struct_size the same way. */
    CHECK_OK(hicache_valkey_options_init((hicache_valkey_options *)(void *)&b.opts, sizeof b.opts));
    b.opts.host = hv_host();
    b.opts.port = hv_port();
    b.opts.model_name = model;
    h = (hicache_valkey *)(uintptr_t)0x10;
    b.opts.struct_size = HICACHE_VALKEY_OPTIONS_V1_SIZE - 4;
    CHECK_FAILS(hicache_valkey_open((const hicache_valkey_options *)(const void *)&b.opts, &h), HICACHE_STATUS_INVALID_ARGUMENT);
    CHECK(h == NULL);
    h = (hicache_valkey *)(uintptr_t)0x10;
    b.opts.struct_size = (uint32_t)newer;
    CHECK_FAILS(hicache_valkey_open((const hicache_valkey_options *)(const void *)&b.opts, &h), HICACHE_STATUS_INVALID_ARGUMENT);
    CHECK(h == NULL);
    CHECK(strstr(hv_last_error_str(), "newer") != NULL);

    return hv_done("test_old_caller");
}
