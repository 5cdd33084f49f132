// test_cxx: the header from C++17 (included twice: the include guard and extern "C" work),
// with the handle in a std::unique_ptr and pages in std::vector.
#include "hicache_valkey.h"
#include "hicache_valkey.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <unistd.h>
#include <vector>

static_assert(sizeof(void *) != 8 || sizeof(hicache_key) == 16, "hicache_key is 16 bytes");
static_assert(sizeof(void *) != 8 || sizeof(hicache_segment) == 16, "hicache_segment is 16 bytes");
static_assert(sizeof(void *) != 8 || sizeof(hicache_value) == 16, "hicache_value is 16 bytes");
static_assert(sizeof(void *) != 8 || sizeof(hicache_valkey_options) == 160, "options are 160 bytes");
static_assert(sizeof(void *) != 8 || sizeof(hicache_stats) == 360, "stats are 360 bytes");
static_assert(std::is_standard_layout<hicache_valkey_options>::value, "a C struct");
static_assert(std::is_trivially_copyable<hicache_stats>::value, "a C struct");
static_assert(HICACHE_VALKEY_VERSION_NUMBER ==
                  HICACHE_VALKEY_VERSION_MAJOR * 10000 + HICACHE_VALKEY_VERSION_MINOR * 100 + HICACHE_VALKEY_VERSION_PATCH,
              "version number");
static_assert(std::is_same<decltype(&hicache_valkey_close), void (*)(hicache_valkey *)>::value, "C signature");

namespace {

int checks = 0;

void check(bool ok, const char *what, int line) {
    if (!ok) {
        char msg[256];
        hicache_valkey_last_error(msg, sizeof msg);
        std::fprintf(stderr, "FAIL test_cxx.cpp:%d: %s (last error: \"%s\")\n", line, what, msg);
        std::exit(1);
    }
    ++checks;
}
#define CHECK(x) check((x), #x, __LINE__)

std::string last_error() {
    std::string s(hicache_valkey_last_error(nullptr, 0), '\0');
    hicache_valkey_last_error(&s[0], s.size() + 1); // C++11 strings keep room for the NUL
    return s;
}

struct closer {
    void operator()(hicache_valkey *h) const noexcept { hicache_valkey_close(h); }
};
using handle_ptr = std::unique_ptr<hicache_valkey, closer>;

handle_ptr open(const std::string &model) {
    hicache_valkey_options o;
    CHECK(HICACHE_VALKEY_OPTIONS_INIT(&o) == HICACHE_STATUS_OK);
    o.model_name = model.c_str();
    o.value_format = 0xC0FFEEu;
    hicache_valkey *h = nullptr;
    hicache_status st = hicache_valkey_open(&o, &h);
    CHECK(st == HICACHE_STATUS_OK && h != nullptr);
    return handle_ptr(h);
}

} // namespace

int main() {
    if (std::getenv("VALKEY_PORT") == nullptr) {
        std::fprintf(stderr, "VALKEY_PORT is not set: run the tests under scripts/with-valkey.sh\n");
        return 1;
    }
    CHECK(std::string(hicache_valkey_version()) == std::to_string(HICACHE_VALKEY_VERSION_MAJOR) + "." +
                                                       std::to_string(HICACHE_VALKEY_VERSION_MINOR) + "." +
                                                       std::to_string(HICACHE_VALKEY_VERSION_PATCH));
    CHECK(std::string(hicache_valkey_status_str(HICACHE_STATUS_TIMEOUT)) == "HICACHE_STATUS_TIMEOUT");
    CHECK(std::string(hicache_valkey_outcome_str(HICACHE_OUTCOME_FOREIGN)) == "HICACHE_OUTCOME_FOREIGN");
    CHECK(hicache_valkey_options_init(nullptr, sizeof(hicache_valkey_options)) == HICACHE_STATUS_INVALID_ARGUMENT);
    CHECK(last_error() == "opts is NULL");

    const std::string model = "ctest-cxx-" + std::to_string(static_cast<long>(getpid()));
    handle_ptr h = open(model);

    // Two pages, each a K half and a V half.
    const std::size_t half = 4096;
    std::vector<std::vector<std::uint8_t>> k(2, std::vector<std::uint8_t>(half)), v = k;
    for (std::size_t p = 0; p < 2; ++p)
        for (std::size_t i = 0; i < half; ++i) {
            k[p][i] = static_cast<std::uint8_t>(i * 7 + p);
            v[p][i] = static_cast<std::uint8_t>(i * 13 + p + 1);
        }
    const std::string names[2] = {"cxx-page-0", "cxx-page-1"};
    hicache_key keys[2];
    hicache_segment segs[2][2];
    hicache_value values[2];
    for (std::size_t p = 0; p < 2; ++p) {
        keys[p] = hicache_key{reinterpret_cast<const std::uint8_t *>(names[p].data()), names[p].size()};
        segs[p][0] = hicache_segment{k[p].data(), half};
        segs[p][1] = hicache_segment{v[p].data(), half};
        values[p] = hicache_value{segs[p], 2};
    }
    std::int32_t outcomes[2] = {-1, -1};
    CHECK(hicache_valkey_batch_set(h.get(), keys, values, 2, outcomes) == HICACHE_STATUS_OK);
    CHECK(outcomes[0] == HICACHE_OUTCOME_OK && outcomes[1] == HICACHE_OUTCOME_OK);

    // Read into one contiguous buffer per page: the same bytes, K then V.
    std::vector<std::uint8_t> back(2 * half * 2, 0);
    hicache_segment rsegs[2] = {{back.data(), 2 * half}, {back.data() + 2 * half, 2 * half}};
    hicache_value rvals[2] = {{&rsegs[0], 1}, {&rsegs[1], 1}};
    CHECK(hicache_valkey_batch_get(h.get(), keys, rvals, 2, outcomes) == HICACHE_STATUS_OK);
    CHECK(outcomes[0] == HICACHE_OUTCOME_OK && outcomes[1] == HICACHE_OUTCOME_OK);
    for (std::size_t p = 0; p < 2; ++p) {
        CHECK(std::memcmp(back.data() + p * 2 * half, k[p].data(), half) == 0);
        CHECK(std::memcmp(back.data() + p * 2 * half + half, v[p].data(), half) == 0);
    }

    std::uint8_t found[2] = {0, 0};
    std::size_t lead = 0;
    CHECK(hicache_valkey_batch_exists(h.get(), keys, 2, found, &lead) == HICACHE_STATUS_OK);
    CHECK(lead == 2 && found[0] == 1 && found[1] == 1);
    std::uint64_t rtt = 0;
    CHECK(hicache_valkey_ping(h.get(), &rtt) == HICACHE_STATUS_OK);

    hicache_stats s{};
    s.struct_size = sizeof s;
    CHECK(hicache_valkey_stats(h.get(), &s) == HICACHE_STATUS_OK);
    CHECK(s.model_keys == 2 && s.pages_written == 2 && s.get_hits == 2);
    CHECK(std::strlen(s.used_memory_human) > 0);

    std::uint64_t deleted = 0;
    CHECK(hicache_valkey_clear(h.get(), &deleted) == HICACHE_STATUS_OK);
    CHECK(deleted == 2);
    CHECK(hicache_valkey_batch_get(nullptr, keys, rvals, 2, outcomes) == HICACHE_STATUS_INVALID_ARGUMENT);
    CHECK(!last_error().empty());
    h.reset();
    std::printf("test_cxx: %d checks passed\n", checks);
    return 0;
}
