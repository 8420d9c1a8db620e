#!/usr/bin/python3
"""smtp_sink.py — an SMTP server for tests that keeps every message as a file.

Started by scripts/servers.sh (always with /usr/bin/python3: Debian's python3-aiosmtpd lives
there, a pyenv python on PATH usually lacks it):

    /usr/bin/python3 scripts/smtp_sink.py --host 127.0.0.1 --port 2525 --maildir DIR \
        [--tls-cert FILE --tls-key FILE]

With --tls-cert/--tls-key the sink offers STARTTLS (listed in its EHLO reply) with that
certificate; it does not require it, so a plain-text client still gets through (a client
that wants TLS must insist on it, which is what the tests check).

Each message accepted becomes DIR/<epoch-ns>-<n>.eml:

    X-Envelope-From: <MAIL FROM address>
    X-Envelope-To: <one line per RCPT TO address>
    <the raw message, exactly as received after the DATA command>

The file is written under a dot-name and renamed into place, so a test that polls DIR for
*.eml files never reads half a message. Nothing is ever relayed. Runs in the foreground
until SIGTERM or SIGINT; logs one line per message on stderr.
"""

import argparse
import itertools
import os
import signal
import ssl
import sys
import threading
import time

try:
    from aiosmtpd.controller import Controller
except ImportError:  # pragma: no cover - reported to the operator, not tested
    sys.stderr.write(
        "smtp_sink: aiosmtpd is missing: install python3-aiosmtpd and run this with "
        "/usr/bin/python3 (not %s)\n" % sys.executable
    )
    sys.exit(2)


def log(msg):
    sys.stderr.write("smtp_sink: %s\n" % msg)
    sys.stderr.flush()


class MaildirHandler:
    """aiosmtpd handler: one .eml file per message, written atomically."""

    def __init__(self, maildir):
        self.maildir = maildir
        self.counter = itertools.count(1)

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content
        if raw is None:
            raw = envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        # Match the message's own line ending so the file reads as one message.
        eol = b"\r\n" if b"\r\n" in raw else b"\n"
        head = [b"X-Envelope-From: " + (envelope.mail_from or "").encode("utf-8")]
        head += [b"X-Envelope-To: " + rcpt.encode("utf-8") for rcpt in envelope.rcpt_tos]
        # After STARTTLS aiosmtpd keeps the TLS details in session.ssl: say so, so that a
        # test can prove the mail crossed encrypted (absent for plain sessions).
        if getattr(session, "ssl", None):
            head.append(b"X-Envelope-TLS: yes")
        data = eol.join(head) + eol + raw

        name = "%d-%d.eml" % (time.time_ns(), next(self.counter))
        tmp = os.path.join(self.maildir, "." + name + ".tmp")
        final = os.path.join(self.maildir, name)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        log("%s from <%s> to %s, %d bytes" % (name, envelope.mail_from,
                                              ", ".join("<%s>" % r for r in envelope.rcpt_tos),
                                              len(raw)))
        return "250 2.0.0 Message accepted for delivery"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=2525)
    ap.add_argument("--maildir", required=True)
    ap.add_argument("--pidfile", help="write the process id here once listening")
    ap.add_argument("--tls-cert", help="PEM certificate (chain): offer STARTTLS with it")
    ap.add_argument("--tls-key", help="PEM private key of --tls-cert")
    args = ap.parse_args()
    if bool(args.tls_cert) != bool(args.tls_key):
        ap.error("--tls-cert and --tls-key go together")

    os.makedirs(args.maildir, exist_ok=True)
    tls = {}
    if args.tls_cert:
        # tls_context (aiosmtpd >= 1.2) is STARTTLS on the plain port; ssl_context would be
        # implicit TLS (SMTPS). require_starttls stays False: STARTTLS is offered, not forced.
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.verify_mode = ssl.CERT_NONE  # no client certificates
        try:
            ctx.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as e:
            log("cannot load %s / %s: %s" % (args.tls_cert, args.tls_key, e))
            return 1
        tls = {"tls_context": ctx, "require_starttls": False}
    controller = Controller(MaildirHandler(args.maildir), hostname=args.host, port=args.port,
                            decode_data=False, enable_SMTPUTF8=True, ready_timeout=10, **tls)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        controller.start()  # returns once the port accepts connections
    except Exception as e:  # port in use and the like
        log("cannot listen on %s:%d: %s" % (args.host, args.port, e))
        return 1
    if args.pidfile:
        with open(args.pidfile + ".tmp", "w") as f:
            f.write("%d\n" % os.getpid())
        os.replace(args.pidfile + ".tmp", args.pidfile)
    log("listening on %s:%d%s, messages go to %s" % (args.host, args.port,
                                                   " (STARTTLS offered)" if tls else "",
                                                   args.maildir))
    while not stop.wait(3600):
        pass
    controller.stop()
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
