#!/usr/bin/env python3
"""Starts the AWS emulator (moto's server) for ha-agent's end-to-end tests and demo.

Run with the Python of the environment that has `moto[server]` installed (the venv that
`scripts/setup` creates). It listens on 127.0.0.1 at a port the kernel picks, prints one line

    moto listening on 127.0.0.1:PORT

on stdout once the server answers, and then runs until its standard input reaches end of file:
the harness keeps the write end of that pipe open for as long as it needs the emulator, so the
emulator ends with the test process that started it, however that process ends (a killed test
run leaves no emulator behind). Request logs are silenced; errors go to stderr. With --log PATH
(the file the caller sends stderr to), that file is removed at exit if nothing was written.

Usage: emulator.py [--host 127.0.0.1] [--log PATH]
"""
import argparse
import logging
import os
import sys
import urllib.request

from moto.server import ThreadedMotoServer


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--log")
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        raise SystemExit("refusing to listen on a non-loopback address: " + args.host)
    # One line per request would fill the log; keep warnings and errors.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address=args.host, port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    # Answer one request before announcing the port, so that the harness never races the start.
    with urllib.request.urlopen(f"http://{host}:{port}/moto-api/", timeout=30) as response:
        response.read()
    print(f"moto listening on {host}:{port}", flush=True)
    # Nothing else goes to stdout: the harness stops reading it.
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    sys.stdin.buffer.read()
    # The harness is gone (or let go of the pipe): stop at once, without waiting for requests.
    try:
        if args.log and os.path.getsize(args.log) == 0:
            os.remove(args.log)
    except OSError:
        pass
    os._exit(0)


if __name__ == "__main__":
    main()
