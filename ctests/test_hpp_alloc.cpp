// test_hpp_alloc: a runtime's hot loop over hicache_valkey.hpp allocates nothing after warm-up.
//
// This program replaces the global operator new/delete with counting versions. A loop that
// reuses one Batch (clear, add keys and segments, batch_set, batch_get, batch_exists) and
// caller arrays must make no C++ allocation after its first round, through the try_ calls and
// the throwing ones, with hits and misses. The first round must allocate (the Batch grows):
// that shows the counter works. A Batch sized with reserve() allocates nothing from round 1.
// (The library's own allocations are Rust's, through malloc, and not counted here.)
#include "hv_test.hpp"

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

namespace {
std::atomic<long> g_news{0};
std::atomic<bool> g_counting{false};

void *counted_alloc(std::size_t n) {
    if (g_counting.load(std::memory_order_relaxed)) g_news.fetch_add(1, std::memory_order_relaxed);
    void *p = std::malloc(n == 0 ? 1 : n);
    if (p == nullptr) std::abort();
    return p;
}
void *counted_aligned(std::size_t n, std::size_t align) {
    if (g_counting.load(std::memory_order_relaxed)) g_news.fetch_add(1, std::memory_order_relaxed);
    void *p = nullptr;
    if (posix_memalign(&p, align < sizeof(void *) ? sizeof(void *) : align, n == 0 ? 1 : n) != 0) std::abort();
    return p;
}
} // namespace

void *operator new(std::size_t n) { return counted_alloc(n); }
void *operator new[](std::size_t n) { return counted_alloc(n); }
void *operator new(std::size_t n, const std::nothrow_t &) noexcept { return counted_alloc(n); }
void *operator new[](std::size_t n, const std::nothrow_t &) noexcept { return counted_alloc(n); }
void *operator new(std::size_t n, std::align_val_t a) { return counted_aligned(n, static_cast<std::size_t>(a)); }
void *operator new[](std::size_t n, std::align_val_t a) { return counted_aligned(n, static_cast<std::size_t>(a)); }
void operator delete(void *p) noexcept { std::free(p); }
void operator delete[](void *p) noexcept { std::free(p); }
void operator delete(void *p, std::size_t) noexcept { std::free(p); }
void operator delete[](void *p, std::size_t) noexcept { std::free(p); }
void operator delete(void *p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void *p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void *p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void *p, std::size_t, std::align_val_t) noexcept { std::free(p); }

namespace {

constexpr std::size_t kPages = 16, kSegs = 4, kSegBytes = 2048, kRounds = 25;

// The pool and the keys live outside the loop, as in a runtime.
struct Pool {
    std::vector<std::uint8_t> bytes = std::vector<std::uint8_t>(kPages * kSegs * kSegBytes);
    char keys[kPages + 1][24] = {};
    Pool() {
        for (std::size_t i = 0; i <= kPages; ++i) std::snprintf(keys[i], sizeof keys[i], "alloc-page-%zu", i);
    }
    std::uint8_t *seg(std::size_t page, std::size_t j) { return bytes.data() + (page * kSegs + j) * kSegBytes; }
};

// One round of the hot loop. Returns the failures it saw (outcomes, statuses, bytes).
int one_round(const hicache::Store &store, hicache::Batch &b, Pool &pool, std::size_t round) {
    int bad = 0;
    // Write kPages pages (4 segments each).
    b.clear();
    for (std::size_t i = 0; i < kPages; ++i) {
        hv::fill(pool.seg(i, 0), kSegs * kSegBytes, round * 1000 + i);
        b.add(pool.keys[i], std::strlen(pool.keys[i]));
        for (std::size_t j = 0; j < kSegs; ++j) b.add_segment(pool.seg(i, j), kSegBytes);
    }
    if (!store.try_batch_set(b).ok() || !b.all_ok()) ++bad;

    // Read them back plus one key that is not stored (a miss is not a failure).
    std::memset(pool.bytes.data(), 0, pool.bytes.size());
    b.add(pool.keys[kPages], std::strlen(pool.keys[kPages]));
    b.add_segment(pool.seg(0, 0), 16);
    hicache::Result<> g = store.try_batch_get(b);
    if (!g.ok() || b.count(hicache::Outcome::Ok) != kPages || b.outcome(kPages) != hicache::Outcome::Miss) ++bad;
    for (std::size_t i = 0; i < kPages; ++i)
        if (!hv::holds(pool.seg(i, 0), kSegs * kSegBytes, round * 1000 + i)) ++bad;

    hicache::Result<std::size_t> e = store.try_batch_exists(b);
    if (!e.ok() || e.value != kPages || b.found(kPages)) ++bad;

    // The same through caller arrays (no Batch).
    hicache::Key keys[2] = {hicache::key(pool.keys[0], std::strlen(pool.keys[0])),
                            hicache::key(pool.keys[1], std::strlen(pool.keys[1]))};
    hicache::Segment segs[2] = {hicache::segment(pool.seg(0, 0), kSegs * kSegBytes),
                                hicache::segment(pool.seg(1, 0), kSegs * kSegBytes)};
    hicache::Value values[2] = {hicache::value(&segs[0], 1), hicache::value(&segs[1], 1)};
    hicache::Outcome out[2];
    std::uint8_t found[2];
    if (!store.try_batch_get(keys, values, 2, out).ok() || out[0] != hicache::Outcome::Ok) ++bad;
    if (!store.try_batch_set(keys, values, 2, out).ok() || out[1] != hicache::Outcome::Ok) ++bad;
    hicache::Result<std::size_t> e2 = store.try_batch_exists(keys, 2, found);
    if (!e2.ok() || e2.value != 2) ++bad;
#if HICACHE_VALKEY_EXCEPTIONS
    // And through the throwing calls.
    store.batch_get(keys, values, 2, out);
    store.batch_set(keys, values, 2, out);
    if (store.batch_exists(keys, 2, found) != 2 || out[0] != hicache::Outcome::Ok) ++bad;
    store.batch_get(b);
    if (store.batch_exists(b) != kPages || b.count(hicache::Outcome::Ok) != kPages) ++bad;
#endif
    return bad;
}

} // namespace

int main() {
    hv::require_server();
    const std::string model = hv::model("hpp-alloc");
    hicache::Options o;
    o.set_model_name(model);
    hicache::Result<hicache::Store> opened = hicache::Store::try_open(o);
    CHECK_OK(opened);
    const hicache::Store &store = opened.value;
    Pool pool;

    // A Batch that grows in round 0, then reuses its capacity.
    hicache::Batch b;
    g_news = 0;
    g_counting = true;
    CHECK(one_round(store, b, pool, 0) == 0);
    g_counting = false;
    const long warmup = g_news.load();
    CHECK(warmup > 0); // the Batch grew: the counter sees the wrapper's allocations
    for (std::size_t round = 1; round <= kRounds; ++round) {
        g_news = 0;
        g_counting = true;
        const int bad = one_round(store, b, pool, round);
        g_counting = false;
        const long n = g_news.load();
        if (n != 0) hv::fail(__FILE__, __LINE__, "the hot loop allocated", "round " + std::to_string(round) + ": " + std::to_string(n) + " operator new calls");
        CHECK(bad == 0);
    }

    // Sized up front: nothing allocated from the first round on.
    hicache::Batch sized(kPages + 1, kPages * kSegs + 1);
    g_news = 0;
    g_counting = true;
    const int bad = one_round(store, sized, pool, 99);
    g_counting = false;
    CHECK(bad == 0);
    CHECK(g_news.load() == 0);

    std::printf("hot loop: %ld allocations in the warm-up round, 0 in each of the next %zu rounds\n", warmup, kRounds);
    CHECK_OK(store.try_clear());
    return hv::done("test_hpp_alloc");
}
