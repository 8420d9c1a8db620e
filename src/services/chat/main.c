/* chat/main.c — herald-chat: the online chat of the seed's events package, on herald.
 *
 * A thin main(): --help prints the settings below; otherwise read them (environment, then
 * ./.env), make the logger, and hand over to runtime.c.
 *
 * Exit codes: 0 stopped by SIGTERM/SIGINT; 1 could not start (logged); 2 bad configuration.
 */
#include <stdio.h>

#include "herald/config.h"
#include "herald/log.h"

#include "runtime.h"

#define SUMMARY                                                                                    \
    "The online chat: rooms, messages posted over HTTP and pushed to every browser by\n"           \
    "Server-Sent Events, one bus between the chat processes. Open http://<listen>/ in a\n"         \
    "browser. Settings come from the environment, then from ./.env."

static const hd_setting settings[] = {
    {"HD_CHAT_LISTEN", "127.0.0.1:8090", "address:port of the page and the API (port 0: any)"},
    {"HD_CHAT_BUS", CHAT_BUS_DEFAULT,
     "the bus between chat processes: redis (HD_REDIS_URL), rabbitmq (HD_AMQP_URL) or memory "
     "(one process)"},
    {"HD_REDIS_URL", "", "Redis URL for HD_CHAT_BUS=redis (redis://host:port)"},
    {"HD_AMQP_URL", "", "RabbitMQ URL for HD_CHAT_BUS=rabbitmq"},
    {"HD_CHAT_INSTANCE", "(random)",
     "this process's name: the bus consumer chat-<instance>, the 'origin' of its messages"},
    {"HD_CHAT_ROOMS", "general,random,help", "the rooms, comma-separated, each [a-z0-9_-]{1,32}"},
    {"HD_CHAT_MAX_MEMBERS", "1000", "tokens held at once (joins past it: 429)"},
    {"HD_CHAT_MAX_LISTENERS", "200", "open event streams, all rooms (past it: 429)"},
    {"HD_CHAT_STREAMS_PER_MEMBER", "4", "open event streams per token (past it: 429)"},
    {"HD_CHAT_QUEUE", "64",
     "messages queued per stream; a stream that falls further behind "
     "is dropped"},
    {"HD_CHAT_SESSION_TTL", "12h", "a token unused this long (no post, no stream) expires"},
    {"HD_CHAT_HEARTBEAT", "15s", "a quiet stream gets a comment line this often (at most 20s)"},
    {"HD_CHAT_RATE_JOIN", "20/m", "joins per client address (IPv6: per /64): N/s, N/m, N/h or off"},
    {"HD_CHAT_RATE_JOIN_BURST", "10", "joins per client address in a burst"},
    {"HD_CHAT_MAX_BODY", "8192", "largest request body in bytes (past it: 413)"},
    {"HD_CHAT_BUS_QUEUE", "256", "posts waiting for the bus thread (past it: 503)"},
    {"HD_LOG_LEVEL", "info", "debug, info, warn or error"},
    {"HD_LOG_FLUSH_MS", HD_LOG_FLUSH_MS_DEFAULT, HD_LOG_FLUSH_MS_HELP},
    {NULL, NULL, NULL},
};

int main(int argc, char **argv)
{
    if (hd_config_wants_help(argc, argv)) {
        hd_config_print_help(stdout, "herald-chat", SUMMARY, settings);
        return 0;
    }
    hd_config *cfg = NULL;
    hd_error err;
    if (hd_config_load(&cfg, NULL, &err) < 0) {
        fprintf(stderr, "herald-chat: %s\n", err.text);
        return 2;
    }
    hd_log_level level = HD_LOG_INFO;
    if (hd_log_level_parse(hd_config_get(cfg, "HD_LOG_LEVEL", "info"), &level) < 0) {
        fprintf(stderr, "herald-chat: HD_LOG_LEVEL: not debug, info, warn or error\n");
        hd_config_free(cfg);
        return 2;
    }
    hd_logger *lg = hd_logger_new("chat", level, stderr);
    if (lg == NULL || hd_config_log_write_behind(cfg, lg, &err) < 0) {
        fprintf(stderr, "herald-chat: %s\n", lg ? err.text : "cannot create the logger");
        hd_logger_free(lg);
        hd_config_free(cfg);
        return 2;
    }
    hd_log_set_default(lg);
    int status = chat_run(cfg, lg);
    hd_log_set_default(NULL);
    hd_logger_free(lg);
    hd_config_free(cfg);
    return status;
}
