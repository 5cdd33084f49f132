// cpp_page_pool: an inference runtime's host KV page pool, stored in Valkey through
// hicache_valkey.hpp.
//
// The pool is laid out layer-first, as runtimes keep it: for every layer one K array and one V
// array of [slots x tokens_per_page x kv_heads x head_dim] bf16 values. A page (tokens_per_page
// tokens) is therefore 2 x layers slices that lie apart in memory; it is stored as ONE Valkey
// value whose segments are those slices (scatter-gather: nothing is copied into a staging
// buffer, and reads land straight in the pool). Page keys are a hash chain over the tokens, so a
// request that shares a prefix with another shares its first pages' keys.
//
//   [1] open a Store (server from VALKEY_HOST / VALKEY_PORT / VALKEY_URL), ping
//   [2] fill request A's pages and store them, a batch of pages per call
//   [3] wipe the pool, check which pages exist (one more key than stored: a miss at the end)
//   [4] read the pages back into the pool and verify them byte for byte
//   [5] a backup thread writes request B's pages as they finish while a prefetch thread loads
//       the prefix request C shares with A (exists, then reads) - both on the one Store
//   [6] stats; then this model's keys are cleared (unless --keep)
#include <hicache_valkey.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct Config {
    std::size_t layers = 16;
    std::size_t kv_heads = 8;
    std::size_t head_dim = 64;
    std::size_t dtype_bytes = 2; // bf16
    std::size_t page_tokens = 16;
    std::size_t pages = 64;       // request A; B has pages / 2, C shares 3/4 of A's
    std::size_t batch_pages = 16; // pages per batch call
    bool keep = false;
    std::string model = "cpp-page-pool";
};

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }
double mib(std::size_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); }

std::uint64_t splitmix(std::uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

// The host KV pool: per layer a K and a V array, each `slots` pages long.
class KvPool {
public:
    KvPool(const Config &c, std::size_t slots)
        : layers_(c.layers), slots_(slots), slice_(c.page_tokens * c.kv_heads * c.head_dim * c.dtype_bytes),
          arrays_(2 * c.layers, std::vector<std::uint8_t>(slots * slice_)) {}

    std::size_t layers() const { return layers_; }
    std::size_t slots() const { return slots_; }
    std::size_t slice_bytes() const { return slice_; }               // one page in one array
    std::size_t page_bytes() const { return 2 * layers_ * slice_; }  // one page in all arrays
    std::size_t total_bytes() const { return slots_ * page_bytes(); }
    // The slice of page slot `slot` in layer `layer`'s K (kv = 0) or V (kv = 1) array.
    std::uint8_t *slice(std::size_t layer, int kv, std::size_t slot) {
        return arrays_[2 * layer + static_cast<std::size_t>(kv)].data() + slot * slice_;
    }
    // A page's value: 2 x layers segments, in the order K0 V0 K1 V1 ...
    void add_page(hicache::Batch &b, const std::string &key, std::size_t slot) {
        b.add(key);
        for (std::size_t l = 0; l < layers_; ++l) {
            b.add_segment(slice(l, 0, slot), slice_);
            b.add_segment(slice(l, 1, slot), slice_);
        }
    }
    void wipe(std::size_t first_slot, std::size_t count) {
        for (auto &a : arrays_) std::memset(a.data() + first_slot * slice_, 0, count * slice_);
    }

private:
    std::size_t layers_, slots_, slice_;
    std::vector<std::vector<std::uint8_t>> arrays_;
};

// What the model "computed" for page `key` in layer/kv: deterministic bytes, so a reader can
// check what it loaded without keeping a second copy of the pool.
void kv_bytes(std::uint8_t *dst, std::size_t n, std::uint64_t page_seed, std::size_t layer, int kv) {
    std::uint64_t s = splitmix(page_seed ^ (layer * 2 + static_cast<std::size_t>(kv) + 1) * 0x100000001B3ull);
    for (std::size_t i = 0; i < n; i += 8) {
        const std::uint64_t w = splitmix(s + i);
        std::memcpy(dst + i, &w, std::min<std::size_t>(8, n - i));
    }
}

// A request: its token ids and the hash chain of its pages' keys.
struct Request {
    std::vector<std::string> keys;
    std::vector<std::uint64_t> seeds;
};

// Pages of `pages` x page_tokens tokens; the first `shared_pages` pages have the tokens of
// request `shared_with` (seed), the rest those of `seed`.
Request make_request(const Config &c, std::uint64_t seed, std::size_t pages, std::uint64_t shared_with, std::size_t shared_pages) {
    Request r;
    std::uint64_t h = 0xCBF29CE484222325ull; // FNV-1a over the token ids, chained page to page
    char hex[17];
    for (std::size_t p = 0; p < pages; ++p) {
        const std::uint64_t src = p < shared_pages ? shared_with : seed;
        for (std::size_t t = 0; t < c.page_tokens; ++t) {
            const std::uint64_t token = splitmix(src * 1000003 + p * c.page_tokens + t) % 151936;
            for (int b = 0; b < 4; ++b) {
                h ^= (token >> (8 * b)) & 0xFF;
                h *= 0x100000001B3ull;
            }
        }
        std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
        r.keys.emplace_back(hex);
        r.seeds.push_back(h);
    }
    return r;
}

void fill_page(KvPool &pool, std::size_t slot, std::uint64_t seed) {
    for (std::size_t l = 0; l < pool.layers(); ++l)
        for (int kv = 0; kv < 2; ++kv) kv_bytes(pool.slice(l, kv, slot), pool.slice_bytes(), seed, l, kv);
}

// Byte-for-byte check of one page slot against what fill_page wrote for `seed`.
bool verify_page(KvPool &pool, std::size_t slot, std::uint64_t seed, std::vector<std::uint8_t> &scratch) {
    scratch.resize(pool.slice_bytes());
    for (std::size_t l = 0; l < pool.layers(); ++l)
        for (int kv = 0; kv < 2; ++kv) {
            kv_bytes(scratch.data(), scratch.size(), seed, l, kv);
            if (std::memcmp(pool.slice(l, kv, slot), scratch.data(), scratch.size()) != 0) return false;
        }
    return true;
}

// Stores pages [first, first + count) of `req` from slots [slot0, ...) in batches; returns the
// pages stored. `b` is reused from call to call.
std::size_t store_pages(const hicache::Store &store, KvPool &pool, hicache::Batch &b, const Request &req,
                        std::size_t first, std::size_t count, std::size_t slot0, std::size_t batch_pages) {
    std::size_t ok = 0;
    for (std::size_t done = 0; done < count; done += batch_pages) {
        b.clear();
        const std::size_t n = std::min(batch_pages, count - done);
        for (std::size_t i = 0; i < n; ++i) pool.add_page(b, req.keys[first + done + i], slot0 + done + i);
        store.batch_set(b);
        ok += b.count(hicache::Outcome::Ok);
    }
    return ok;
}

// Loads pages [first, first + count) of `req` into slots [slot0, ...); returns the hits.
std::size_t load_pages(const hicache::Store &store, KvPool &pool, hicache::Batch &b, const Request &req,
                       std::size_t first, std::size_t count, std::size_t slot0, std::size_t batch_pages) {
    std::size_t hits = 0;
    for (std::size_t done = 0; done < count; done += batch_pages) {
        b.clear();
        const std::size_t n = std::min(batch_pages, count - done);
        for (std::size_t i = 0; i < n; ++i) pool.add_page(b, req.keys[first + done + i], slot0 + done + i);
        store.batch_get(b);
        hits += b.count(hicache::Outcome::Ok);
    }
    return hits;
}

std::size_t verify_pages(KvPool &pool, const Request &req, std::size_t first, std::size_t count, std::size_t slot0) {
    std::vector<std::uint8_t> scratch;
    std::size_t good = 0;
    for (std::size_t i = 0; i < count; ++i) good += verify_page(pool, slot0 + i, req.seeds[first + i], scratch) ? 1 : 0;
    return good;
}

bool parse_size(const char *s, std::size_t lo, std::size_t hi, std::size_t *out) {
    char *end = nullptr;
    const unsigned long long v = std::strtoull(s, &end, 10);
    if (end == s || *end != '\0' || v < lo || v > hi) return false;
    *out = static_cast<std::size_t>(v);
    return true;
}

int usage(const char *argv0) {
    std::fprintf(stderr,
                 "usage: %s [--pages N (4-1024)] [--layers N (1-128)] [--page-tokens N (1-256)] [--model NAME] [--keep]\n"
                 "server: VALKEY_HOST / VALKEY_PORT / VALKEY_URL / VALKEY_PASSWORD (default localhost:6379)\n",
                 argv0);
    return 2;
}

int run(const Config &c) {
    // Request A: c.pages pages. B: new pages written while C, which shares A's first 3/4,
    // is prefetched.
    const std::size_t a_pages = c.pages, b_pages = c.pages / 2, c_shared = c.pages * 3 / 4, c_pages = c_shared + 8;
    KvPool pool(c, a_pages + b_pages); // slots [0, a_pages) for A (later C), the rest for B
    const Request req_a = make_request(c, 1, a_pages + 1, 0, 0); // one page more: never stored
    const Request req_b = make_request(c, 2, b_pages, 0, 0);
    const Request req_c = make_request(c, 3, c_pages, 1, c_shared);
    int failures = 0;
    auto expect = [&failures](bool ok, const char *what) {
        if (!ok) {
            std::printf("    FAILED: %s\n", what);
            ++failures;
        }
    };

    // The layout fingerprint: a runtime with another dtype/page size/geometry never loads these.
    const std::uint64_t fingerprint = splitmix(c.layers) ^ splitmix(c.kv_heads << 8) ^ splitmix(c.head_dim << 16) ^
                                      splitmix(c.dtype_bytes << 24) ^ splitmix(c.page_tokens << 32) ^ 0x4C46 /* "LF": layer-first */;
    hicache::Options opts;
    opts.set_model_name(c.model).set_value_format(fingerprint);
    hicache::Store store = hicache::Store::open(opts);
    std::printf("cpp_page_pool (hicache_valkey %s): a layer-first host KV pool in Valkey, model \"%s\"\n\n",
                hicache::version(), c.model.c_str());
    std::printf("[1] connected, ping %lld us\n", static_cast<long long>(store.ping().count()));
    std::printf("    pool: %zu layers x {K, V} arrays of %zu page slots; page = %zu tokens x %zu heads x %zu dims x %zu B\n",
                c.layers, pool.slots(), c.page_tokens, c.kv_heads, c.head_dim, c.dtype_bytes);
    std::printf("    a page's value: %zu segments of %zu KiB (one slice per array), %zu KiB; pool %.0f MiB\n",
                2 * c.layers, pool.slice_bytes() / 1024, pool.page_bytes() / 1024, mib(pool.total_bytes()));

    hicache::Batch batch(c.batch_pages + 1, (c.batch_pages + 1) * 2 * c.layers);

    // [2] store request A.
    for (std::size_t p = 0; p < a_pages; ++p) fill_page(pool, p, req_a.seeds[p]);
    auto t0 = Clock::now();
    const std::size_t stored = store_pages(store, pool, batch, req_a, 0, a_pages, 0, c.batch_pages);
    double dt = seconds_since(t0);
    std::printf("[2] stored %zu/%zu pages of request A, %zu pages per batch: %.1f MiB in %.1f ms, %.0f MiB/s\n",
                stored, a_pages, c.batch_pages, mib(a_pages * pool.page_bytes()), dt * 1e3,
                mib(a_pages * pool.page_bytes()) / dt);
    expect(stored == a_pages, "every page of A stored");

    // [3] wipe, then which of A's pages (plus one never stored) exist.
    pool.wipe(0, pool.slots());
    batch.clear();
    for (std::size_t p = 0; p <= a_pages; ++p) batch.add(req_a.keys[p]);
    t0 = Clock::now();
    const std::size_t leading = store.batch_exists(batch);
    dt = seconds_since(t0);
    std::printf("[3] pool wiped; batch_exists on %zu keys: %zu leading hits, last key found: %s (%.2f ms)\n", a_pages + 1,
                leading, batch.found(a_pages) ? "yes" : "no", dt * 1e3);
    expect(leading == a_pages && !batch.found(a_pages), "A's pages exist, the extra key does not");

    // [4] read A back into the pool and verify.
    t0 = Clock::now();
    const std::size_t hits = load_pages(store, pool, batch, req_a, 0, a_pages, 0, c.batch_pages);
    dt = seconds_since(t0);
    const std::size_t good = verify_pages(pool, req_a, 0, a_pages, 0);
    std::printf("[4] loaded %zu/%zu pages into the pool: %.1f MiB in %.1f ms, %.0f MiB/s; %zu/%zu verified byte for byte\n",
                hits, a_pages, mib(a_pages * pool.page_bytes()), dt * 1e3, mib(a_pages * pool.page_bytes()) / dt, good,
                a_pages);
    expect(hits == a_pages && good == a_pages, "A read back intact");

    // [5] backup and prefetch at the same time, on the one Store (each thread its own Batch).
    pool.wipe(0, a_pages); // the slots C is prefetched into
    std::atomic<std::size_t> backed_up{0}, prefetched{0}, prefix_hits{0};
    std::atomic<int> thread_errors{0};
    double backup_s = 0, prefetch_s = 0;
    Clock::time_point backup_span[2], prefetch_span[2]; // when each thread ran
    t0 = Clock::now();
    std::thread backup([&] {
        try {
            backup_span[0] = Clock::now();
            hicache::Batch b(4, 4 * 2 * c.layers);
            for (std::size_t p = 0; p < b_pages; p += 4) { // 4 pages finish at a time
                const std::size_t n = std::min<std::size_t>(4, b_pages - p);
                for (std::size_t i = 0; i < n; ++i) fill_page(pool, a_pages + p + i, req_b.seeds[p + i]);
                const auto s0 = Clock::now(); // time the writes, not the "model"
                backed_up += store_pages(store, pool, b, req_b, p, n, a_pages + p, 4);
                backup_s += seconds_since(s0);
            }
            backup_span[1] = Clock::now();
        } catch (const hicache::Error &e) {
            std::fprintf(stderr, "backup thread: %s\n", e.what());
            ++thread_errors;
        }
    });
    std::thread prefetch([&] {
        try {
            prefetch_span[0] = Clock::now();
            hicache::Batch b(c_pages, c_pages * 2 * c.layers);
            const auto s0 = Clock::now();
            for (const std::string &k : req_c.keys) b.add(k);
            const std::size_t lead = store.batch_exists(b); // how much of C's prefix is stored
            prefix_hits = lead;
            prefetched = load_pages(store, pool, b, req_c, 0, lead, 0, 8);
            prefetch_s = seconds_since(s0);
            prefetch_span[1] = Clock::now();
        } catch (const hicache::Error &e) {
            std::fprintf(stderr, "prefetch thread: %s\n", e.what());
            ++thread_errors;
        }
    });
    backup.join();
    prefetch.join();
    dt = seconds_since(t0);
    const double overlap = std::chrono::duration<double>(std::min(backup_span[1], prefetch_span[1]) -
                                                         std::max(backup_span[0], prefetch_span[0])).count();
    std::printf("[5] concurrently on one handle: %.1f ms, the two threads overlapping for %.1f ms\n", dt * 1e3,
                overlap > 0 ? overlap * 1e3 : 0.0);
    std::printf("    backup thread:   stored %zu/%zu finished pages of request B, 4 per batch: %.0f MiB/s while writing\n",
                backed_up.load(), b_pages, backup_s > 0 ? mib(b_pages * pool.page_bytes()) / backup_s : 0.0);
    const std::size_t c_good = verify_pages(pool, req_c, 0, prefetched, 0);
    std::printf("    prefetch thread: request C (%zu pages, %zu shared with A): %zu leading hits, loaded %zu, %zu verified: %.0f MiB/s (exists + reads)\n",
                c_pages, c_shared, prefix_hits.load(), prefetched.load(), c_good,
                prefetch_s > 0 ? mib(prefetched * pool.page_bytes()) / prefetch_s : 0.0);
    expect(thread_errors == 0, "no thread failed");
    expect(backed_up == b_pages, "every page of B backed up");
    expect(prefix_hits == c_shared && prefetched == c_shared && c_good == c_shared, "C's shared prefix prefetched intact");
    // B as the backup thread wrote it.
    pool.wipe(a_pages, b_pages);
    const std::size_t b_hits = load_pages(store, pool, batch, req_b, 0, b_pages, a_pages, c.batch_pages);
    const std::size_t b_good = verify_pages(pool, req_b, 0, b_pages, a_pages);
    std::printf("    then: B read back, %zu/%zu hits, %zu verified byte for byte\n", b_hits, b_pages, b_good);
    expect(b_hits == b_pages && b_good == b_pages, "B read back intact");

    // [6] stats.
    const hicache::Stats s = store.stats();
    std::printf("[6] stats: valkey %s, %llu keys of this model, memory used %s, %llu clients\n", s.server_version.c_str(),
                static_cast<unsigned long long>(s.model_keys), s.used_memory_human.c_str(),
                static_cast<unsigned long long>(s.connected_clients));
    std::printf("    this handle: %llu pages (%.1f MiB) written, %llu (%.1f MiB) read, get hit ratio %.1f%%, exists hit ratio %.1f%%\n",
                static_cast<unsigned long long>(s.pages_written), mib(s.bytes_written), static_cast<unsigned long long>(s.pages_read),
                mib(s.bytes_read), 100 * s.get_hit_ratio, 100 * s.exists_hit_ratio);
    std::printf("    latency p50/p99: set %llu/%llu us, get %llu/%llu us, exists %llu/%llu us; %llu errors, %llu reconnects\n",
                static_cast<unsigned long long>(s.set_p50_us), static_cast<unsigned long long>(s.set_p99_us),
                static_cast<unsigned long long>(s.get_p50_us), static_cast<unsigned long long>(s.get_p99_us),
                static_cast<unsigned long long>(s.exists_p50_us), static_cast<unsigned long long>(s.exists_p99_us),
                static_cast<unsigned long long>(s.errors), static_cast<unsigned long long>(s.reconnects));
    expect(s.model_keys == a_pages + b_pages, "the model holds A's and B's pages");

    if (!c.keep) std::printf("    cleared %llu keys of \"%s\"\n", static_cast<unsigned long long>(store.clear()), c.model.c_str());
    std::printf("\ncpp_page_pool: %s\n", failures == 0 ? "all good" : "FAILED");
    return failures == 0 ? 0 : 1;
}

} // namespace

int main(int argc, char **argv) {
    Config c;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        const bool has_value = i + 1 < argc;
        if (a == "--pages" && has_value && parse_size(argv[i + 1], 4, 1024, &c.pages)) {
            ++i;
        } else if (a == "--layers" && has_value && parse_size(argv[i + 1], 1, 128, &c.layers)) {
            ++i;
        } else if (a == "--page-tokens" && has_value && parse_size(argv[i + 1], 1, 256, &c.page_tokens)) {
            ++i;
        } else if (a == "--model" && has_value && argv[i + 1][0] != '\0') {
            c.model = argv[++i];
        } else if (a == "--keep") {
            c.keep = true;
        } else {
            return usage(argv[0]);
        }
    }
    try {
        return run(c);
    } catch (const hicache::Error &e) {
        // e.g. "HICACHE_STATUS_CONNECTION: cannot connect to localhost:6379 ..."
        std::fprintf(stderr, "cpp_page_pool: %s\n", e.what());
        return 1;
    } catch (const std::exception &e) {
        std::fprintf(stderr, "cpp_page_pool: %s\n", e.what());
        return 1;
    }
}
