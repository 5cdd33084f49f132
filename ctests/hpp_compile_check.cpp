// hpp_compile_check: compiled (not run) by the hpp_compile:* tests with -Wall -Wextra -Werror
// -pedantic (and more) under each C++ compiler found, in C++17 and C++20, with and without
// -fno-exceptions. Every function of the header is used, so every template is instantiated
// and each warning the header could cause in a user's build shows up here.
#include "hicache_valkey.hpp"
#include "hicache_valkey.hpp" // the include guard

#include <cstdint>
#include <string>

#if defined(HV_EXPECT_NO_EXCEPTIONS) && HICACHE_VALKEY_EXCEPTIONS
#error "-fno-exceptions should turn the throwing API off"
#endif
#if !defined(HV_EXPECT_NO_EXCEPTIONS) && !HICACHE_VALKEY_EXCEPTIONS
#error "exceptions are on: the throwing API should be there"
#endif
#if __cplusplus >= 202002L && !HICACHE_VALKEY_HAS_SPAN
#error "C++20: the std::span overloads should be there"
#endif

static_assert(!std::is_copy_constructible<hicache::Store>::value, "Store is move-only");
static_assert(std::is_nothrow_move_constructible<hicache::Store>::value, "Store moves without throwing");
static_assert(std::is_nothrow_move_assignable<hicache::Store>::value, "Store moves without throwing");
static_assert(std::is_copy_constructible<hicache::Options>::value, "Options copy");
static_assert(std::is_same<hicache::Key, hicache_key>::value, "keys are the C struct");

// Used by main() through a volatile flag, so the compiler keeps it but it never runs.
int use_everything(const hicache::Store &store) {
    int sum = 0;
    hicache::Options o;
    o.set_url("valkey://127.0.0.1:1").set_host("127.0.0.1").set_port(1).set_db(0);
    o.set_username("u").set_password("p").set_model_name("m").set_socket_path("/s").set_tp(0, 1).set_pp(0, 1).set_cp(0, 1);
    o.set_mla(false).set_value_format(1u).set_checksum(true).set_connections(1);
    o.set_connect_timeout(std::chrono::milliseconds(10)).set_timeout(std::chrono::milliseconds(10));
    o.set(&hicache_valkey_options::host, nullptr).set(&hicache_valkey_options::url, std::string("x"));
    o.set(&hicache_valkey_options::host, "h").set(&hicache_valkey_options::db, 2);
    char mutable_name[] = "n";
    o.set(&hicache_valkey_options::model_name, mutable_name); // char*: the string overload
    o.raw().port = 3;
    hicache::Options copy = o;
    hicache::Options moved = std::move(copy);
    copy = moved;
    moved = std::move(copy);
    sum += static_cast<int>(moved.c_options()->port) + static_cast<int>(moved.init_status());
    sum += static_cast<int>(moved.init_message().size());

    std::uint8_t page[64] = {};
    const std::uint8_t cpage[8] = {};
    hicache::Segment segs[2] = {hicache::segment(page, sizeof page), hicache::segment(cpage, sizeof cpage)};
    hicache::Key keys[1] = {hicache::key("k")};
    hicache::Value values[1] = {hicache::value(segs, 2)};
    hicache::Outcome outcomes[1] = {hicache::Outcome::Miss};
    std::uint8_t found[1] = {0};

    hicache::Batch b(4, 8);
    b.clear();
    b.add("k0");
    b.add_segment(page, sizeof page);
    b.add_segment(cpage, sizeof cpage);
    b.add(hicache::key(page, 4), segs, 2);
    b.add(hicache::key("k2"), {hicache::segment(page, 1)});
    b.add(page, 2);
    sum += static_cast<int>(b.size() + b.segment_count() + (b.empty() ? 1 : 0) + b.count(hicache::Outcome::Ok));
    sum += b.all_ok() ? 1 : 0;
    sum += b.size() > 0 && b.keys() != nullptr && b.values() != nullptr ? 1 : 0;

    hicache::Result<> r = store.try_batch_set(keys, values, 1, outcomes);
    sum += r.ok() ? 1 : 0;
    r = store.try_batch_get(keys, values, 1, outcomes);
    sum += static_cast<bool>(r) ? 1 : 0;
    hicache::Result<std::size_t> e = store.try_batch_exists(keys, 1, found);
    sum += static_cast<int>(e.value);
    r = store.try_batch_set(b);
    r = store.try_batch_get(b);
    e = store.try_batch_exists(b);
    sum += static_cast<int>(b.leading_hits()) + (b.found(0) ? 1 : 0) + static_cast<int>(b.outcome(0));
    sum += b.outcomes() != nullptr ? 1 : 0;
    hicache::Result<hicache::Stats> st = store.try_stats();
    sum += static_cast<int>(st.value.used_memory_human.size() + st.value.raw.struct_size + st.value.unreachable_primaries);
    hicache::Result<std::uint64_t> c = store.try_clear();
    sum += static_cast<int>(c.value);
    hicache::Result<std::chrono::microseconds> p = store.try_ping();
    sum += static_cast<int>(p.value.count());
    hicache::Result<hicache::Store> opened = hicache::Store::try_open(o);
    hicache::Result<hicache::Store> from_env = hicache::Store::try_open();
    hicache::Store s2 = std::move(opened.value);
    s2 = std::move(from_env.value);
    sum += s2.is_open() ? 1 : 0;
    sum += static_cast<bool>(s2) && s2.native_handle() != nullptr ? 1 : 0;
    hicache_valkey *raw = s2.release();
    hicache::Store s3(raw);
    s3.close();
    sum += static_cast<int>(std::string(hicache::to_string(hicache::Status::Timeout)).size());
    sum += static_cast<int>(std::string(hicache::to_string(hicache::Outcome::TooLarge)).size());
    sum += static_cast<int>(std::string(hicache::version()).size() + hicache::last_error().size());
    std::string msg;
    hicache::last_error(msg);
    sum += static_cast<int>(msg.size() + r.message.size() + static_cast<std::size_t>(r.status));

#if HICACHE_VALKEY_HAS_SPAN
    r = store.try_batch_set(std::span<const hicache::Key>(keys), std::span<const hicache::Value>(values),
                            std::span<hicache::Outcome>(outcomes));
    r = store.try_batch_get(keys, values, outcomes); // arrays convert to spans
    e = store.try_batch_exists(std::span<const hicache::Key>(keys), std::span<std::uint8_t>(found));
    e = store.try_batch_exists(std::span<const hicache::Key>(keys));
    sum += static_cast<int>(hicache::value(std::span<const hicache::Segment>(segs)).count);
#endif

#if HICACHE_VALKEY_EXCEPTIONS
    try {
        hicache::Store s4 = hicache::Store::open(o);
        hicache::Store s5 = hicache::Store::open();
        store.batch_set(keys, values, 1, outcomes);
        store.batch_get(keys, values, 1, outcomes);
        sum += static_cast<int>(store.batch_exists(keys, 1, found) + store.batch_exists(keys, 1));
        store.batch_set(b);
        store.batch_get(b);
        sum += static_cast<int>(store.batch_exists(b));
        sum += static_cast<int>(store.stats().model_keys + store.clear());
        sum += static_cast<int>(store.ping().count());
#if HICACHE_VALKEY_HAS_SPAN
        store.batch_set(std::span<const hicache::Key>(keys), std::span<const hicache::Value>(values),
                        std::span<hicache::Outcome>(outcomes));
        store.batch_get(keys, values, outcomes);
        sum += static_cast<int>(store.batch_exists(std::span<const hicache::Key>(keys)));
#endif
    } catch (const hicache::Error &err) {
        sum += static_cast<int>(err.status()) + static_cast<int>(std::string(err.message()).size());
        sum += static_cast<int>(std::string(err.what()).size());
    }
#endif
    return sum;
}

int main() {
    volatile bool never = false;
    if (never) {
        hicache::Store store;
        return use_everything(store);
    }
    return 0;
}
