/*
 * hicache_valkey.hpp - C++17 wrapper over hicache_valkey.h (header only, hand-written).
 *
 *   hicache::Options opts;                       // unset fields: environment, else defaults
 *   opts.set_model_name("Qwen/Qwen3-8B").set_value_format(layout_fingerprint);
 *   hicache::Store store = hicache::Store::open(opts);       // throws hicache::Error
 *   hicache::Batch batch;                        // reuse it: no allocation after warm-up
 *   batch.add(key, key_len);                     // a page: key + its segments (caller memory)
 *   batch.add_segment(k_ptr, page_bytes);
 *   batch.add_segment(v_ptr, page_bytes);
 *   store.batch_set(batch);                      // batch.outcome(0) == hicache::Outcome::Ok
 *
 * Model:
 * - Store owns one hicache_valkey handle (move-only; closed by the destructor). Its member
 *   functions are const and may be called by several threads at once, like the C handle.
 *   Moving, assigning or destroying a Store must not race with calls on it.
 * - Batch holds reusable key/value/segment/outcome arrays; clear() keeps their capacity. One
 *   Batch belongs to one thread at a time.
 * - Keys and segments are views of the caller's memory (hicache_key / hicache_segment, the C
 *   structs themselves): no value byte is copied and nothing is allocated per value.
 * - Errors: a call that fails as a whole throws hicache::Error (status + the library's
 *   message). Every call has a try_ twin that never throws a hicache::Error and returns a
 *   hicache::Result<T> (status, message, value); with -fno-exceptions only the try_ calls
 *   exist. Per-key failures of a batch are not errors: they are in the outcomes.
 */
#ifndef HICACHE_VALKEY_HPP
#define HICACHE_VALKEY_HPP

#include "hicache_valkey.h"

#if !defined(__cplusplus) || (__cplusplus < 201703L && !(defined(_MSVC_LANG) && _MSVC_LANG >= 201703L))
#error "hicache_valkey.hpp needs C++17 or later (use hicache_valkey.h from C)"
#endif

#include <cassert>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

/* HICACHE_VALKEY_EXCEPTIONS: 1 when the throwing API (hicache::Error) is available; follows
 * the compiler's exception setting unless defined before the include. */
#ifndef HICACHE_VALKEY_EXCEPTIONS
#if defined(__cpp_exceptions) || defined(_CPPUNWIND)
#define HICACHE_VALKEY_EXCEPTIONS 1
#else
#define HICACHE_VALKEY_EXCEPTIONS 0
#endif
#endif
#if HICACHE_VALKEY_EXCEPTIONS
#include <stdexcept>
#endif

/* HICACHE_VALKEY_HAS_SPAN: 1 when the std::span overloads are declared (C++20). */
#if defined(__has_include)
#if __has_include(<version>)
#include <version>
#endif
#endif
#if defined(__cpp_lib_span) && __cpp_lib_span >= 202002L
#include <span>
#define HICACHE_VALKEY_HAS_SPAN 1
#else
#define HICACHE_VALKEY_HAS_SPAN 0
#endif

namespace hicache {

/* ---------------------------------------------------------------------------------------- */
/* Statuses, outcomes, messages                                                              */
/* ---------------------------------------------------------------------------------------- */

/* The status of a call as a whole (hicache_status). */
enum class Status : std::int32_t {
    Ok = HICACHE_STATUS_OK,
    InvalidArgument = HICACHE_STATUS_INVALID_ARGUMENT,
    InvalidConfig = HICACHE_STATUS_INVALID_CONFIG,
    Connection = HICACHE_STATUS_CONNECTION,
    Auth = HICACHE_STATUS_AUTH,
    Timeout = HICACHE_STATUS_TIMEOUT,
    Protocol = HICACHE_STATUS_PROTOCOL,
    Server = HICACHE_STATUS_SERVER,
    Panic = HICACHE_STATUS_PANIC,
    Permission = HICACHE_STATUS_PERMISSION,
    Tls = HICACHE_STATUS_TLS,
};

/* What happened to one key of a batch (hicache_outcome). A library newer than this header may
 * report a value not listed here; to_string() names it. */
enum class Outcome : std::int32_t {
    Ok = HICACHE_OUTCOME_OK,
    Miss = HICACHE_OUTCOME_MISS,
    SizeMismatch = HICACHE_OUTCOME_SIZE_MISMATCH,
    Foreign = HICACHE_OUTCOME_FOREIGN,
    FormatMismatch = HICACHE_OUTCOME_FORMAT_MISMATCH,
    ChecksumMismatch = HICACHE_OUTCOME_CHECKSUM_MISMATCH,
    Timeout = HICACHE_OUTCOME_TIMEOUT,
    IoError = HICACHE_OUTCOME_IO_ERROR,
    ServerError = HICACHE_OUTCOME_SERVER_ERROR,
    OutOfMemory = HICACHE_OUTCOME_OUT_OF_MEMORY,
    TooLarge = HICACHE_OUTCOME_TOO_LARGE,
};

static_assert(sizeof(Outcome) == sizeof(std::int32_t) && alignof(Outcome) == alignof(std::int32_t),
              "an Outcome array is passed as the C API's int32_t outcomes array");

/* "HICACHE_STATUS_CONNECTION", "HICACHE_OUTCOME_MISS", ... (static strings). */
inline const char *to_string(Status s) noexcept { return hicache_valkey_status_str(static_cast<std::int32_t>(s)); }
inline const char *to_string(Outcome o) noexcept { return hicache_valkey_outcome_str(static_cast<std::int32_t>(o)); }

/* The library's version, e.g. "0.1.0" (of the loaded library, not of this header). */
inline const char *version() noexcept { return hicache_valkey_version(); }

/* Copies this thread's last error message into `out`, reusing its capacity. */
inline void last_error(std::string &out) {
    const std::size_t n = hicache_valkey_last_error(nullptr, 0);
    out.resize(n);
    if (n > 0) hicache_valkey_last_error(&out[0], n + 1); /* the NUL lands on out[n] */
}

/* This thread's last error message (empty after a call that succeeded with no failed key). */
inline std::string last_error() {
    std::string s;
    last_error(s);
    return s;
}

/* ---------------------------------------------------------------------------------------- */
/* Results and errors                                                                        */
/* ---------------------------------------------------------------------------------------- */

/* What a try_ call returns: the status and, when it is not Ok, the library's message.
 * Result<T> adds the call's value (meaningful only when ok()). */
template <class T = void> struct Result;

template <> struct [[nodiscard]] Result<void> {
    Status status = Status::Ok;
    std::string message;

    bool ok() const noexcept { return status == Status::Ok; }
    explicit operator bool() const noexcept { return ok(); }
};

template <class T> struct [[nodiscard]] Result : Result<void> {
    T value{};
};

#if HICACHE_VALKEY_EXCEPTIONS
/* A call failed as a whole. what() is "HICACHE_STATUS_<NAME>: <message>". */
class Error : public std::runtime_error {
public:
    Error(Status status, const std::string &message)
        : std::runtime_error(compose(status, message)), status_(status),
          message_offset_(message.empty() ? 0 : std::strlen(to_string(status)) + 2) {}

    Status status() const noexcept { return status_; }
    /* The library's message alone (what() without the status name). */
    const char *message() const noexcept { return message_offset_ == 0 ? "" : what() + message_offset_; }

private:
    static std::string compose(Status status, const std::string &message) {
        std::string s = to_string(status);
        if (!message.empty()) s.append(": ").append(message);
        return s;
    }
    Status status_;
    std::size_t message_offset_;
};
#endif

namespace detail {

inline Status status_of(hicache_status s) noexcept { return static_cast<Status>(static_cast<std::int32_t>(s)); }

/* A Result for status `s` of the call just made on this thread. */
template <class T> Result<T> result(hicache_status s) {
    Result<T> r;
    r.status = status_of(s);
    if (s != HICACHE_STATUS_OK) last_error(r.message);
    return r;
}

template <class T> Result<T> fail(Status s, std::string message) {
    Result<T> r;
    r.status = s;
    r.message = std::move(message);
    return r;
}

/* The library wrote int32_t values into the Outcome array; re-read them as Outcome objects
 * (a no-op after optimisation, but it keeps the C++ object model intact). */
inline void settle(Outcome *outcomes, std::size_t n) noexcept {
    for (std::size_t i = 0; i < n; ++i) {
        std::int32_t v;
        std::memcpy(&v, &outcomes[i], sizeof v);
        outcomes[i] = static_cast<Outcome>(v);
    }
}

inline std::int32_t *c_outcomes(Outcome *outcomes) noexcept { return reinterpret_cast<std::int32_t *>(outcomes); }

template <std::size_t N> std::string c_string(const char (&a)[N]) {
    const void *nul = std::memchr(a, '\0', N);
    return std::string(a, nul != nullptr ? static_cast<std::size_t>(static_cast<const char *>(nul) - a) : N);
}

#if HICACHE_VALKEY_EXCEPTIONS
template <class T> T value_or_throw(Result<T> &&r) {
    if (!r.ok()) throw Error(r.status, r.message);
    return std::move(r.value);
}
inline void value_or_throw(Result<void> &&r) {
    if (!r.ok()) throw Error(r.status, r.message);
}
#endif

} // namespace detail

/* ---------------------------------------------------------------------------------------- */
/* Keys, segments, values: the C structs, views of the caller's memory                       */
/* ---------------------------------------------------------------------------------------- */

using Key = hicache_key;         /* {const uint8_t *ptr; size_t len;} binary-safe, not empty */
using Segment = hicache_segment; /* {void *ptr; size_t len;} one piece of a value */
using Value = hicache_value;     /* {const hicache_segment *segments; size_t count;} */

inline Key key(const void *ptr, std::size_t len) noexcept { return Key{static_cast<const std::uint8_t *>(ptr), len}; }
inline Key key(std::string_view s) noexcept { return key(s.data(), s.size()); }
inline Segment segment(void *ptr, std::size_t len) noexcept { return Segment{ptr, len}; }
/* For values that are only written (batch_set never writes into a segment). */
inline Segment segment(const void *ptr, std::size_t len) noexcept { return Segment{const_cast<void *>(ptr), len}; }
inline Value value(const Segment *segments, std::size_t count) noexcept { return Value{segments, count}; }
#if HICACHE_VALKEY_HAS_SPAN
inline Value value(std::span<const Segment> segments) noexcept { return Value{segments.data(), segments.size()}; }
#endif

/* ---------------------------------------------------------------------------------------- */
/* Options                                                                                   */
/* ---------------------------------------------------------------------------------------- */

/* hicache_valkey_options, initialised with HICACHE_VALKEY_OPTIONS_INIT, with typed setters for
 * its fields and ownership of the strings set through them. Every field of the C struct, also
 * those appended in later versions, is reachable: raw() is the struct itself, and
 * set(&hicache_valkey_options::field, value) sets any field by member pointer (a string field
 * set that way is copied and owned). Strings assigned through raw() stay the caller's.
 * Unset fields come from the environment (VALKEY_URL, VALKEY_HOST, ...), else the defaults. */
class Options {
public:
    Options() {
        const hicache_status s = HICACHE_VALKEY_OPTIONS_INIT(&raw_);
        if (s != HICACHE_STATUS_OK) {
            /* A header newer than the loaded library: remember why; Store::open reports it. */
            init_status_ = detail::status_of(s);
            last_error(init_message_);
            std::memset(&raw_, 0, sizeof raw_);
            raw_.struct_size = static_cast<std::uint32_t>(sizeof raw_);
        }
    }

    Options(const Options &o) : raw_(o.raw_), init_status_(o.init_status_), init_message_(o.init_message_) {
        for (const Owned &e : o.strings_)
            if (o.raw_.*e.field == e.written) strings_.push_back(Owned{e.field, e.value, nullptr});
        sync();
    }
    Options(Options &&o) noexcept
        : raw_(o.raw_), strings_(std::move(o.strings_)), init_status_(o.init_status_),
          init_message_(std::move(o.init_message_)) {
        /* The vector's buffer moved as a whole: the pointers in raw_ stay valid. */
        for (const Owned &e : strings_)
            if (o.raw_.*e.field == e.written) o.raw_.*e.field = nullptr;
        o.strings_.clear();
    }
    Options &operator=(const Options &o) {
        if (this != &o) *this = Options(o);
        return *this;
    }
    Options &operator=(Options &&o) noexcept {
        if (this != &o) {
            raw_ = o.raw_;
            strings_ = std::move(o.strings_);
            init_status_ = o.init_status_;
            init_message_ = std::move(o.init_message_);
            for (const Owned &e : strings_)
                if (o.raw_.*e.field == e.written) o.raw_.*e.field = nullptr;
            o.strings_.clear();
        }
        return *this;
    }
    ~Options() = default;

    /* The C struct. Fields appended after this header was written are here too. */
    hicache_valkey_options &raw() noexcept { return raw_; }
    const hicache_valkey_options &raw() const noexcept { return raw_; }
    const hicache_valkey_options *c_options() const noexcept { return &raw_; }

    /* Whether HICACHE_VALKEY_OPTIONS_INIT succeeded (it fails when the loaded library is
     * older than this header); Store::open returns this status and message when it did not. */
    Status init_status() const noexcept { return init_status_; }
    const std::string &init_message() const noexcept { return init_message_; }

    /* Any non-string field, by member pointer: set(&hicache_valkey_options::port, 6380). */
    template <class T, class V, typename std::enable_if<!std::is_pointer<T>::value, int>::type = 0>
    Options &set(T hicache_valkey_options::*field, V value) {
        static_assert(std::is_convertible<V, T>::value, "the value does not convert to the field's type");
        raw_.*field = static_cast<T>(value);
        return *this;
    }
    /* Any string field, by member pointer; the string is copied and owned by these Options. */
    Options &set(const char *hicache_valkey_options::*field, std::string_view value) {
        prune();
        Owned *e = find(field);
        if (e != nullptr)
            e->value.assign(value.data(), value.size());
        else
            strings_.push_back(Owned{field, std::string(value), nullptr});
        sync();
        return *this;
    }
    Options &set(const char *hicache_valkey_options::*field, const char *value) {
        if (value == nullptr) return set(field, nullptr);
        return set(field, std::string_view(value));
    }
    Options &set(const char *hicache_valkey_options::*field, const std::string &value) {
        return set(field, std::string_view(value));
    }
    /* Back to unset (environment, else default). */
    Options &set(const char *hicache_valkey_options::*field, std::nullptr_t) {
        prune();
        for (std::size_t i = 0; i < strings_.size(); ++i)
            if (strings_[i].field == field) {
                strings_.erase(strings_.begin() + static_cast<std::ptrdiff_t>(i));
                break;
            }
        raw_.*field = nullptr;
        sync();
        return *this;
    }

    /* Typed setters, one per field of the C struct. */
    Options &set_url(std::string_view v) { return set(&hicache_valkey_options::url, v); }
    Options &set_host(std::string_view v) { return set(&hicache_valkey_options::host, v); }
    Options &set_port(int v) { return set(&hicache_valkey_options::port, static_cast<std::int32_t>(v)); }
    Options &set_db(int v) { return set(&hicache_valkey_options::db, static_cast<std::int32_t>(v)); }
    Options &set_username(std::string_view v) { return set(&hicache_valkey_options::username, v); }
    Options &set_password(std::string_view v) { return set(&hicache_valkey_options::password, v); }
    Options &set_model_name(std::string_view v) { return set(&hicache_valkey_options::model_name, v); }
    /* The server's Unix domain socket; when set, host and port are not used. */
    Options &set_socket_path(std::string_view v) { return set(&hicache_valkey_options::socket_path, v); }
    Options &set_tp(int rank, int size) {
        raw_.tp_rank = static_cast<std::int32_t>(rank);
        raw_.tp_size = static_cast<std::int32_t>(size);
        return *this;
    }
    Options &set_pp(int rank, int size) {
        raw_.pp_rank = static_cast<std::int32_t>(rank);
        raw_.pp_size = static_cast<std::int32_t>(size);
        return *this;
    }
    Options &set_cp(int rank, int size) {
        raw_.cp_rank = static_cast<std::int32_t>(rank);
        raw_.cp_size = static_cast<std::int32_t>(size);
        return *this;
    }
    Options &set_mla(bool v) { return set(&hicache_valkey_options::is_mla, static_cast<std::uint32_t>(v ? 1 : 0)); }
    Options &set_value_format(std::uint64_t v) { return set(&hicache_valkey_options::value_format, v); }
    Options &set_checksum(bool v) { return set(&hicache_valkey_options::checksum, static_cast<std::int32_t>(v ? 1 : 0)); }
    Options &set_connect_timeout(std::chrono::milliseconds v) {
        return set(&hicache_valkey_options::connect_timeout_ms, clamp_ms(v));
    }
    Options &set_timeout(std::chrono::milliseconds v) { return set(&hicache_valkey_options::timeout_ms, clamp_ms(v)); }
    Options &set_connections(int v) { return set(&hicache_valkey_options::connections, static_cast<std::int32_t>(v)); }
    /* TLS (a valkeys:// URL also turns it on); the CA file (else the system's trust store), the
     * client certificate and key for mutual TLS, and the name to verify when not the host. */
    Options &set_tls(bool v) { return set(&hicache_valkey_options::tls, static_cast<std::int32_t>(v ? 1 : 0)); }
    Options &set_tls_ca_cert(std::string_view v) { return set(&hicache_valkey_options::tls_ca_cert, v); }
    Options &set_tls_cert(std::string_view v) { return set(&hicache_valkey_options::tls_cert, v); }
    Options &set_tls_key(std::string_view v) { return set(&hicache_valkey_options::tls_key, v); }
    Options &set_tls_server_name(std::string_view v) { return set(&hicache_valkey_options::tls_server_name, v); }
    /* INSECURE: accept any server certificate (logged as a warning by the library). */
    Options &set_tls_insecure_skip_verify(bool v) {
        return set(&hicache_valkey_options::tls_insecure_skip_verify, static_cast<std::int32_t>(v ? 1 : 0));
    }
    /* batch_set skips keys already stored with the same value format and payload length. */
    Options &set_skip_existing(bool v) { return set(&hicache_valkey_options::skip_existing, static_cast<std::int32_t>(v ? 1 : 0)); }

private:
    struct Owned {
        const char *hicache_valkey_options::*field;
        std::string value;
        const char *written; /* the pointer last stored into raw_.*field */
    };

    static std::int32_t clamp_ms(std::chrono::milliseconds v) noexcept {
        /* Negative would read as HICACHE_VALKEY_UNSET: send 0, which open rejects (INVALID_CONFIG). */
        const auto c = v.count();
        if (c < 0) return 0;
        return c > std::numeric_limits<std::int32_t>::max() ? std::numeric_limits<std::int32_t>::max()
                                                              : static_cast<std::int32_t>(c);
    }
    Owned *find(const char *hicache_valkey_options::*field) noexcept {
        for (Owned &e : strings_)
            if (e.field == field) return &e;
        return nullptr;
    }
    /* Forgets the strings whose field was reassigned through raw() since. */
    void prune() {
        for (std::size_t i = strings_.size(); i-- > 0;)
            if (raw_.*strings_[i].field != strings_[i].written)
                strings_.erase(strings_.begin() + static_cast<std::ptrdiff_t>(i));
    }
    /* Points the struct's string fields at the owned strings (their buffers may have moved). */
    void sync() noexcept {
        for (Owned &e : strings_) {
            e.written = e.value.c_str();
            raw_.*e.field = e.written;
        }
    }

    hicache_valkey_options raw_{};
    std::vector<Owned> strings_;
    Status init_status_ = Status::Ok;
    std::string init_message_;
};

/* ---------------------------------------------------------------------------------------- */
/* Stats                                                                                     */
/* ---------------------------------------------------------------------------------------- */

/* hicache_stats as a plain struct (see hicache_valkey.h for each field), its strings as
 * std::string; `raw` is the C struct as the library filled it (fields added later are there). */
struct Stats {
    std::uint64_t model_keys = 0;
    std::uint64_t db_keys = 0;
    std::uint64_t used_memory_bytes = 0;
    std::string used_memory_human; /* e.g. "11.42M" */
    std::uint64_t maxmemory_bytes = 0;
    std::string maxmemory_policy;
    std::uint64_t evicted_keys = 0;
    std::uint64_t keyspace_hits = 0;
    std::uint64_t keyspace_misses = 0;
    double keyspace_hit_ratio = 0;
    std::uint64_t connected_clients = 0;
    std::string server_version;
    std::uint64_t get_hits = 0;
    std::uint64_t get_misses = 0;
    double get_hit_ratio = 0;
    std::uint64_t exists_hits = 0;
    std::uint64_t exists_misses = 0;
    double exists_hit_ratio = 0;
    std::uint64_t pages_written = 0;
    std::uint64_t bytes_written = 0;
    std::uint64_t pages_read = 0;
    std::uint64_t bytes_read = 0;
    std::uint64_t errors = 0;
    std::uint64_t reconnects = 0;
    std::uint64_t set_calls = 0;
    std::uint64_t set_p50_us = 0;
    std::uint64_t set_p99_us = 0;
    std::uint64_t get_calls = 0;
    std::uint64_t get_p50_us = 0;
    std::uint64_t get_p99_us = 0;
    std::uint64_t exists_calls = 0;
    std::uint64_t exists_p50_us = 0;
    std::uint64_t exists_p99_us = 0;
    std::uint64_t cluster_primaries = 0;
    std::uint64_t unreachable_primaries = 0;
    hicache_stats raw{};

    static Stats from(const hicache_stats &s) {
        Stats r;
        r.model_keys = s.model_keys;
        r.db_keys = s.db_keys;
        r.used_memory_bytes = s.used_memory_bytes;
        r.used_memory_human = detail::c_string(s.used_memory_human);
        r.maxmemory_bytes = s.maxmemory_bytes;
        r.maxmemory_policy = detail::c_string(s.maxmemory_policy);
        r.evicted_keys = s.evicted_keys;
        r.keyspace_hits = s.keyspace_hits;
        r.keyspace_misses = s.keyspace_misses;
        r.keyspace_hit_ratio = s.keyspace_hit_ratio;
        r.connected_clients = s.connected_clients;
        r.server_version = detail::c_string(s.server_version);
        r.get_hits = s.get_hits;
        r.get_misses = s.get_misses;
        r.get_hit_ratio = s.get_hit_ratio;
        r.exists_hits = s.exists_hits;
        r.exists_misses = s.exists_misses;
        r.exists_hit_ratio = s.exists_hit_ratio;
        r.pages_written = s.pages_written;
        r.bytes_written = s.bytes_written;
        r.pages_read = s.pages_read;
        r.bytes_read = s.bytes_read;
        r.errors = s.errors;
        r.reconnects = s.reconnects;
        r.set_calls = s.set_calls;
        r.set_p50_us = s.set_p50_us;
        r.set_p99_us = s.set_p99_us;
        r.get_calls = s.get_calls;
        r.get_p50_us = s.get_p50_us;
        r.get_p99_us = s.get_p99_us;
        r.exists_calls = s.exists_calls;
        r.exists_p50_us = s.exists_p50_us;
        r.exists_p99_us = s.exists_p99_us;
        r.cluster_primaries = s.cluster_primaries;
        r.unreachable_primaries = s.unreachable_primaries;
        r.raw = s;
        return r;
    }
};

/* ---------------------------------------------------------------------------------------- */
/* Batch                                                                                     */
/* ---------------------------------------------------------------------------------------- */

/* Reusable arrays for one batch call: keys, values (each a run of segments), outcomes and
 * exists flags. clear() keeps the capacity, so a loop that fills and sends batches of the same
 * size allocates only in its first round (reserve() can do that up front). The keys and
 * segments point into the caller's memory, which must stay valid until the call returns. */
class Batch {
public:
    Batch() = default;
    Batch(std::size_t keys, std::size_t segments) { reserve(keys, segments); }

    void reserve(std::size_t keys, std::size_t segments) {
        keys_.reserve(keys);
        values_.reserve(keys);
        outcomes_.reserve(keys);
        found_.reserve(keys);
        segments_.reserve(segments);
    }
    /* Empties the batch; the capacity stays. */
    void clear() noexcept {
        keys_.clear();
        values_.clear();
        segments_.clear();
        outcomes_.clear();
        found_.clear();
        leading_hits_ = 0;
    }

    /* Appends a key with an (as yet) empty value; add_segment() appends to it. Returns its index. */
    std::size_t add(Key k) {
        keys_.push_back(k);
        values_.push_back(Value{nullptr, 0});
        return keys_.size() - 1;
    }
    std::size_t add(const void *key_ptr, std::size_t key_len) { return add(key(key_ptr, key_len)); }
    std::size_t add(std::string_view k) { return add(key(k)); }
    std::size_t add(Key k, const Segment *segs, std::size_t n) {
        const std::size_t i = add(k);
        for (std::size_t j = 0; j < n; ++j) add_segment(segs[j]);
        return i;
    }
    std::size_t add(Key k, std::initializer_list<Segment> segs) { return add(k, segs.begin(), segs.size()); }
    std::size_t add(std::string_view k, std::initializer_list<Segment> segs) { return add(key(k), segs); }

    /* Appends a segment to the value of the last key added (there must be one). */
    void add_segment(Segment s) {
        assert(!values_.empty() && "Batch::add_segment before any add()");
        segments_.push_back(s);
        ++values_.back().count;
    }
    void add_segment(void *ptr, std::size_t len) { add_segment(segment(ptr, len)); }
    void add_segment(const void *ptr, std::size_t len) { add_segment(segment(ptr, len)); }

    std::size_t size() const noexcept { return keys_.size(); }
    bool empty() const noexcept { return keys_.empty(); }
    std::size_t segment_count() const noexcept { return segments_.size(); }

    /* After batch_set / batch_get: key i's outcome. After a call that failed as a whole, every
     * outcome reads Outcome::IoError (none is Ok). */
    Outcome outcome(std::size_t i) const noexcept { return outcomes_[i]; }
    const Outcome *outcomes() const noexcept { return outcomes_.data(); }
    /* How many keys of the last call had outcome `o`. */
    std::size_t count(Outcome o) const noexcept {
        std::size_t c = 0;
        for (Outcome x : outcomes_) c += x == o ? 1 : 0;
        return c;
    }
    bool all_ok() const noexcept { return outcomes_.size() == keys_.size() && count(Outcome::Ok) == keys_.size(); }

    /* After batch_exists: whether key i exists, and how many exist in a row from the first. */
    bool found(std::size_t i) const noexcept { return found_[i] != 0; }
    std::size_t leading_hits() const noexcept { return leading_hits_; }

    const Key *keys() const noexcept { return keys_.data(); }
    /* The values, their segment pointers fixed up (the segment array may have grown). */
    const Value *values() noexcept {
        fix_values();
        return values_.data();
    }

private:
    friend class Store;

    void fix_values() noexcept {
        const Segment *p = segments_.data();
        for (Value &v : values_) {
            v.segments = v.count > 0 ? p : nullptr;
            p += v.count;
        }
    }
    /* Outcomes sized for the call (no allocation once the capacity is there). */
    Outcome *prepare_outcomes() {
        outcomes_.resize(keys_.size(), Outcome::IoError);
        return outcomes_.data();
    }
    void settle(hicache_status s) noexcept {
        if (s == HICACHE_STATUS_OK)
            detail::settle(outcomes_.data(), outcomes_.size());
        else
            for (Outcome &o : outcomes_) o = Outcome::IoError;
    }

    std::vector<Key> keys_;
    std::vector<Value> values_;
    std::vector<Segment> segments_;
    std::vector<Outcome> outcomes_;
    std::vector<std::uint8_t> found_;
    std::size_t leading_hits_ = 0;
};

/* ---------------------------------------------------------------------------------------- */
/* Store                                                                                     */
/* ---------------------------------------------------------------------------------------- */

/* One open handle (move-only). All calls are const and thread-safe. A default-constructed or
 * moved-from Store holds no handle; calls on it fail with Status::InvalidArgument. */
class Store {
public:
    Store() noexcept = default;
    /* Adopts a handle from hicache_valkey_open (closed by the destructor). */
    explicit Store(hicache_valkey *handle) noexcept : handle_(handle) {}
    ~Store() { hicache_valkey_close(handle_); }

    Store(const Store &) = delete;
    Store &operator=(const Store &) = delete;
    Store(Store &&o) noexcept : handle_(std::exchange(o.handle_, nullptr)) {}
    Store &operator=(Store &&o) noexcept {
        if (this != &o) {
            hicache_valkey_close(handle_);
            handle_ = std::exchange(o.handle_, nullptr);
        }
        return *this;
    }

    /* Opens a handle with these options (unset fields: environment, else defaults). */
    static Result<Store> try_open(const Options &opts) {
        if (opts.init_status() != Status::Ok) return detail::fail<Store>(opts.init_status(), opts.init_message());
        return open_with(opts.c_options());
    }
    /* Opens a handle configured by the environment alone (VALKEY_URL, VALKEY_HOST, ...). */
    static Result<Store> try_open() { return open_with(nullptr); }

    bool is_open() const noexcept { return handle_ != nullptr; }
    explicit operator bool() const noexcept { return is_open(); }
    hicache_valkey *native_handle() const noexcept { return handle_; }
    /* Gives up ownership: the caller closes the returned handle. */
    hicache_valkey *release() noexcept { return std::exchange(handle_, nullptr); }
    /* Closes now (as the destructor would). Must not race with other calls on this Store. */
    void close() noexcept { hicache_valkey_close(std::exchange(handle_, nullptr)); }

    /* -- batches over caller arrays: keys[n], values[n], outcomes[n] -- */

    Result<> try_batch_set(const Key *keys, const Value *values, std::size_t n, Outcome *outcomes) const {
        const hicache_status s = hicache_valkey_batch_set(handle_, keys, values, n, detail::c_outcomes(outcomes));
        if (s == HICACHE_STATUS_OK) detail::settle(outcomes, n);
        return detail::result<void>(s);
    }
    Result<> try_batch_get(const Key *keys, const Value *values, std::size_t n, Outcome *outcomes) const {
        const hicache_status s = hicache_valkey_batch_get(handle_, keys, values, n, detail::c_outcomes(outcomes));
        if (s == HICACHE_STATUS_OK) detail::settle(outcomes, n);
        return detail::result<void>(s);
    }
    /* value: the leading hits; found (may be nullptr) receives 1 or 0 per key. */
    Result<std::size_t> try_batch_exists(const Key *keys, std::size_t n, std::uint8_t *found = nullptr) const {
        std::size_t leading = 0;
        const hicache_status s = hicache_valkey_batch_exists(handle_, keys, n, found, &leading);
        Result<std::size_t> r = detail::result<std::size_t>(s);
        r.value = leading;
        return r;
    }

    /* -- batches over a Batch -- */

    Result<> try_batch_set(Batch &b) const { return detail::result<void>(set_batch(b)); }
    Result<> try_batch_get(Batch &b) const { return detail::result<void>(get_batch(b)); }
    /* value: the leading hits (also in b.leading_hits()); b.found(i) per key. */
    Result<std::size_t> try_batch_exists(Batch &b) const {
        Result<std::size_t> r = detail::result<std::size_t>(exists_batch(b));
        r.value = b.leading_hits_;
        return r;
    }

#if HICACHE_VALKEY_HAS_SPAN
    /* -- std::span overloads (C++20); spans of different lengths: Status::InvalidArgument -- */

    Result<> try_batch_set(std::span<const Key> keys, std::span<const Value> values, std::span<Outcome> outcomes) const {
        if (keys.size() != values.size() || keys.size() != outcomes.size()) return mismatch<void>(keys.size(), values.size(), outcomes.size());
        return try_batch_set(keys.data(), values.data(), keys.size(), outcomes.data());
    }
    Result<> try_batch_get(std::span<const Key> keys, std::span<const Value> values, std::span<Outcome> outcomes) const {
        if (keys.size() != values.size() || keys.size() != outcomes.size()) return mismatch<void>(keys.size(), values.size(), outcomes.size());
        return try_batch_get(keys.data(), values.data(), keys.size(), outcomes.data());
    }
    /* found: empty (not wanted) or one flag per key. */
    Result<std::size_t> try_batch_exists(std::span<const Key> keys, std::span<std::uint8_t> found = {}) const {
        if (!found.empty() && found.size() != keys.size()) return flags_mismatch<std::size_t>(keys.size(), found.size());
        return try_batch_exists(keys.data(), keys.size(), found.empty() ? nullptr : found.data());
    }
#endif

    /* -- the rest of the API -- */

    Result<Stats> try_stats() const {
        hicache_stats s{};
        s.struct_size = static_cast<std::uint32_t>(sizeof s);
        const hicache_status st = hicache_valkey_stats(handle_, &s);
        Result<Stats> r = detail::result<Stats>(st);
        if (st == HICACHE_STATUS_OK) r.value = Stats::from(s);
        return r;
    }
    /* value: how many keys of this model were deleted. */
    Result<std::uint64_t> try_clear() const {
        std::uint64_t deleted = 0;
        Result<std::uint64_t> r = detail::result<std::uint64_t>(hicache_valkey_clear(handle_, &deleted));
        r.value = deleted;
        return r;
    }
    /* value: the round-trip time. */
    Result<std::chrono::microseconds> try_ping() const {
        std::uint64_t us = 0;
        Result<std::chrono::microseconds> r = detail::result<std::chrono::microseconds>(hicache_valkey_ping(handle_, &us));
        r.value = std::chrono::microseconds(static_cast<std::chrono::microseconds::rep>(us));
        return r;
    }

#if HICACHE_VALKEY_EXCEPTIONS
    /* -- the same calls, throwing hicache::Error when the call fails as a whole -- */

    static Store open(const Options &opts) { return detail::value_or_throw(try_open(opts)); }
    static Store open() { return detail::value_or_throw(try_open()); }

    /* These call the library directly and read the message only on failure, so they allocate
     * nothing on success, even when some keys failed (hicache::last_error() then names one). */
    void batch_set(const Key *keys, const Value *values, std::size_t n, Outcome *outcomes) const {
        check(hicache_valkey_batch_set(handle_, keys, values, n, detail::c_outcomes(outcomes)));
        detail::settle(outcomes, n);
    }
    void batch_get(const Key *keys, const Value *values, std::size_t n, Outcome *outcomes) const {
        check(hicache_valkey_batch_get(handle_, keys, values, n, detail::c_outcomes(outcomes)));
        detail::settle(outcomes, n);
    }
    /* Returns the leading hits. */
    std::size_t batch_exists(const Key *keys, std::size_t n, std::uint8_t *found = nullptr) const {
        std::size_t leading = 0;
        check(hicache_valkey_batch_exists(handle_, keys, n, found, &leading));
        return leading;
    }
    void batch_set(Batch &b) const { check(set_batch(b)); }
    void batch_get(Batch &b) const { check(get_batch(b)); }
    std::size_t batch_exists(Batch &b) const {
        check(exists_batch(b));
        return b.leading_hits_;
    }
#if HICACHE_VALKEY_HAS_SPAN
    void batch_set(std::span<const Key> keys, std::span<const Value> values, std::span<Outcome> outcomes) const {
        if (keys.size() != values.size() || keys.size() != outcomes.size()) detail::value_or_throw(mismatch<void>(keys.size(), values.size(), outcomes.size()));
        batch_set(keys.data(), values.data(), keys.size(), outcomes.data());
    }
    void batch_get(std::span<const Key> keys, std::span<const Value> values, std::span<Outcome> outcomes) const {
        if (keys.size() != values.size() || keys.size() != outcomes.size()) detail::value_or_throw(mismatch<void>(keys.size(), values.size(), outcomes.size()));
        batch_get(keys.data(), values.data(), keys.size(), outcomes.data());
    }
    std::size_t batch_exists(std::span<const Key> keys, std::span<std::uint8_t> found = {}) const {
        if (!found.empty() && found.size() != keys.size()) detail::value_or_throw(flags_mismatch<void>(keys.size(), found.size()));
        return batch_exists(keys.data(), keys.size(), found.empty() ? nullptr : found.data());
    }
#endif
    Stats stats() const { return detail::value_or_throw(try_stats()); }
    std::uint64_t clear() const { return detail::value_or_throw(try_clear()); }
    std::chrono::microseconds ping() const { return detail::value_or_throw(try_ping()); }
#endif

private:
    static Result<Store> open_with(const hicache_valkey_options *opts) {
        hicache_valkey *h = nullptr;
        const hicache_status s = hicache_valkey_open(opts, &h);
        Result<Store> r = detail::result<Store>(s);
        if (s == HICACHE_STATUS_OK) r.value = Store(h);
        return r;
    }
    /* A Batch's outcomes are all IoError after a call that failed as a whole. */
    hicache_status set_batch(Batch &b) const {
        const hicache_status s =
            hicache_valkey_batch_set(handle_, b.keys(), b.values(), b.size(), detail::c_outcomes(b.prepare_outcomes()));
        b.settle(s);
        return s;
    }
    hicache_status get_batch(Batch &b) const {
        const hicache_status s =
            hicache_valkey_batch_get(handle_, b.keys(), b.values(), b.size(), detail::c_outcomes(b.prepare_outcomes()));
        b.settle(s);
        return s;
    }
    hicache_status exists_batch(Batch &b) const {
        b.found_.resize(b.size(), 0);
        b.leading_hits_ = 0;
        const hicache_status s =
            hicache_valkey_batch_exists(handle_, b.keys(), b.size(), b.found_.data(), &b.leading_hits_);
        if (s != HICACHE_STATUS_OK) {
            for (std::uint8_t &f : b.found_) f = 0;
            b.leading_hits_ = 0;
        }
        return s;
    }
#if HICACHE_VALKEY_EXCEPTIONS
    static void check(hicache_status s) {
        if (s != HICACHE_STATUS_OK) throw Error(detail::status_of(s), last_error());
    }
#endif
#if HICACHE_VALKEY_HAS_SPAN
    template <class T> static Result<T> mismatch(std::size_t keys, std::size_t values, std::size_t outcomes) {
        return detail::fail<T>(Status::InvalidArgument, "spans of different lengths: " + std::to_string(keys) +
                                                            " keys, " + std::to_string(values) + " values, " +
                                                            std::to_string(outcomes) + " outcomes");
    }
    template <class T> static Result<T> flags_mismatch(std::size_t keys, std::size_t found) {
        return detail::fail<T>(Status::InvalidArgument, "spans of different lengths: " + std::to_string(keys) +
                                                            " keys, " + std::to_string(found) + " found flags");
    }
#endif

    hicache_valkey *handle_ = nullptr;
};

} // namespace hicache

#endif /* HICACHE_VALKEY_HPP */
