"""A throwaway SMTP server for provisiond's email tests (PyPI aiosmtpd).

STARTTLS with the given certificate is required before anything else, then AUTH (PLAIN or
LOGIN) with the one user and password given; each accepted message is written as
<dir>/<n>.eml (the bytes as received), written to a temporary name and renamed so that a
reader never sees half a message. Prints "ready <port>" once listening on 127.0.0.1, then
serves until killed.

Usage: python smtp_sink.py --port P --cert C --key K --dir D --user U
       (the password is read from the environment variable SMTP_SINK_PASSWORD)
"""

import argparse
import itertools
import os
import ssl
import sys
import logging
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

# aiosmtpd 1.4 logs a warning about its own use of Session.login_data on every login.
logging.getLogger("mail.log").setLevel(logging.ERROR)


class Sink:
    def __init__(self, directory):
        self.directory = directory
        self.counter = itertools.count(1)
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            n = next(self.counter)
        path = os.path.join(self.directory, "%04d.eml" % n)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(envelope.original_content or envelope.content)
        os.rename(tmp, path)
        return "250 OK queued as %04d" % n


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--user", required=True)
    a = p.parse_args()
    password = os.environ["SMTP_SINK_PASSWORD"].encode()
    user = a.user.encode()

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == user
            and auth_data.password == password
        )
        # handled=False: aiosmtpd answers the refusal (535) itself; with the default (True)
        # it would leave the client waiting for an answer that never comes.
        return AuthResult(success=ok, handled=False)

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(a.cert, a.key)
    controller = Controller(
        Sink(a.dir),
        hostname="127.0.0.1",
        port=a.port,
        server_hostname="localhost",
        tls_context=context,
        require_starttls=True,
        auth_required=True,
        auth_require_tls=True,
        authenticator=authenticate,
    )
    controller.start()
    print("ready %d" % a.port, flush=True)
    try:
        threading.Event().wait()
    finally:
        controller.stop()


if __name__ == "__main__":
    sys.exit(main())
