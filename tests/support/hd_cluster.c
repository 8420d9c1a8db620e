/* hd_cluster.c — see hd_cluster.h. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "hd_cluster.h"
#include "hd_test.h"
#include "herald/clock.h"

const char *hd_cluster_urls(void)
{
    return hd_test_require_env("HD_CLUSTER_URLS");
}

const char *hd_cluster_url(int node)
{
    assert_true(node >= 1 && node <= HD_CLUSTER_SIZE);
    char name[32];
    snprintf(name, sizeof name, "HD_CLUSTER_URL_%d", node);
    return hd_test_require_env(name);
}

char *hd_cluster_urls_from(int first)
{
    size_t cap = 4096, used = 0;
    char *s = malloc(cap);
    assert_non_null(s);
    s[0] = '\0';
    for (int k = 0; k < HD_CLUSTER_SIZE; k++) {
        int node = (first - 1 + k) % HD_CLUSTER_SIZE + 1;
        int n = snprintf(s + used, cap - used, "%s%s", k ? "," : "", hd_cluster_url(node));
        assert_true(n > 0 && (size_t)n < cap - used);
        used += (size_t)n;
    }
    return s;
}

void hd_cluster_node(const char *verb, int node)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' %s rabbit%d >/dev/null 2>&1",
             hd_test_require_env("HD_SERVERS_CTL"), verb, node);
    int rc = system(cmd);
    if (rc != 0)
        fprintf(stderr, "hd_cluster: '%s rabbit%d' failed (%d)\n", verb, node, rc);
    assert_int_equal(rc, 0);
}

void hd_cluster_all_up(void)
{
    char cmd[1024];
    /* `start cluster` is idempotent: running nodes say "already running". */
    snprintf(cmd, sizeof cmd, "'%s' start cluster >/dev/null 2>&1",
             hd_test_require_env("HD_SERVERS_CTL"));
    assert_int_equal(system(cmd), 0);
}

int hd_cluster_leader(const char *queue)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "'%s' cluster-ctl list_queues --formatter json name leader 2>/dev/null </dev/null",
             hd_test_require_env("HD_SERVERS_CTL"));
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    json_error_t jerr;
    json_t *all = json_loadf(p, 0, &jerr);
    pclose(p);
    int node = 0;
    size_t i;
    json_t *q;
    json_array_foreach(all, i, q)
    {
        const char *name = json_string_value(json_object_get(q, "name"));
        const char *leader = json_string_value(json_object_get(q, "leader"));
        if (name && leader && strcmp(name, queue) == 0 && strncmp(leader, "herald", 6) == 0)
            node = atoi(leader + 6); /* "herald2@localhost" */
    }
    json_decref(all);
    return node >= 1 && node <= HD_CLUSTER_SIZE ? node : 0;
}

int hd_cluster_wait_leader(const char *queue, int not_node, int timeout_ms)
{
    int64_t end = hd_clock_ms() + timeout_ms;
    do {
        int node = hd_cluster_leader(queue);
        if (node != 0 && node != not_node)
            return node;
        hd_sleep_ms(200);
    } while (hd_clock_ms() < end);
    return 0;
}
