// hv_test.hpp - helpers shared by the C++ tests of hicache_valkey.hpp (header only).
//
// A failed check prints where and why (with this thread's last error message) and exits with
// status 1; hv_done() prints how many checks passed. Works with and without exceptions.
#ifndef HV_TEST_HPP
#define HV_TEST_HPP

#include "hicache_valkey.hpp"

#include <arpa/inet.h>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <netinet/in.h>
#include <string>
#include <sys/socket.h>
#include <unistd.h>

namespace hv {

inline std::atomic<long> &checks() {
    static std::atomic<long> n{0};
    return n;
}

[[noreturn]] inline void fail(const char *file, int line, const char *what, const std::string &detail = {}) {
    std::fprintf(stderr, "FAIL %s:%d: %s%s%s (last error: \"%s\")\n", file, line, what, detail.empty() ? "" : ": ",
                 detail.c_str(), hicache::last_error().c_str());
    std::fflush(stderr);
    std::exit(1);
}

inline int done(const char *name) {
    std::printf("%s: %ld checks passed\n", name, checks().load());
    return 0;
}

// "ctest-<tag>-<pid>": a model name of this process alone (tests share one server).
inline std::string model(const char *tag) { return std::string("ctest-") + tag + "-" + std::to_string(static_cast<long>(getpid())); }

// A loopback port that refuses connections at once: bound (nobody else takes it), not listening.
// Returns the port; the caller closes *fd afterwards.
inline int refused_port(int *fd) {
    sockaddr_in a{};
    socklen_t len = sizeof a;
    *fd = socket(AF_INET, SOCK_STREAM, 0);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    if (*fd < 0 || bind(*fd, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0 ||
        getsockname(*fd, reinterpret_cast<sockaddr *>(&a), &len) != 0) {
        std::fprintf(stderr, "cannot bind a loopback port\n");
        std::exit(1);
    }
    return ntohs(a.sin_port);
}

// The byte at offset i of a page made from `seed` (what fill() writes).
inline std::uint8_t pattern(std::uint64_t seed, std::size_t i) {
    std::uint64_t x = seed * 0x9E3779B97F4A7C15ull + i * 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    return static_cast<std::uint8_t>(x ^ (x >> 17));
}
inline void fill(void *p, std::size_t n, std::uint64_t seed, std::size_t first = 0) {
    auto *b = static_cast<std::uint8_t *>(p);
    for (std::size_t i = 0; i < n; ++i) b[i] = pattern(seed, first + i);
}
inline bool holds(const void *p, std::size_t n, std::uint64_t seed, std::size_t first = 0) {
    const auto *b = static_cast<const std::uint8_t *>(p);
    for (std::size_t i = 0; i < n; ++i)
        if (b[i] != pattern(seed, first + i)) return false;
    return true;
}

inline void require_server() {
    if (std::getenv("VALKEY_PORT") == nullptr) {
        std::fprintf(stderr, "VALKEY_PORT is not set: run the tests under scripts/with-valkey.sh\n");
        std::exit(1);
    }
}

} // namespace hv

#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        if (!(cond)) hv::fail(__FILE__, __LINE__, #cond);                                                              \
        ++hv::checks();                                                                                                \
    } while (0)

// A Result that must be ok.
#define CHECK_OK(expr)                                                                                                 \
    do {                                                                                                               \
        const auto &hv_r_ = (expr);                                                                                    \
        if (!hv_r_.ok())                                                                                               \
            hv::fail(__FILE__, __LINE__, #expr,                                                                        \
                     std::string(hicache::to_string(hv_r_.status)) + ": " + hv_r_.message);                            \
        ++hv::checks();                                                                                                \
    } while (0)

// A Result that must have failed with `want` and carry a non-empty message.
#define CHECK_FAILS(expr, want)                                                                                        \
    do {                                                                                                               \
        const auto &hv_r_ = (expr);                                                                                    \
        if (hv_r_.status != (want) || hv_r_.message.empty())                                                           \
            hv::fail(__FILE__, __LINE__, #expr,                                                                        \
                     std::string("got ") + hicache::to_string(hv_r_.status) + " \"" + hv_r_.message +                  \
                         "\", expected " + hicache::to_string(want));                                                  \
        ++hv::checks();                                                                                                \
    } while (0)

#if HICACHE_VALKEY_EXCEPTIONS
// `stmt` must throw hicache::Error with status `want` and a message; `err` names it in `then`.
#define CHECK_THROWS(stmt, want, then)                                                                                 \
    do {                                                                                                               \
        bool hv_thrown_ = false;                                                                                       \
        try {                                                                                                          \
            stmt;                                                                                                      \
        } catch (const hicache::Error &err) {                                                                          \
            hv_thrown_ = true;                                                                                         \
            if (err.status() != (want) || err.message()[0] == '\0')                                                    \
                hv::fail(__FILE__, __LINE__, #stmt, std::string("threw ") + err.what());                               \
            then;                                                                                                      \
        }                                                                                                              \
        if (!hv_thrown_) hv::fail(__FILE__, __LINE__, #stmt, "did not throw");                                         \
        ++hv::checks();                                                                                                \
    } while (0)
#endif

#endif // HV_TEST_HPP
