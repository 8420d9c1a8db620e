/* topology.c — herald-admin topology (see admin.h): the exchanges, queues (type and
 * arguments) and bindings of the example system, as a table, Graphviz (--dot) or JSON.
 *
 * Nothing here describes the topology: it comes from notif_topology_make
 * (notifications/topology.h), the description herald-notifications declares at start-up, so
 * what this prints is what the services declare. No broker is needed: it shows what WOULD
 * be declared with the current settings (HD_USERS_EXCHANGE, HD_NOTIFICATIONS_QUEUE), not
 * what a broker holds. docs/topology.dot is this command's --dot with the default settings
 * (make topology; unit.admin_topology checks it). */
#include <inttypes.h>
#include <string.h>

#include <jansson.h>

#include "admin/admin.h"
#include "herald/topology.h"
#include "notifications/topology.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: herald-admin [--json] topology [--dot | --json]\n"
                 "\n"
                 "The example system's exchanges, queues (type, flags, arguments) and bindings,\n"
                 "from the description herald-notifications declares (no broker needed).\n"
                 "  --dot    Graphviz (make topology renders docs/topology.svg from it)\n"
                 "  --json   one JSON document\n"
                 "Settings: HD_USERS_EXCHANGE (default " NOTIF_TOPOLOGY_USERS_EXCHANGE
                 "), HD_NOTIFICATIONS_QUEUE (default " NOTIF_TOPOLOGY_QUEUE
                 "), HD_QUEUE_TYPE (classic or quorum, default classic), HD_DELIVERY_LIMIT "
                 "(quorum, default 20).\n");
}

static const char *queue_type(hd_queue_type t)
{
    return t == HD_QUEUE_QUORUM ? "quorum" : "classic";
}

/* The x-arguments the declare sends (hd_queue_args_init builds them), as "k=v k=v". */
static void format_args(const hd_queue_spec *q, char *buf, size_t cap)
{
    hd_queue_args args;
    hd_error err;
    buf[0] = '\0';
    if (hd_queue_args_init(&args, q, &err) < 0) {
        snprintf(buf, cap, "(invalid: %s)", err.text);
        return;
    }
    size_t used = 0;
    for (int i = 0; i < args.table.num_entries && used < cap; i++) {
        const amqp_table_entry_t *e = &args.table.entries[i];
        int n;
        if (e->value.kind == AMQP_FIELD_KIND_UTF8)
            n = snprintf(buf + used, cap - used, "%s%.*s=\"%.*s\"", used ? " " : "",
                         (int)e->key.len, (const char *)e->key.bytes, (int)e->value.value.bytes.len,
                         (const char *)e->value.value.bytes.bytes);
        else
            n = snprintf(buf + used, cap - used, "%s%.*s=%" PRId64, used ? " " : "",
                         (int)e->key.len, (const char *)e->key.bytes, e->value.value.i64);
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

static json_t *args_json(const hd_queue_spec *q)
{
    json_t *o = json_object();
    hd_queue_args args;
    hd_error err;
    if (hd_queue_args_init(&args, q, &err) < 0)
        return o;
    for (int i = 0; i < args.table.num_entries; i++) {
        const amqp_table_entry_t *e = &args.table.entries[i];
        char key[HD_AMQP_NAME_MAX + 1];
        snprintf(key, sizeof key, "%.*s", (int)e->key.len, (const char *)e->key.bytes);
        json_t *v =
            e->value.kind == AMQP_FIELD_KIND_UTF8
                ? json_stringn((const char *)e->value.value.bytes.bytes, e->value.value.bytes.len)
                : json_integer(e->value.value.i64);
        json_object_set_new(o, key, v);
    }
    return o;
}

static void flags(char *buf, size_t cap, int durable, int auto_delete, int exclusive_or_internal,
                  const char *last)
{
    snprintf(buf, cap, "%s%s%s%s", durable ? "durable" : "transient",
             auto_delete ? ",auto-delete" : "", exclusive_or_internal ? "," : "",
             exclusive_or_internal ? last : "");
}

static int print_text(const notif_topology *t, FILE *out)
{
    const hd_topology *a = &t->all;
    char f[64], args[1024];
    fprintf(out, "exchanges (%zu)\n", a->n_exchanges);
    fprintf(out, "  %-34s %-7s %-10s %s\n", "NAME", "TYPE", "FLAGS", "DECLARED BY");
    for (size_t i = 0; i < a->n_exchanges; i++) {
        const hd_exchange_spec *e = &a->exchanges[i];
        flags(f, sizeof f, e->durable, e->auto_delete, e->internal, "internal");
        fprintf(out, "  %-34s %-7s %-10s %s\n", e->name, hd_exchange_type_name(e->type), f,
                t->exchange_by[i]);
    }
    fprintf(out, "\nqueues (%zu)\n", a->n_queues);
    fprintf(out, "  %-34s %-7s %-10s %s\n", "NAME", "TYPE", "FLAGS", "ARGUMENTS");
    for (size_t i = 0; i < a->n_queues; i++) {
        const hd_queue_spec *q = &a->queues[i];
        flags(f, sizeof f, q->durable, q->auto_delete, q->exclusive, "exclusive");
        format_args(q, args, sizeof args);
        fprintf(out, "  %-34s %-7s %-10s %s\n", q->name, queue_type(q->type), f,
                args[0] ? args : "-");
    }
    fprintf(out, "\nbindings (%zu)\n", a->n_bindings);
    fprintf(out, "  %-34s %-34s %s\n", "EXCHANGE", "QUEUE", "KEY");
    for (size_t i = 0; i < a->n_bindings; i++) {
        const hd_binding_spec *b = &a->bindings[i];
        fprintf(out, "  %-34s %-34s %s\n", b->exchange, b->queue, b->key ? b->key : "");
    }
    fprintf(out, "\npublishers\n");
    for (size_t i = 0; i < t->n_publishers; i++)
        fprintf(out, "  %-34s -> exchange %-26s %s\n", t->publishers[i].program,
                t->publishers[i].name, t->publishers[i].what);
    if (t->n_consumers > 0)
        fprintf(out, "  %-34s -> queue    %-26s %s\n", t->consumers[0].program, t->retry.n.dlq,
                "dead-letters after the last attempt (default exchange)");
    fprintf(out, "consumers\n");
    for (size_t i = 0; i < t->n_consumers; i++)
        fprintf(out, "  %-34s <- queue    %s\n", t->consumers[i].program, t->consumers[i].name);
    return ADMIN_OK;
}

static int print_json(const notif_topology *t, FILE *out)
{
    const hd_topology *a = &t->all;
    json_t *ex = json_array(), *qs = json_array(), *bs = json_array();
    json_t *pubs = json_array(), *cons = json_array();
    for (size_t i = 0; i < a->n_exchanges; i++) {
        const hd_exchange_spec *e = &a->exchanges[i];
        json_array_append_new(ex, json_pack("{s:s, s:s, s:b, s:b, s:b, s:s}", "name", e->name,
                                            "type", hd_exchange_type_name(e->type), "durable",
                                            e->durable, "auto_delete", e->auto_delete, "internal",
                                            e->internal, "declared_by", t->exchange_by[i]));
    }
    for (size_t i = 0; i < a->n_queues; i++) {
        const hd_queue_spec *q = &a->queues[i];
        json_array_append_new(qs,
                              json_pack("{s:s, s:s, s:b, s:b, s:b, s:o, s:s}", "name", q->name,
                                        "type", queue_type(q->type), "durable", q->durable,
                                        "exclusive", q->exclusive, "auto_delete", q->auto_delete,
                                        "arguments", args_json(q), "declared_by", t->queue_by[i]));
    }
    for (size_t i = 0; i < a->n_bindings; i++) {
        const hd_binding_spec *b = &a->bindings[i];
        json_array_append_new(bs, json_pack("{s:s, s:s, s:s}", "exchange", b->exchange, "queue",
                                            b->queue, "key", b->key ? b->key : ""));
    }
    for (size_t i = 0; i < t->n_publishers; i++)
        json_array_append_new(pubs, json_pack("{s:s, s:s}", "program", t->publishers[i].program,
                                              "exchange", t->publishers[i].name));
    json_array_append_new(pubs,
                          json_pack("{s:s, s:s, s:s}", "program", "herald-notifications (consumer)",
                                    "exchange", "", "routing_key", t->retry.n.dlq));
    for (size_t i = 0; i < t->n_consumers; i++)
        json_array_append_new(cons, json_pack("{s:s, s:s}", "program", t->consumers[i].program,
                                              "queue", t->consumers[i].name));
    json_t *doc = json_pack("{s:o, s:o, s:o, s:o, s:o}", "exchanges", ex, "queues", qs, "bindings",
                            bs, "publishers", pubs, "consumers", cons);
    if (doc == NULL)
        return ADMIN_FAILED;
    int rc = json_dumpf(doc, out, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    fputc('\n', out);
    json_decref(doc);
    return rc == 0 ? ADMIN_OK : ADMIN_FAILED;
}

/* Graphviz: programs are ellipses, exchanges boxes, queues cylinders; solid edges are
 * publishes, bindings (labelled with their keys) and consumes; dashed ones are the broker's
 * dead-lettering and the consumer's dead letters. Names are quoted as they are (AMQP names
 * used here contain no '"'). */
static int print_dot(const notif_topology *t, FILE *out)
{
    const hd_topology *a = &t->all;
    char args[1024];
    fprintf(out, "// The example system's RabbitMQ topology. Generated by `herald-admin topology "
                 "--dot`\n// (make topology); do not edit: unit.admin_topology "
                 "(tests/unit/test_admin_topology.c) fails when it differs.\n");
    fprintf(out, "digraph herald_topology {\n  rankdir=LR;\n  node [fontname=\"Helvetica\", "
                 "fontsize=11];\n  edge [fontname=\"Helvetica\", fontsize=9];\n\n");
    fprintf(out, "  // programs\n");
    /* A node statement twice is harmless to Graphviz, but the file is read by people too. */
    for (size_t i = 0; i < t->n_publishers + t->n_consumers; i++) {
        const char *p = i < t->n_publishers ? t->publishers[i].program
                                            : t->consumers[i - t->n_publishers].program;
        int seen = 0;
        for (size_t k = 0; k < i && k < t->n_publishers; k++)
            seen |= strcmp(t->publishers[k].program, p) == 0;
        if (!seen)
            fprintf(out, "  \"%s\" [shape=ellipse, style=filled, fillcolor=\"#fff2cc\"];\n", p);
    }
    fprintf(out, "\n  // exchanges\n");
    for (size_t i = 0; i < a->n_exchanges; i++)
        fprintf(out,
                "  \"x:%s\" [shape=box, style=filled, fillcolor=\"#dae8fc\", "
                "label=\"%s\\n(%s exchange)\"];\n",
                a->exchanges[i].name, a->exchanges[i].name,
                hd_exchange_type_name(a->exchanges[i].type));
    fprintf(out, "\n  // queues\n");
    for (size_t i = 0; i < a->n_queues; i++) {
        const hd_queue_spec *q = &a->queues[i];
        format_args(q, args, sizeof args);
        /* The arguments one per line; their quotes would end the label. */
        fprintf(out,
                "  \"q:%s\" [shape=cylinder, style=filled, fillcolor=\"#d5e8d4\", "
                "label=\"%s\\n(%s queue)",
                q->name, q->name, queue_type(q->type));
        if (args[0] != '\0')
            fputs("\\n", out);
        for (const char *c = args; *c; c++) {
            if (*c == ' ')
                fputs("\\n", out);
            else if (*c == '"')
                fputs("\\\"", out);
            else
                fputc(*c, out);
        }
        fputs("\"];\n", out);
    }
    fprintf(out, "\n  // publishes\n");
    for (size_t i = 0; i < t->n_publishers; i++)
        fprintf(out, "  \"%s\" -> \"x:%s\" [label=\"%s\"];\n", t->publishers[i].program,
                t->publishers[i].name, t->publishers[i].what);
    fprintf(out, "\n  // bindings (one edge per exchange and queue, one key a line)\n");
    for (size_t i = 0; i < a->n_bindings; i++) {
        const hd_binding_spec *b = &a->bindings[i];
        int first = 1;
        for (size_t k = 0; k < i; k++)
            first &= !(strcmp(a->bindings[k].exchange, b->exchange) == 0 &&
                       strcmp(a->bindings[k].queue, b->queue) == 0);
        if (!first)
            continue;
        fprintf(out, "  \"x:%s\" -> \"q:%s\" [label=\"", b->exchange, b->queue);
        const char *sep = "";
        for (size_t k = i; k < a->n_bindings; k++)
            if (strcmp(a->bindings[k].exchange, b->exchange) == 0 &&
                strcmp(a->bindings[k].queue, b->queue) == 0) {
                fprintf(out, "%s%s", sep, a->bindings[k].key ? a->bindings[k].key : "");
                sep = "\\n";
            }
        fputs("\"];\n", out);
    }
    fprintf(out, "\n  // consumes\n");
    for (size_t i = 0; i < t->n_consumers; i++)
        fprintf(out, "  \"q:%s\" -> \"%s\" [label=\"%s\"];\n", t->consumers[i].name,
                t->consumers[i].program, t->consumers[i].what);
    fprintf(out, "\n  // dead-lettering\n");
    for (size_t i = 0; i < a->n_queues; i++) {
        const hd_queue_spec *q = &a->queues[i];
        if (q->dead_letter_exchange == NULL)
            continue;
        if (q->dead_letter_exchange[0] == '\0' && q->dead_letter_routing_key != NULL)
            fprintf(out, "  \"q:%s\" -> \"q:%s\" [style=dashed, label=\"expired (TTL)\"];\n",
                    q->name, q->dead_letter_routing_key);
        else if (q->dead_letter_exchange[0] != '\0')
            fprintf(out, "  \"q:%s\" -> \"x:%s\" [style=dashed, label=\"dead-lettered\"];\n",
                    q->name, q->dead_letter_exchange);
    }
    if (t->n_consumers > 0)
        fprintf(out, "  \"%s\" -> \"q:%s\" [style=dashed, label=\"after the last attempt\"];\n",
                t->consumers[0].program, t->retry.n.dlq);
    fprintf(out, "}\n");
    return ADMIN_OK;
}

int admin_topology(const hd_config *cfg, int argc, char **argv, const admin_io *io)
{
    int dot = 0, json = io->json;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(io->out);
            return ADMIN_OK;
        } else if (strcmp(argv[i], "--dot") == 0) {
            dot = 1;
        } else if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else {
            fprintf(io->err, "herald-admin topology: unknown argument '%s'\n", argv[i]);
            usage(io->err);
            return ADMIN_USAGE;
        }
    }
    if (dot && json) {
        fprintf(io->err, "herald-admin topology: --dot and --json exclude each other\n");
        return ADMIN_USAGE;
    }
    /* notif_topology is a few KB of fixed arrays: static, not on the stack. One call per
     * process, so no reentrancy concern. */
    static notif_topology t;
    hd_error err;
    const char *ex = hd_config_get(cfg, "HD_USERS_EXCHANGE", NOTIF_TOPOLOGY_USERS_EXCHANGE);
    const char *q = hd_config_get(cfg, "HD_NOTIFICATIONS_QUEUE", NOTIF_TOPOLOGY_QUEUE);
    hd_retry_policy policy;
    if (notif_topology_policy(cfg, &policy, &err) < 0 ||
        notif_topology_make(&t, ex, q, &policy, &err) < 0) {
        fprintf(io->err, "herald-admin topology: %s\n", err.text);
        return ADMIN_USAGE;
    }
    if (dot)
        return print_dot(&t, io->out);
    return json ? print_json(&t, io->out) : print_text(&t, io->out);
}
