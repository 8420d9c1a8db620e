/* A student's own program, built against an *installed* herald (not the source tree), that
 * only wants the patterns: it appends an event to the transactional outbox of an SQLite
 * store and counts what waits there. tests/integration/test_install.sh builds it twice,
 * once with pkg-config and once with CMake's find_package(herald), checks what it prints,
 * and checks that it links neither libmicrohttpd nor libcurl (herald-service's). */
#include <herald/herald.h>
#include <stdio.h>

int main(void)
{
    char id[HD_UUID_LEN + 1];
    hd_uuid_v4(id);
    printf("uuid valid: %d\n", hd_uuid_valid(id));
    printf("error name: %s (%s)\n", hd_err_name(HD_EJSON), hd_strerror(HD_EJSON));

    hd_error err;
    hd_error_clear(&err);
    hd_store *store = NULL;
    int64_t pending = -1;
    hd_envelope *env = hd_envelope_new("order.completed", 1, "/install-consumer",
                                       json_pack("{s:s}", "order_id", "1001"));
    int rc = env ? hd_store_open("sqlite::memory:", &store, &err) : HD_ENOMEM;
    if (rc == 0 && (rc = hd_outbox_migrate(store, &err)) > 0)
        rc = 0; /* the number of migration steps applied */
    if (rc == 0)
        rc = hd_store_begin(store, &err);
    if (rc == 0) {
        rc = hd_outbox_append(store, env, "order", "1001", &err);
        if (rc == 0)
            rc = hd_store_commit(store, &err);
        else
            hd_store_rollback(store, NULL);
    }
    if (rc == 0)
        rc = hd_outbox_depth(store, &pending, NULL, NULL, &err);
    if (rc == 0)
        printf("outbox pending: %lld\n", (long long)pending);
    else
        printf("outbox failed: %s (%s)\n", hd_err_name(rc), err.text);
    hd_store_close(store);
    hd_envelope_free(env);
    return hd_uuid_valid(id) && rc == 0 && pending == 1 ? 0 : 1;
}
