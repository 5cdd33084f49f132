/*
 * pkgconfig_smoke.c - built by scripts/ctest.sh with nothing but pkg-config:
 *   cc pkgconfig_smoke.c $(pkg-config --cflags --libs hicache_valkey)            (shared)
 *   cc pkgconfig_smoke.c ... $(pkg-config --static --libs hicache_valkey)         (static)
 * and run against a server: opens a handle from the environment, pings, stores and reads one
 * page, and prints which library it used.
 */
#define _POSIX_C_SOURCE 200809L
#include <hicache_valkey.h>

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int fail(const char *what, int32_t st) {
    char msg[256];
    hicache_valkey_last_error(msg, sizeof msg);
    fprintf(stderr, "pkgconfig_smoke: %s: %s: %s\n", what, hicache_valkey_status_str(st), msg);
    return 1;
}

int main(void) {
    char model[64], page[1000], back[1000];
    hicache_valkey_options o;
    hicache_valkey *h = NULL;
    int32_t st, outcome = -1;
    uint64_t rtt = 0, deleted = 0;

    snprintf(model, sizeof model, "ctest-pkgconfig-%ld", (long)getpid());
    if ((st = HICACHE_VALKEY_OPTIONS_INIT(&o)) != HICACHE_STATUS_OK) return fail("options_init", st);
    o.model_name = model;
    if ((st = hicache_valkey_open(&o, &h)) != HICACHE_STATUS_OK) return fail("open", st);
    if ((st = hicache_valkey_ping(h, &rtt)) != HICACHE_STATUS_OK) return fail("ping", st);

    memset(page, 'p', sizeof page);
    memset(back, 0, sizeof back);
    hicache_key k = {(const uint8_t *)"smoke", 5};
    hicache_segment ws = {page, sizeof page}, rs = {back, sizeof back};
    hicache_value wv = {&ws, 1}, rv = {&rs, 1};
    if ((st = hicache_valkey_batch_set(h, &k, &wv, 1, &outcome)) != HICACHE_STATUS_OK) return fail("batch_set", st);
    if (outcome != HICACHE_OUTCOME_OK) return fail("batch_set outcome", outcome);
    if ((st = hicache_valkey_batch_get(h, &k, &rv, 1, &outcome)) != HICACHE_STATUS_OK) return fail("batch_get", st);
    if (outcome != HICACHE_OUTCOME_OK || memcmp(page, back, sizeof page) != 0) return fail("batch_get outcome", outcome);
    if ((st = hicache_valkey_clear(h, &deleted)) != HICACHE_STATUS_OK || deleted != 1) return fail("clear", st);
    hicache_valkey_close(h);
    printf("pkgconfig_smoke: hicache_valkey %s, ping %llu us, one page stored and read back\n",
           hicache_valkey_version(), (unsigned long long)rtt);
    return 0;
}
