// test_hpp: the C++ wrapper (hicache_valkey.hpp) against a real server. Built three times:
// test_hpp (C++17), test_hpp_cxx20 (C++20: the std::span overloads too) and test_hpp_noexcept
// (-fno-exceptions: only the try_ calls exist, and they are what is tested there).
//
//   options   typed setters, owned strings (copies, moves, raw() overrides), any field by
//             member pointer, every field of the C struct reachable
//   store     open from Options and from the environment; move construction and assignment,
//             self-move, release/adopt, calls on an empty Store
//   batches   scatter-gather round trip through a Batch and through caller arrays, misses,
//             size mismatch, leading hits with a gap, outcomes after a whole-call failure
//   errors    server down (CONNECTION), invalid config, empty key, NULL segment, span lengths;
//             as hicache::Error and as Result
//   stats     the plain struct and its strings; clear
//   threads   one Store shared by several threads, each with its own Batch
#include "hv_test.hpp"

#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#ifndef HV_TAG
#define HV_TAG "hpp"
#endif

namespace {

const std::uint64_t kFormat = 0x48505054455354ull; // "HPPTEST"

hicache::Options options(const std::string &model) {
    hicache::Options o;
    o.set_model_name(model).set_value_format(kFormat);
    return o;
}

hicache::Store open_store(const hicache::Options &o) {
    hicache::Result<hicache::Store> r = hicache::Store::try_open(o);
    CHECK_OK(r);
    CHECK(r.value.is_open());
    return std::move(r.value);
}

void test_options() {
    hicache::Options o;
    const hicache_valkey_options &raw = o.raw();
    CHECK(o.init_status() == hicache::Status::Ok);
    CHECK(raw.struct_size == sizeof(hicache_valkey_options));
    CHECK(raw.port == HICACHE_VALKEY_UNSET && raw.db == HICACHE_VALKEY_UNSET);
    CHECK(raw.host == nullptr && raw.model_name == nullptr && raw.url == nullptr && raw.socket_path == nullptr);
    CHECK(o.c_options() == &raw);

    // Every field of the C struct through a typed setter.
    {
        std::string temp = "a model name longer than the small-string buffer, /:{}%";
        o.set_model_name(temp);
        temp.assign(temp.size(), 'x'); // the Options hold their own copy
    }
    o.set_url("valkey://user:pw@10.0.0.1:7000/3").set_host("127.0.0.9").set_port(7001).set_db(4);
    o.set_username("alice").set_password("secret").set_tp(1, 4).set_pp(1, 2).set_cp(0, 3);
    o.set_mla(true).set_value_format(0x1234).set_checksum(true).set_connections(3);
    o.set_connect_timeout(std::chrono::milliseconds(1500)).set_timeout(std::chrono::seconds(7));
    o.set_socket_path("/run/valkey/valkey.sock");
    CHECK(std::string(raw.socket_path) == "/run/valkey/valkey.sock");
    CHECK(std::string(raw.model_name) == "a model name longer than the small-string buffer, /:{}%");
    CHECK(std::string(raw.url) == "valkey://user:pw@10.0.0.1:7000/3" && std::string(raw.host) == "127.0.0.9");
    CHECK(std::string(raw.username) == "alice" && std::string(raw.password) == "secret");
    CHECK(raw.port == 7001 && raw.db == 4);
    CHECK(raw.tp_rank == 1 && raw.tp_size == 4 && raw.pp_rank == 1 && raw.pp_size == 2);
    CHECK(raw.cp_rank == 0 && raw.cp_size == 3);
    CHECK(raw.is_mla == 1 && raw.value_format == 0x1234 && raw.checksum == 1 && raw.connections == 3);
    CHECK(raw.connect_timeout_ms == 1500 && raw.timeout_ms == 7000);
    // A negative timeout must not read as HICACHE_VALKEY_UNSET (-1): it becomes 0, rejected at open.
    o.set_timeout(std::chrono::milliseconds(-1));
    CHECK(raw.timeout_ms == 0);
    o.set_timeout(std::chrono::milliseconds(7000));

    // Any field by member pointer (what reaches fields appended after this header).
    o.set(&hicache_valkey_options::db, 9).set(&hicache_valkey_options::host, "by-member-pointer");
    CHECK(raw.db == 9 && std::string(raw.host) == "by-member-pointer");
    o.set(&hicache_valkey_options::host, std::string("x"));
    o.set(&hicache_valkey_options::host, nullptr);
    CHECK(raw.host == nullptr);
    o.set_host("127.0.0.9");

    // Copies own their strings; the copy's survive the original.
    hicache::Options *heap = new hicache::Options(o);
    hicache::Options copy = *heap;
    CHECK(copy.raw().model_name != heap->raw().model_name);
    CHECK(std::string(copy.raw().model_name) == std::string(heap->raw().model_name));
    delete heap;
    CHECK(std::string(copy.raw().password) == "secret" && copy.raw().tp_size == 4);

    // A move keeps the pointers and leaves the source without them.
    const char *name_ptr = copy.raw().model_name;
    hicache::Options moved = std::move(copy);
    CHECK(moved.raw().model_name == name_ptr);
    CHECK(copy.raw().model_name == nullptr && copy.raw().host == nullptr); // NOLINT: moved-from is specified
    copy = moved;
    CHECK(std::string(copy.raw().model_name) == std::string(moved.raw().model_name));
    copy = std::move(moved);
    CHECK(moved.raw().model_name == nullptr);

    // A string set through raw() stays the caller's: copies and later setters keep it.
    static const char mine[] = "caller-owned";
    copy.raw().host = mine;
    copy.set_username("bob");
    CHECK(copy.raw().host == mine);
    hicache::Options copy2 = copy;
    CHECK(copy2.raw().host == mine && std::string(copy2.raw().username) == "bob");
    copy2.set_host("owned again");
    CHECK(copy2.raw().host != mine && std::string(copy2.raw().host) == "owned again");
}

void test_store_lifetime(const std::string &model) {
    hicache::Store empty;
    CHECK(!empty.is_open() && !empty && empty.native_handle() == nullptr);
    CHECK_FAILS(empty.try_ping(), hicache::Status::InvalidArgument);

    hicache::Store a = open_store(options(model));
    hicache_valkey *h = a.native_handle();
    CHECK_OK(a.try_ping());

    hicache::Store b = std::move(a);
    CHECK(!a.is_open() && b.native_handle() == h); // NOLINT: moved-from is specified
    CHECK_FAILS(a.try_ping(), hicache::Status::InvalidArgument);
    CHECK_OK(b.try_ping());

    // Move assignment onto an open Store closes its handle (ASan/valgrind would see a leak).
    hicache::Store c = open_store(options(model));
    c = std::move(b);
    CHECK(c.native_handle() == h && !b.is_open()); // NOLINT
    hicache::Store &alias = c;
    c = std::move(alias); // self-move keeps the handle
    CHECK(c.native_handle() == h);
    CHECK_OK(c.try_ping());

    hicache_valkey *released = c.release();
    CHECK(released == h && !c.is_open());
    hicache::Store adopted(released);
    CHECK_OK(adopted.try_ping());
    adopted.close();
    CHECK(!adopted.is_open());
    adopted.close(); // twice is fine

    // From the environment alone: VALKEY_HOST/PORT point at the test server.
    hicache::Result<hicache::Store> env = hicache::Store::try_open();
    CHECK_OK(env);
    CHECK_OK(env.value.try_ping());
#if HICACHE_VALKEY_EXCEPTIONS
    hicache::Store thrown_open = hicache::Store::open(options(model));
    CHECK(thrown_open.ping().count() >= 0);
    hicache::Store env2 = hicache::Store::open();
    CHECK(env2.is_open());
#endif
}

// Pages of 3 segments (a K part, a V part, a small trailer), each segment in its own buffer.
struct Pages {
    static constexpr std::size_t kSeg[3] = {3000, 3000, 100};
    std::vector<std::vector<std::uint8_t>> bufs; // 3 per page
    explicit Pages(std::size_t n) : bufs(3 * n) {
        for (std::size_t i = 0; i < bufs.size(); ++i) bufs[i].assign(kSeg[i % 3], 0);
    }
    std::uint8_t *seg(std::size_t page, std::size_t j) { return bufs[3 * page + j].data(); }
    void fill(std::size_t page, std::uint64_t seed) {
        for (std::size_t j = 0; j < 3; ++j) hv::fill(seg(page, j), kSeg[j], seed, j * 10000);
    }
    bool holds(std::size_t page, std::uint64_t seed) {
        for (std::size_t j = 0; j < 3; ++j)
            if (!hv::holds(seg(page, j), kSeg[j], seed, j * 10000)) return false;
        return true;
    }
    void wipe() {
        for (auto &b : bufs) std::memset(b.data(), 0, b.size());
    }
    void add_to(hicache::Batch &b, const std::string &key, std::size_t page) {
        b.add(key);
        for (std::size_t j = 0; j < 3; ++j) b.add_segment(seg(page, j), kSeg[j]);
    }
};
constexpr std::size_t Pages::kSeg[3];

void test_batches(const hicache::Store &store) {
    const std::size_t n = 8;
    Pages pages(n);
    std::vector<std::string> names;
    for (std::size_t i = 0; i < n; ++i) names.push_back("page-" + std::to_string(i));

    hicache::Batch b;
    for (std::size_t i = 0; i < n; ++i) {
        pages.fill(i, 100 + i);
        pages.add_to(b, names[i], i);
    }
    CHECK(b.size() == n && b.segment_count() == 3 * n);
    CHECK_OK(store.try_batch_set(b));
    CHECK(b.all_ok() && b.count(hicache::Outcome::Ok) == n);

    // Read back through the same Batch (same keys, same segments) into wiped buffers.
    pages.wipe();
    CHECK_OK(store.try_batch_get(b));
    CHECK(b.all_ok());
    for (std::size_t i = 0; i < n; ++i) CHECK(pages.holds(i, 100 + i));

    // Exists on a prefix with a gap: page 5 is not stored.
    hicache::Batch e;
    const std::string absent = "not-stored";
    for (std::size_t i = 0; i < n; ++i) e.add(i == 5 ? absent : names[i]); // views: the strings outlive e
    hicache::Result<std::size_t> lead = store.try_batch_exists(e);
    CHECK_OK(lead);
    CHECK(lead.value == 5 && e.leading_hits() == 5);
    for (std::size_t i = 0; i < n; ++i) CHECK(e.found(i) == (i != 5));

    // clear() keeps the Batch usable: a miss and a size mismatch (a buffer 1 byte short).
    std::vector<std::uint8_t> short_buf(3000 + 3000 + 99, 0xAB);
    b.clear();
    CHECK(b.empty() && b.segment_count() == 0);
    b.add(hicache::key("not-stored"), {hicache::segment(short_buf.data(), 10)});
    b.add(hicache::key(names[0]), {hicache::segment(short_buf.data(), short_buf.size())});
    b.add(names[1]);
    b.add_segment(pages.seg(1, 0), 3000);
    b.add_segment(pages.seg(1, 1), 3000);
    b.add_segment(pages.seg(1, 2), 100);
    CHECK_OK(store.try_batch_get(b));
    CHECK(b.outcome(0) == hicache::Outcome::Miss);
    CHECK(b.outcome(1) == hicache::Outcome::SizeMismatch);
    CHECK(b.outcome(2) == hicache::Outcome::Ok);
    CHECK(!b.all_ok() && b.count(hicache::Outcome::Miss) == 1);
    CHECK(short_buf[0] == 0xAB && short_buf.back() == 0xAB); // a mismatch leaves the segments alone
    CHECK(std::string(hicache::to_string(b.outcome(1))) == "HICACHE_OUTCOME_SIZE_MISMATCH");

    // Caller arrays: keys[], values[] (each over caller segments), outcomes[].
    pages.wipe();
    hicache::Key keys[2] = {hicache::key(names[2]), hicache::key(names[3])};
    hicache::Segment segs[2][3];
    hicache::Value values[2];
    for (std::size_t p = 0; p < 2; ++p) {
        for (std::size_t j = 0; j < 3; ++j) segs[p][j] = hicache::segment(pages.seg(2 + p, j), Pages::kSeg[j]);
        values[p] = hicache::value(segs[p], 3);
    }
    hicache::Outcome out[2] = {hicache::Outcome::Miss, hicache::Outcome::Miss};
    CHECK_OK(store.try_batch_get(keys, values, 2, out));
    CHECK(out[0] == hicache::Outcome::Ok && out[1] == hicache::Outcome::Ok);
    CHECK(pages.holds(2, 102) && pages.holds(3, 103));
    std::uint8_t found[2] = {9, 9};
    hicache::Result<std::size_t> l2 = store.try_batch_exists(keys, 2, found);
    CHECK_OK(l2);
    CHECK(l2.value == 2 && found[0] == 1 && found[1] == 1);
    CHECK_OK(store.try_batch_set(keys, values, 0, nullptr)); // n == 0: a no-op

#if HICACHE_VALKEY_HAS_SPAN
    std::span<const hicache::Key> ks(keys);
    CHECK_OK(store.try_batch_set(ks, values, out));
    CHECK_OK(store.try_batch_get(ks, values, out));
    CHECK(out[0] == hicache::Outcome::Ok && out[1] == hicache::Outcome::Ok);
    hicache::Result<std::size_t> l3 = store.try_batch_exists(ks, found);
    CHECK_OK(l3);
    CHECK(l3.value == 2);
    CHECK_OK(store.try_batch_exists(ks));
    CHECK_FAILS(store.try_batch_set(ks, std::span<const hicache::Value>(values, 1), out), hicache::Status::InvalidArgument);
    CHECK_FAILS(store.try_batch_get(ks, values, std::span<hicache::Outcome>(out, 1)), hicache::Status::InvalidArgument);
    CHECK_FAILS(store.try_batch_exists(ks, std::span<std::uint8_t>(found, 1)), hicache::Status::InvalidArgument);
    CHECK(hicache::value(std::span<const hicache::Segment>(segs[0])).count == 3);
#endif

#if HICACHE_VALKEY_EXCEPTIONS
    // The throwing calls, same results.
    pages.wipe();
    store.batch_get(keys, values, 2, out);
    CHECK(out[0] == hicache::Outcome::Ok && pages.holds(2, 102) && pages.holds(3, 103));
    store.batch_set(keys, values, 2, out);
    CHECK(store.batch_exists(keys, 2, found) == 2 && store.batch_exists(keys, 2) == 2);
    b.clear();
    pages.add_to(b, names[4], 4);
    pages.wipe();
    store.batch_get(b);
    CHECK(b.all_ok() && pages.holds(4, 104));
    store.batch_set(b);
    CHECK(b.all_ok() && store.batch_exists(b) == 1 && b.found(0));
#if HICACHE_VALKEY_HAS_SPAN
    store.batch_set(ks, values, out);
    store.batch_get(ks, values, out);
    CHECK(store.batch_exists(ks, found) == 2);
    CHECK_THROWS(store.batch_set(ks, std::span<const hicache::Value>(values, 1), out), hicache::Status::InvalidArgument,
                 CHECK(std::string(err.message()).find("different lengths") != std::string::npos));
#endif
#endif
}

void test_errors(const std::string &model, const hicache::Store &store) {
    // Server down: a port that refuses connections.
    int fd = -1;
    const int port = hv::refused_port(&fd);
    hicache::Options down = options(model);
    down.set_host("127.0.0.1").set_port(port).set_connect_timeout(std::chrono::milliseconds(500));
    hicache::Result<hicache::Store> r = hicache::Store::try_open(down);
    CHECK_FAILS(r, hicache::Status::Connection);
    CHECK(!r.value.is_open());
    CHECK(r.message.find(std::to_string(port)) != std::string::npos); // the message names the server
    CHECK(r.message == hicache::last_error());                         // and is the library's own
#if HICACHE_VALKEY_EXCEPTIONS
    CHECK_THROWS(hicache::Store::open(down), hicache::Status::Connection, {
        CHECK(std::string(err.message()) == r.message);
        CHECK(std::string(err.what()) == "HICACHE_STATUS_CONNECTION: " + r.message);
    });
#endif
    close(fd);

    // A Unix socket where no server listens: the socket_path field reaches the library.
    hicache::Options sock = options(model);
    sock.set_socket_path("/nonexistent-dir/valkey.sock");
    hicache::Result<hicache::Store> rs = hicache::Store::try_open(sock);
    CHECK_FAILS(rs, hicache::Status::Connection);
    CHECK(rs.message.find("/nonexistent-dir/valkey.sock") != std::string::npos);

    // Invalid configuration, rejected before connecting.
    hicache::Options bad = options(model);
    bad.set_port(0);
    CHECK_FAILS(hicache::Store::try_open(bad), hicache::Status::InvalidConfig);
    bad = options(model);
    bad.set_timeout(std::chrono::milliseconds(-5));
    CHECK_FAILS(hicache::Store::try_open(bad), hicache::Status::InvalidConfig);
    bad = options(model);
    bad.set_tp(3, 2);
    CHECK_FAILS(hicache::Store::try_open(bad), hicache::Status::InvalidConfig);
#if HICACHE_VALKEY_EXCEPTIONS
    CHECK_THROWS(hicache::Store::open(bad), hicache::Status::InvalidConfig, (void)err);
#endif

    // Bad arguments: an empty key, a NULL segment with a length. The Batch's outcomes are then
    // IoError (never a stale Ok from an earlier call).
    std::uint8_t buf[16] = {};
    hicache::Batch b;
    b.add("ok-key", {hicache::segment(buf, sizeof buf)});
    CHECK_OK(store.try_batch_set(b));
    CHECK(b.all_ok());
    b.add(hicache::key(buf, 0), {hicache::segment(buf, sizeof buf)});
    hicache::Result<> res = store.try_batch_set(b);
    CHECK_FAILS(res, hicache::Status::InvalidArgument);
    CHECK(res.message.find("empty") != std::string::npos);
    CHECK(b.count(hicache::Outcome::IoError) == 2 && !b.all_ok());
    CHECK_FAILS(store.try_batch_exists(b), hicache::Status::InvalidArgument);
    CHECK(b.leading_hits() == 0 && !b.found(0));
    b.clear();
    b.add("null-segment");
    b.add_segment(static_cast<void *>(nullptr), 8);
    CHECK_FAILS(store.try_batch_get(b), hicache::Status::InvalidArgument);
    CHECK(b.outcome(0) == hicache::Outcome::IoError);
    hicache::Key k = hicache::key("k");
    CHECK_FAILS(store.try_batch_set(&k, nullptr, 1, nullptr), hicache::Status::InvalidArgument);
#if HICACHE_VALKEY_EXCEPTIONS
    CHECK_THROWS(store.batch_get(b), hicache::Status::InvalidArgument,
                 CHECK(std::string(err.message()).find("NULL") != std::string::npos));
    hicache::Store none;
    CHECK_THROWS(none.stats(), hicache::Status::InvalidArgument, (void)err);
    CHECK_THROWS(none.clear(), hicache::Status::InvalidArgument, (void)err);
#endif
    // A per-key miss is not an error.
    b.clear();
    b.add("never-stored", {hicache::segment(buf, sizeof buf)});
    hicache::Result<> miss = store.try_batch_get(b);
    CHECK_OK(miss);
    CHECK(miss.message.empty() && b.outcome(0) == hicache::Outcome::Miss);
}

void test_stats(const hicache::Store &store) {
    hicache::Result<hicache::Stats> r = store.try_stats();
    CHECK_OK(r);
    const hicache::Stats &s = r.value;
    CHECK(s.model_keys >= 8 && s.db_keys >= s.model_keys);
    CHECK(!s.used_memory_human.empty() && s.used_memory_human == s.raw.used_memory_human);
    CHECK(s.used_memory_bytes > 0 && s.used_memory_bytes == s.raw.used_memory_bytes);
    CHECK(!s.server_version.empty() && s.server_version == s.raw.server_version);
    CHECK(!s.maxmemory_policy.empty());
    CHECK(s.pages_written >= 8 && s.get_hits >= 8 && s.set_calls >= 2);
    CHECK(s.raw.struct_size == sizeof(hicache_stats));
    CHECK(s.cluster_primaries == 0 && s.unreachable_primaries == 0); // one server, no cluster
#if HICACHE_VALKEY_EXCEPTIONS
    CHECK(store.stats().model_keys == s.model_keys);
#endif
}

// kThreads threads on one Store, each with its own Batch and buffers, for kRounds rounds:
// write own pages, read them back, check exists; one thread also makes failing calls, whose
// messages must not show up in the others' results.
void test_threads(const hicache::Store &store) {
    constexpr std::size_t kThreads = 4, kRounds = 15, kPages = 6;
    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    for (std::size_t t = 0; t < kThreads; ++t) {
        threads.emplace_back([&store, &failures, t] {
            Pages pages(kPages);
            std::vector<std::string> names;
            for (std::size_t i = 0; i < kPages; ++i) names.push_back("thread-" + std::to_string(t) + "-" + std::to_string(i));
            hicache::Batch b(kPages, 3 * kPages), e(kPages, 0);
            for (std::size_t i = 0; i < kPages; ++i) e.add(names[i]);
            for (std::size_t round = 0; round < kRounds; ++round) {
                b.clear();
                for (std::size_t i = 0; i < kPages; ++i) {
                    pages.fill(i, (t << 32) | (round << 8) | i);
                    pages.add_to(b, names[i], i);
                }
                if (t == 0) { // a failing call on this thread only: its message stays here
                    hicache::Store none;
                    hicache::Result<std::chrono::microseconds> p = none.try_ping();
                    if (p.status != hicache::Status::InvalidArgument || p.message.empty()) ++failures;
                }
                hicache::Result<> w = store.try_batch_set(b);
                if (!w.ok() || !b.all_ok() || !hicache::last_error().empty()) ++failures;
                pages.wipe();
                hicache::Result<> g = store.try_batch_get(b);
                if (!g.ok() || !b.all_ok() || !hicache::last_error().empty()) ++failures;
                for (std::size_t i = 0; i < kPages; ++i)
                    if (!pages.holds(i, (t << 32) | (round << 8) | i)) ++failures;
                hicache::Result<std::size_t> x = store.try_batch_exists(e);
                if (!x.ok() || x.value != kPages) ++failures;
                if (round % 5 == 0 && !store.try_ping().ok()) ++failures;
            }
        });
    }
    for (std::thread &th : threads) th.join();
    CHECK(failures.load() == 0);
    hicache::Result<hicache::Stats> s = store.try_stats();
    CHECK_OK(s);
    CHECK(s.value.model_keys >= kThreads * kPages);
}

} // namespace

int main() {
    hv::require_server();
    const std::string model = hv::model(HV_TAG);
    test_options();
    test_store_lifetime(model);
    hicache::Store store = open_store(options(model));
    test_batches(store);
    test_errors(model, store);
    test_stats(store);
    test_threads(store);
    hicache::Result<std::uint64_t> cleared = store.try_clear();
    CHECK_OK(cleared);
    CHECK(cleared.value >= 8);
#if HICACHE_VALKEY_EXCEPTIONS
    CHECK(store.clear() == 0);
#endif
    return hv::done(HV_TAG);
}
