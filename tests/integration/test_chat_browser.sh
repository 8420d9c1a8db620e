#!/usr/bin/env bash
# integration.chat_browser — the chat page in a real headless browser: two chromium sessions
# on two herald-chat processes, one bus, one room; each sees the other's message
# (chat_browser.py says what is checked).
#
#   test_chat_browser.sh SOURCE_DIR BUILD_DIR      (ctest passes both)
#
# Needs HD_REDIS_URL (scripts/servers.sh; HD_CHAT_TEST_BUS=rabbitmq: HD_AMQP_URL), and Debian's
# chromium and chromium-driver (scripts/deps.sh): anything missing is a FAILURE, not a skip.
# HD_CHAT_SCREENSHOT=docs/chat.png keeps the screenshot of the first page.
set -uo pipefail
SRC=${1:-$(cd "$(dirname "$0")/../.." && pwd)}
BUILD=${2:-$SRC/build}
exec python3 "$SRC/tests/integration/chat_browser.py" "$SRC" "$BUILD"
