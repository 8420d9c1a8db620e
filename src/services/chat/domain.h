/* chat/domain.h — what a chat message is, and what the chat accepts from outside.
 *
 * Everything here is pure (no threads, no I/O): the rules for room names, member names and
 * message texts, and the one integration event of the chat, chat.message_posted, as JSON.
 * The same validation runs on what a browser posts and on what the bus delivers: another
 * chat process (or anything else that can publish on the bus) is outside this process's
 * trust, so a delivered message is checked before it reaches a browser.
 *
 * Texts are taken as UTF-8 without control characters (newline and tab excepted) and are
 * sent to browsers inside JSON; the page renders them with textContent, never as HTML
 * (docs/services/chat.md, "Security").
 */
#ifndef CHAT_DOMAIN_H
#define CHAT_DOMAIN_H

#include <stddef.h>
#include <stdint.h>

#include "herald/error.h"

#define CHAT_TOPIC        "chat"
#define CHAT_EVENT_POSTED "chat.message_posted"

#define CHAT_ROOM_MAX   32   /* bytes of a room name: [a-z0-9_-]{1,32} */
#define CHAT_NAME_MAX   64   /* bytes of a member name (UTF-8) */
#define CHAT_TEXT_MAX   2000 /* bytes of a message text (UTF-8) */
#define CHAT_ORIGIN_MAX 64   /* bytes of a process's instance name */
#define CHAT_ID_LEN     36   /* a UUID */

/* One posted message, as it travels on the bus and to the browsers. */
typedef struct chat_message {
    char id[CHAT_ID_LEN + 1];
    char room[CHAT_ROOM_MAX + 1];
    char name[CHAT_NAME_MAX + 1];
    char origin[CHAT_ORIGIN_MAX + 1]; /* the chat process that took the post */
    int64_t at_ms;                    /* when it was posted, Unix epoch ms */
    char text[CHAT_TEXT_MAX + 1];
} chat_message;

/* 1 when s is a well-formed room name ([a-z0-9_-], 1..CHAT_ROOM_MAX bytes), else 0. */
int chat_room_name_valid(const char *s);

/* A member name: 1..CHAT_NAME_MAX bytes of UTF-8, no control characters, not only spaces.
 * Returns 0 or HD_EVALIDATE with err->text fit for the client. */
int chat_name_check(const char *s, hd_error *err);

/* A message text of len bytes (it may contain NULs, which are refused): 1..CHAT_TEXT_MAX
 * bytes of UTF-8, no control characters but newline and tab, not only white space. Returns
 * 0, HD_ETOOBIG or HD_EVALIDATE with err->text. */
int chat_text_check(const char *s, size_t len, hd_error *err);

/* The message as compact JSON {"id","room","name","origin","at","text"}: new (free()), NULL
 * when memory runs out. */
char *chat_message_encode(const chat_message *m);

/* Decode and validate a message from the bus (body borrowed, len bytes). Returns 0, or
 * HD_EJSON / HD_EMISSING / HD_ETYPE / HD_EVALIDATE / HD_ETOOBIG with err->text. */
int chat_message_decode(const void *body, size_t len, chat_message *out, hd_error *err);

#endif /* CHAT_DOMAIN_H */
