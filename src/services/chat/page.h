/* chat/page.h — the chat's web page: HTML, script and style as C strings.
 *
 * No build step and nothing to install beside the binary: the page is three static
 * strings served by api.c at "/", "/chat.js" and "/chat.css". The script is plain
 * JavaScript with EventSource and fetch. It is a separate file, not inline, so that the
 * page can be served with a Content-Security-Policy of "script-src 'self'": even if a
 * message did end up as markup somewhere, no inline script in it would run. Messages are
 * rendered with textContent, never innerHTML.
 */
#ifndef CHAT_PAGE_H
#define CHAT_PAGE_H

extern const char chat_page_html[];
extern const char chat_page_js[];
extern const char chat_page_css[];

#endif /* CHAT_PAGE_H */
