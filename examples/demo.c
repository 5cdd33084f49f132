/*
 * demo.c - a tour of hicache_valkey from C, as an inference engine would use it.
 *
 * Stores 32 KV-cache pages of 256 KiB (each a K half and a V half, written straight from two
 * separate buffers), reads them back into zeroed buffers and verifies every byte, asks which
 * pages of a prompt prefix exist (batch_exists' leading hits, with a gap), and prints the
 * throughput and the statistics.
 *
 * The server comes from VALKEY_HOST / VALKEY_PORT (or VALKEY_URL, VALKEY_PASSWORD...);
 * scripts/demo.sh starts a throwaway one and runs this program.
 */
#define _POSIX_C_SOURCE 200809L
#include <hicache_valkey.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PAGES 32
#define PAGE_BYTES (256u * 1024u)
#define HALF (PAGE_BYTES / 2)
#define MODEL "demo-model"
#define ROUNDS 5
/* The engine's fingerprint of its page layout (dtype, tokens per page, heads, head dim...);
 * a page written with another fingerprint never counts as a hit. */
#define VALUE_FORMAT UINT64_C(0x62663136400810) /* "bf16", 64 tokens, 8 heads, 128 dims */

static void die(const char *what, int32_t status) {
    char msg[512];
    hicache_valkey_last_error(msg, sizeof msg);
    fprintf(stderr, "\ndemo: %s failed: %s: %s\n", what, hicache_valkey_status_str(status), msg);
    if (status == HICACHE_STATUS_CONNECTION)
        fprintf(stderr, "demo: is valkey-server running? Set VALKEY_HOST / VALKEY_PORT, or use scripts/demo.sh\n");
    exit(1);
}

#define TRY(what, call)                                                                        \
    do {                                                                                       \
        int32_t st_ = (int32_t)(call);                                                         \
        if (st_ != HICACHE_STATUS_OK) die(what, st_);                                          \
    } while (0)

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Deterministic content: byte i of half h of page p. */
static uint8_t content(size_t page, size_t half, size_t i) {
    uint32_t x = (uint32_t)(page * 2 + half + 1) * 2654435761u ^ (uint32_t)i * 40503u;
    return (uint8_t)(x ^ x >> 13 ^ x >> 24);
}

static void *xcalloc(size_t n) {
    void *p = calloc(1, n);
    if (p == NULL) {
        fprintf(stderr, "demo: out of memory\n");
        exit(1);
    }
    return p;
}

static void print_ratio(const char *name, uint64_t hits, uint64_t misses, double ratio) {
    printf("    %-22s %llu hits, %llu misses (%.1f%% hit ratio)\n", name, (unsigned long long)hits,
           (unsigned long long)misses, ratio * 100.0);
}

static void print_latency(const char *name, uint64_t calls, uint64_t p50, uint64_t p99) {
    printf("    %-22s %llu calls, p50 %llu us, p99 %llu us\n", name, (unsigned long long)calls, (unsigned long long)p50,
           (unsigned long long)p99);
}

int main(void) {
    static char names[PAGES + 1][32];
    hicache_key keys[PAGES];
    hicache_segment wsegs[PAGES][2], rsegs[PAGES][2];
    hicache_value wvals[PAGES], rvals[PAGES];
    int32_t outcomes[PAGES];
    const double mib = (double)PAGES * PAGE_BYTES / (1024.0 * 1024.0);

    printf("hicache_valkey %s demo: KV-cache pages of model \"%s\" in Valkey\n\n", hicache_valkey_version(), MODEL);

    /* 1. Open a handle: options first, the environment fills what is left unset. */
    hicache_valkey_options opts;
    TRY("hicache_valkey_options_init", HICACHE_VALKEY_OPTIONS_INIT(&opts));
    opts.model_name = MODEL;
    opts.value_format = VALUE_FORMAT;
    hicache_valkey *h = NULL;
    TRY("hicache_valkey_open", hicache_valkey_open(&opts, &h));
    uint64_t rtt = 0;
    TRY("hicache_valkey_ping", hicache_valkey_ping(h, &rtt));
    const char *host = getenv("VALKEY_HOST"), *port = getenv("VALKEY_PORT"), *sock = getenv("VALKEY_SOCKET");
    if (sock != NULL && *sock != '\0')
        printf("[1] connected to unix:%s, ping %llu us\n", sock, (unsigned long long)rtt);
    else
        printf("[1] connected to %s:%s, ping %llu us\n", host ? host : "localhost", port ? port : "6379",
               (unsigned long long)rtt);
    uint64_t old = 0;
    TRY("hicache_valkey_clear", hicache_valkey_clear(h, &old));
    if (old > 0) printf("    (cleared %llu keys left by an earlier run)\n", (unsigned long long)old);

    /* 2. Store: each page is two caller-owned segments, sent without a staging copy. */
    for (size_t p = 0; p < PAGES; p++) {
        snprintf(names[p], sizeof names[p], "prefix-hash-%04zu", p);
        keys[p].ptr = (const uint8_t *)names[p];
        keys[p].len = strlen(names[p]);
        for (size_t half = 0; half < 2; half++) {
            uint8_t *w = xcalloc(HALF);
            for (size_t i = 0; i < HALF; i++) w[i] = content(p, half, i);
            wsegs[p][half].ptr = w;
            wsegs[p][half].len = HALF;
            rsegs[p][half].ptr = xcalloc(HALF); /* zeroed: the read must fill them */
            rsegs[p][half].len = HALF;
        }
        wvals[p].segments = wsegs[p];
        wvals[p].count = 2;
        rvals[p].segments = rsegs[p];
        rvals[p].count = 2;
    }
    /* Several rounds, so the throughput is not one cold measurement. */
    int stored = 0;
    double set_best = 1e9, set_sum = 0;
    for (int round = 0; round < ROUNDS; round++) {
        double t0 = now_s();
        TRY("hicache_valkey_batch_set", hicache_valkey_batch_set(h, keys, wvals, PAGES, outcomes));
        double dt = now_s() - t0;
        set_sum += dt;
        set_best = dt < set_best ? dt : set_best;
        stored = 0;
        for (size_t p = 0; p < PAGES; p++) stored += outcomes[p] == HICACHE_OUTCOME_OK;
    }
    printf("[2] stored  %d/%d pages of %u KiB (K %u KiB + V %u KiB), %.0f MiB per batch, %d rounds\n", stored,
           PAGES, PAGE_BYTES / 1024, HALF / 1024, HALF / 1024, mib, ROUNDS);
    printf("            write throughput: best %.0f MiB/s (%.1f ms), mean %.0f MiB/s\n", mib / set_best,
           set_best * 1e3, mib * ROUNDS / set_sum);

    /* 3. Load into zeroed buffers and compare every byte, every round. */
    int hits = 0, good = 0;
    double get_best = 1e9, get_sum = 0;
    for (int round = 0; round < ROUNDS; round++) {
        for (size_t p = 0; p < PAGES; p++)
            for (size_t half = 0; half < 2; half++) memset(rsegs[p][half].ptr, 0, HALF);
        double t0 = now_s();
        TRY("hicache_valkey_batch_get", hicache_valkey_batch_get(h, keys, rvals, PAGES, outcomes));
        double dt = now_s() - t0;
        get_sum += dt;
        get_best = dt < get_best ? dt : get_best;
        hits = good = 0;
        for (size_t p = 0; p < PAGES; p++) {
            if (outcomes[p] != HICACHE_OUTCOME_OK) {
                printf("    page %zu: %s\n", p, hicache_valkey_outcome_str(outcomes[p]));
                continue;
            }
            hits++;
            int same = 1;
            for (size_t half = 0; half < 2 && same; half++) {
                const uint8_t *r = rsegs[p][half].ptr;
                for (size_t i = 0; i < HALF; i++)
                    if (r[i] != content(p, half, i)) {
                        same = 0;
                        break;
                    }
            }
            good += same;
        }
    }
    printf("[3] loaded  %d/%d pages into zeroed buffers, %d/%d verified byte for byte, %d rounds\n", hits, PAGES,
           good, PAGES, ROUNDS);
    printf("            read throughput:  best %.0f MiB/s (%.1f ms), mean %.0f MiB/s\n", mib / get_best,
           get_best * 1e3, mib * ROUNDS / get_sum);

    /* 4. Prefix lookup: which pages of a 13-page prompt prefix are cached? Page 8 of the prefix
     *    was never stored (a gap): only the 8 pages before it are usable. */
    hicache_key probe[13];
    uint8_t found[13];
    size_t leading = 0;
    snprintf(names[PAGES], sizeof names[PAGES], "prefix-hash-never-stored");
    for (size_t i = 0; i < 13; i++) probe[i] = keys[i < 8 ? i : i - 1];
    probe[8].ptr = (const uint8_t *)names[PAGES];
    probe[8].len = strlen(names[PAGES]);
    TRY("hicache_valkey_batch_exists", hicache_valkey_batch_exists(h, probe, 13, found, &leading));
    char map[14];
    for (size_t i = 0; i < 13; i++) map[i] = found[i] ? '#' : '.';
    map[13] = '\0';
    printf("[4] prefix  batch_exists on 13 keys, page 8 missing: [%s]  leading hits = %zu\n", map, leading);

    /* 5. Statistics: the server's view and this handle's counters. */
    hicache_stats s;
    memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    TRY("hicache_valkey_stats", hicache_valkey_stats(h, &s));
    printf("[5] stats\n");
    if (s.cluster_primaries > 0)
        printf("  cluster of %llu primaries (valkey %s; figures summed over them)\n",
               (unsigned long long)s.cluster_primaries, s.server_version);
    else
        printf("  server (valkey %s)\n", s.server_version);
    printf("    %-22s %llu (of %llu in the database)\n", "keys of this model", (unsigned long long)s.model_keys,
           (unsigned long long)s.db_keys);
    printf("    %-22s %s (%llu bytes)\n", "memory used", s.used_memory_human, (unsigned long long)s.used_memory_bytes);
    if (s.maxmemory_bytes == 0)
        printf("    %-22s unlimited, policy %s\n", "maxmemory", s.maxmemory_policy);
    else
        printf("    %-22s %llu bytes, policy %s\n", "maxmemory", (unsigned long long)s.maxmemory_bytes,
               s.maxmemory_policy);
    printf("    %-22s %llu\n", "connected clients", (unsigned long long)s.connected_clients);
    print_ratio("keyspace", s.keyspace_hits, s.keyspace_misses, s.keyspace_hit_ratio);
    printf("    %-22s %llu\n", "evicted keys", (unsigned long long)s.evicted_keys);
    printf("  this handle\n");
    print_ratio("batch_get pages", s.get_hits, s.get_misses, s.get_hit_ratio);
    print_ratio("batch_exists keys", s.exists_hits, s.exists_misses, s.exists_hit_ratio);
    printf("    %-22s %llu pages, %.1f MiB\n", "written", (unsigned long long)s.pages_written,
           (double)s.bytes_written / (1024.0 * 1024.0));
    printf("    %-22s %llu pages, %.1f MiB\n", "read", (unsigned long long)s.pages_read,
           (double)s.bytes_read / (1024.0 * 1024.0));
    print_latency("batch_set latency", s.set_calls, s.set_p50_us, s.set_p99_us);
    print_latency("batch_get latency", s.get_calls, s.get_p50_us, s.get_p99_us);
    print_latency("batch_exists latency", s.exists_calls, s.exists_p50_us, s.exists_p99_us);
    printf("    %-22s %llu errors, %llu reconnects\n", "health", (unsigned long long)s.errors,
           (unsigned long long)s.reconnects);

    /* 6. Clean up: the model's keys, the handle, the buffers. */
    uint64_t deleted = 0;
    TRY("hicache_valkey_clear", hicache_valkey_clear(h, &deleted));
    hicache_valkey_close(h);
    for (size_t p = 0; p < PAGES; p++)
        for (size_t half = 0; half < 2; half++) {
            free(wsegs[p][half].ptr);
            free(rsegs[p][half].ptr);
        }
    printf("[6] cleared %llu keys of \"%s\" and closed the handle\n\n", (unsigned long long)deleted, MODEL);

    int ok = stored == PAGES && hits == PAGES && good == PAGES && leading == 8;
    printf("%s\n", ok ? "demo: all good" : "demo: something went wrong (see above)");
    return ok ? 0 : 1;
}
