"""A real SMTP server (aiosmtpd) for eddy's email tests and benchmark.

Accepts mail on 127.0.0.1:PORT and prints one JSON line per message to stdout
({"from", "to", "data"}); with --count-only, prints nothing but counts and reports the
total on SIGTERM. Recipients whose local part starts with "bounce" are refused with 550,
with "soft" with 451 (a temporary failure), so tests see Braze's bounce paths.
"""
import argparse
import json
import signal
import sys

from aiosmtpd.controller import Controller


class Handler:
    def __init__(self, count_only):
        self.count_only = count_only
        self.count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@")[0].lower()
        if local.startswith("bounce"):
            return "550 5.1.1 <%s>: user unknown" % address
        if local.startswith("soft"):
            return "451 4.2.0 <%s>: mailbox busy, try later" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        if not self.count_only:
            line = {"from": envelope.mail_from, "to": envelope.rcpt_tos,
                    "data": envelope.content.decode("utf-8", "replace")}
            sys.stdout.write(json.dumps(line) + "\n")
            sys.stdout.flush()
        return "250 2.0.0 queued"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count-only", action="store_true")
    args = parser.parse_args()
    handler = Handler(args.count_only)
    controller = Controller(handler, hostname="127.0.0.1", port=args.port,
                            server_kwargs={"data_size_limit": 10 * 1024 * 1024})
    controller.start()
    sys.stderr.write("ready\n")
    sys.stderr.flush()
    signal.sigwait([signal.SIGTERM, signal.SIGINT])
    controller.stop()
    sys.stderr.write("received %d\n" % handler.count)


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM, signal.SIGINT])
    main()
