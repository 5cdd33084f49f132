/*
 * hv_test.h - tiny helpers shared by the C tests of hicache_valkey (C11, header only).
 *
 * Every test talks to a real valkey-server whose address comes from VALKEY_HOST / VALKEY_PORT
 * (scripts/with-valkey.sh sets them). A failed check prints where and why (with the library's
 * last error message) and exits with status 1; hv_done() prints how many checks passed.
 */
#ifndef HV_TEST_H
#define HV_TEST_H

#include "hicache_valkey.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The ABI's struct sizes on a 64-bit target (pinned by the Rust side's layout tests too). */
#if UINTPTR_MAX == 0xffffffffffffffffu
_Static_assert(sizeof(hicache_key) == 16, "hicache_key is 16 bytes");
_Static_assert(sizeof(hicache_segment) == 16, "hicache_segment is 16 bytes");
_Static_assert(sizeof(hicache_value) == 16, "hicache_value is 16 bytes");
_Static_assert(sizeof(hicache_valkey_options) == 160, "hicache_valkey_options is 160 bytes");
_Static_assert(sizeof(hicache_stats) == 360, "hicache_stats is 360 bytes");
#endif
_Static_assert(sizeof(hicache_status) == sizeof(int32_t), "statuses travel as int32_t");

static atomic_long hv_checks_passed;

static inline const char *hv_last_error_str(void) {
    /* Per thread, so a thread-local copy is what a multi-threaded test needs. */
    static _Thread_local char buf[512];
    hicache_valkey_last_error(buf, sizeof buf);
    return buf;
}

static inline void hv_fail(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "FAIL %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    exit(1);
}

static inline void hv_pass(void) { atomic_fetch_add(&hv_checks_passed, 1); }

/* CHECK(cond) / CHECKF(cond, fmt, ...): a plain assertion, with an optional message. */
#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) hv_fail(__FILE__, __LINE__, "%s", #cond);                         \
        hv_pass();                                                                     \
    } while (0)
#define CHECKF(cond, ...)                                                              \
    do {                                                                               \
        if (!(cond)) hv_fail(__FILE__, __LINE__, __VA_ARGS__);                         \
        hv_pass();                                                                     \
    } while (0)

static inline void hv_check_status(int32_t got, int32_t want, const char *file, int line, const char *expr) {
    if (got != want) {
        const char *msg = hv_last_error_str();
        hv_fail(file, line, "%s returned %s (%d), expected %s; last error: \"%s\"", expr,
                hicache_valkey_status_str(got), (int)got, hicache_valkey_status_str(want), msg);
    }
    hv_pass();
}

/* The call returns `want`. */
#define CHECK_STATUS(expr, want) hv_check_status((int32_t)(expr), (int32_t)(want), __FILE__, __LINE__, #expr)
/* The call succeeds. */
#define CHECK_OK(expr) CHECK_STATUS(expr, HICACHE_STATUS_OK)

static inline void hv_check_fails(int32_t got, int32_t want, const char *file, int line, const char *expr) {
    /* Read the message before anything else can reset it. */
    size_t len = hicache_valkey_last_error(NULL, 0);
    const char *msg = hv_last_error_str();
    if (got != want) {
        hv_fail(file, line, "%s returned %s (%d), expected %s; last error: \"%s\"", expr,
                hicache_valkey_status_str(got), (int)got, hicache_valkey_status_str(want), msg);
    }
    if (len == 0 || msg[0] == '\0') {
        hv_fail(file, line, "%s returned %s as expected but hicache_valkey_last_error() is empty", expr,
                hicache_valkey_status_str(got));
    }
    if (getenv("HV_TEST_VERBOSE") != NULL) printf("  ok: %s -> %s: %s\n", expr, hicache_valkey_status_str(got), msg);
    hv_pass();
}

/* The call fails with `want` (not OK) and leaves a non-empty last error message. */
#define CHECK_FAILS(expr, want) hv_check_fails((int32_t)(expr), (int32_t)(want), __FILE__, __LINE__, #expr)

/* outcomes[i] == want for i in [0, n). */
#define CHECK_OUTCOMES(outcomes, n, want)                                                        \
    do {                                                                                         \
        for (size_t hv_i_ = 0; hv_i_ < (size_t)(n); hv_i_++) {                                   \
            if ((outcomes)[hv_i_] != (int32_t)(want))                                            \
                hv_fail(__FILE__, __LINE__, "%s[%zu] is %s, expected %s (last error: \"%s\")",   \
                        #outcomes, hv_i_, hicache_valkey_outcome_str((outcomes)[hv_i_]),         \
                        hicache_valkey_outcome_str(want), hv_last_error_str());                  \
        }                                                                                        \
        hv_pass();                                                                               \
    } while (0)

static inline int hv_done(const char *name) {
    printf("%s: %ld checks passed\n", name, (long)atomic_load(&hv_checks_passed));
    return 0;
}

/* ---- the server ---------------------------------------------------------------------------- */

static inline const char *hv_host(void) {
    const char *h = getenv("VALKEY_HOST");
    if (h == NULL || *h == '\0') {
        fprintf(stderr, "VALKEY_HOST is not set: run the tests under scripts/with-valkey.sh\n");
        exit(1);
    }
    return h;
}

static inline int32_t hv_port(void) {
    const char *p = getenv("VALKEY_PORT");
    char *end = NULL;
    long v = p != NULL ? strtol(p, &end, 10) : 0;
    if (p == NULL || *p == '\0' || *end != '\0' || v < 1 || v > 65535) {
        fprintf(stderr, "VALKEY_PORT is not set (or not a port): run the tests under scripts/with-valkey.sh\n");
        exit(1);
    }
    return (int32_t)v;
}

/* A model name unique to this process: "ctest-<tag>-<pid>". */
static inline void hv_model(char *buf, size_t len, const char *tag) {
    snprintf(buf, len, "ctest-%s-%ld", tag, (long)getpid());
}

/* Options for `model`; host and port stay unset so they come from the environment. */
static inline void hv_options(hicache_valkey_options *o, const char *model) {
    CHECK_OK(HICACHE_VALKEY_OPTIONS_INIT(o));
    o->model_name = model;
}

static inline hicache_valkey *hv_open_opts(const hicache_valkey_options *o) {
    hicache_valkey *h = NULL;
    CHECK_OK(hicache_valkey_open(o, &h));
    CHECK(h != NULL);
    return h;
}

static inline hicache_valkey *hv_open(const char *model) {
    hicache_valkey_options o;
    hv_options(&o, model);
    return hv_open_opts(&o);
}

/* ---- pages: a value of up to 4 caller-owned segments ------------------------------------- */

#define HV_MAX_SEGS 4

typedef struct hv_page {
    hicache_segment seg[HV_MAX_SEGS];
    size_t count;
    size_t total;
} hv_page;

static inline void *hv_xmalloc(size_t n) {
    void *p = malloc(n == 0 ? 1 : n);
    if (p == NULL) {
        fprintf(stderr, "out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

/* Allocates `count` segments of the given sizes (a size of 0 gives a NULL pointer). */
static inline void hv_page_alloc(hv_page *p, size_t count, const size_t *sizes) {
    if (count > HV_MAX_SEGS) hv_fail(__FILE__, __LINE__, "too many segments");
    memset(p, 0, sizeof *p);
    p->count = count;
    for (size_t i = 0; i < count; i++) {
        p->seg[i].len = sizes[i];
        p->seg[i].ptr = sizes[i] == 0 ? NULL : hv_xmalloc(sizes[i]);
        if (sizes[i] != 0) memset(p->seg[i].ptr, 0, sizes[i]);
        p->total += sizes[i];
    }
}

static inline void hv_page_free(hv_page *p) {
    for (size_t i = 0; i < p->count; i++) free(p->seg[i].ptr);
    memset(p, 0, sizeof *p);
}

static inline hicache_value hv_page_value(const hv_page *p) {
    hicache_value v;
    v.segments = p->count == 0 ? NULL : p->seg;
    v.count = p->count;
    return v;
}

/* The byte at offset `off` of the payload identified by `seed` (cheap, position dependent). */
static inline uint8_t hv_pattern(uint64_t seed, size_t off) {
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + (uint64_t)off * 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    x *= 0x94D049BB133111EBull;
    return (uint8_t)(x >> 56);
}

/* Fills the concatenation of the page's segments with the payload `seed`. */
static inline void hv_page_fill(hv_page *p, uint64_t seed) {
    size_t off = 0;
    for (size_t i = 0; i < p->count; i++) {
        uint8_t *b = (uint8_t *)p->seg[i].ptr;
        for (size_t j = 0; j < p->seg[i].len; j++) b[j] = hv_pattern(seed, off++);
    }
}

/* The first payload offset where the page differs from payload `seed`, or SIZE_MAX. */
static inline size_t hv_page_first_diff(const hv_page *p, uint64_t seed) {
    size_t off = 0;
    for (size_t i = 0; i < p->count; i++) {
        const uint8_t *b = (const uint8_t *)p->seg[i].ptr;
        for (size_t j = 0; j < p->seg[i].len; j++, off++)
            if (b[j] != hv_pattern(seed, off)) return off;
    }
    return SIZE_MAX;
}

/* Whether the page holds payload `seed` (prints the first difference when not). */
static inline int hv_page_holds(const hv_page *p, uint64_t seed) {
    size_t off = hv_page_first_diff(p, seed);
    if (off != SIZE_MAX) {
        fprintf(stderr, "  the page is not payload %llu: first difference at offset %zu of %zu\n",
                (unsigned long long)seed, off, p->total);
        return 0;
    }
    return 1;
}

static inline void hv_page_memset(hv_page *p, int byte) {
    for (size_t i = 0; i < p->count; i++)
        if (p->seg[i].len != 0) memset(p->seg[i].ptr, byte, p->seg[i].len);
}

/* Whether every byte of the page is `byte` (a buffer the library must not have touched). */
static inline int hv_page_is(const hv_page *p, int byte) {
    for (size_t i = 0; i < p->count; i++) {
        const uint8_t *b = (const uint8_t *)p->seg[i].ptr;
        for (size_t j = 0; j < p->seg[i].len; j++)
            if (b[j] != (uint8_t)byte) return 0;
    }
    return 1;
}

/* ---- keys ----------------------------------------------------------------------------------- */

#define HV_KEY_MAX 48

typedef struct hv_keybuf {
    char bytes[HV_KEY_MAX];
} hv_keybuf;

/* keys[i] = "<prefix>-<i>" (stored in bufs[i]). */
static inline void hv_keys(hicache_key *keys, hv_keybuf *bufs, size_t n, const char *prefix) {
    for (size_t i = 0; i < n; i++) {
        int len = snprintf(bufs[i].bytes, HV_KEY_MAX, "%s-%zu", prefix, i);
        if (len <= 0 || len >= HV_KEY_MAX) hv_fail(__FILE__, __LINE__, "key prefix too long");
        keys[i].ptr = (const uint8_t *)bufs[i].bytes;
        keys[i].len = (size_t)len;
    }
}

static inline hicache_key hv_key(const char *s) {
    hicache_key k;
    k.ptr = (const uint8_t *)s;
    k.len = strlen(s);
    return k;
}

/* Stores under `key` one page of `count` segments of `sizes`, filled from `seed`; checks it was stored. */
static inline void hv_put_page(hicache_valkey *h, const char *key, uint64_t seed, size_t count, const size_t *sizes) {
    hv_page p;
    hv_page_alloc(&p, count, sizes);
    hv_page_fill(&p, seed);
    hicache_key k = hv_key(key);
    hicache_value v = hv_page_value(&p);
    int32_t o = -1;
    CHECK_OK(hicache_valkey_batch_set(h, &k, &v, 1, &o));
    CHECK(o == HICACHE_OUTCOME_OK);
    hv_page_free(&p);
}

#endif /* HV_TEST_H */
