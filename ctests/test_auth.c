/*
 * test_auth: against a server started with --requirepass s3cret (ctest runs this test as
 * `scripts/with-valkey.sh --requirepass s3cret -- test_auth`): no password or a wrong one is
 * HICACHE_STATUS_AUTH with a message that does not leak the password; the right one, given as a
 * field, in a URL or in VALKEY_PASSWORD, works.
 */
#include "hv_test.h"

#define PASSWORD "s3cret"

static void open_auth_fails(const hicache_valkey_options *o, const char *what, const char *secret) {
    hicache_valkey *h = (hicache_valkey *)(uintptr_t)0x10;
    int32_t st = hicache_valkey_open(o, &h);
    const char *msg = hv_last_error_str();
    CHECKF(st == HICACHE_STATUS_AUTH, "open with %s: %s, expected HICACHE_STATUS_AUTH (last error \"%s\")", what,
           hicache_valkey_status_str(st), msg);
    CHECKF(msg[0] != '\0', "open with %s: no message", what);
    CHECKF(h == NULL, "open with %s failed but *out is not NULL", what);
    CHECKF(secret == NULL || strstr(msg, secret) == NULL, "the message shows the password: \"%s\"", msg);
    CHECKF(strstr(msg, PASSWORD) == NULL, "the message shows the password: \"%s\"", msg);
    printf("  %s -> %s: %s\n", what, hicache_valkey_status_str(st), msg);
}

static void use(hicache_valkey *h) {
    const size_t sizes[3] = {10, 20, 30};
    hv_page w, r;
    hv_page_alloc(&w, 3, sizes);
    hv_page_alloc(&r, 3, sizes);
    hv_page_fill(&w, 77);
    hicache_key k = hv_key("auth-page");
    hicache_value wv = hv_page_value(&w), rv = hv_page_value(&r);
    int32_t out = -1;
    CHECK_OK(hicache_valkey_ping(h, NULL));
    CHECK_OK(hicache_valkey_batch_set(h, &k, &wv, 1, &out));
    CHECK(out == HICACHE_OUTCOME_OK);
    CHECK_OK(hicache_valkey_batch_get(h, &k, &rv, 1, &out));
    CHECK(out == HICACHE_OUTCOME_OK && hv_page_holds(&r, 77));
    hv_page_free(&w);
    hv_page_free(&r);
    hicache_valkey_close(h);
}

int main(void) {
    char model[64], url[160];
    hicache_valkey_options o;
    const int port = hv_port();
    const char *host = hv_host();

    hv_model(model, sizeof model, "auth");
    CHECK(unsetenv("VALKEY_PASSWORD") == 0 && unsetenv("VALKEY_USERNAME") == 0 && unsetenv("VALKEY_URL") == 0);
    CHECK(setenv("HICACHE_VALKEY_MODEL", model, 1) == 0);

    /* Refused. */
    open_auth_fails(NULL, "no password (NULL options)", NULL);
    hv_options(&o, model);
    open_auth_fails(&o, "no password", NULL);
    o.password = "wrong-pass";
    open_auth_fails(&o, "a wrong password", "wrong-pass");
    o.password = PASSWORD;
    o.username = "nobody";
    open_auth_fails(&o, "the right password for an unknown user", NULL);
    hv_options(&o, model);
    snprintf(url, sizeof url, "valkey://:wrong-pass@%s:%d", host, port);
    o.url = url;
    open_auth_fails(&o, "a wrong password in the URL", "wrong-pass");
    CHECK(setenv("VALKEY_PASSWORD", "wrong-pass", 1) == 0);
    open_auth_fails(NULL, "a wrong VALKEY_PASSWORD", "wrong-pass");
    hv_options(&o, model);
    o.password = "wrong-pass";
    CHECK(setenv("VALKEY_PASSWORD", PASSWORD, 1) == 0);
    open_auth_fails(&o, "a wrong password option over the right VALKEY_PASSWORD", "wrong-pass");

    /* Accepted: VALKEY_PASSWORD, the option (over a wrong VALKEY_PASSWORD), user "default", URL. */
    hicache_valkey *h = NULL;
    CHECK_OK(hicache_valkey_open(NULL, &h));
    use(h);
    CHECK(setenv("VALKEY_PASSWORD", "wrong-pass", 1) == 0);
    hv_options(&o, model);
    o.password = PASSWORD;
    use(hv_open_opts(&o));
    CHECK(unsetenv("VALKEY_PASSWORD") == 0);
    o.username = "default";
    use(hv_open_opts(&o));
    hv_options(&o, model);
    snprintf(url, sizeof url, "valkey://default:%s@%s:%d/0", PASSWORD, host, port);
    o.url = url;
    h = hv_open_opts(&o);
    uint64_t deleted = 0;
    CHECK_OK(hicache_valkey_clear(h, &deleted));
    CHECK(deleted == 1);
    hicache_valkey_close(h);
    return hv_done("test_auth");
}
