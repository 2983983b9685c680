#!/usr/bin/env python3
"""A small HTTP proxy in front of the AWS emulator (moto) for ha-agent's tests.

It forwards every request to the emulator and records each *claim* the agents make
(EC2 AssociateAddress, Route53 ChangeResourceRecordSets, SSM PutParameter) with the time it
arrived and the time it was answered, the client address, and the claim's target (the network
interface, the record value, the parameter value). That record is the "emulator-side observer"
the tests and benchmarks read: it shows who claimed what and when, independently of what the
agents say about themselves.

It can also inject faults: a share of requests answered with HTTP 503 or with a throttling
error, and an added delay. Control endpoints (not forwarded):

  GET  /_proxy/claims            JSON list of recorded claims
  GET  /_proxy/stats             JSON {"requests": N, "injected": {"503": N, "throttle": N}}
  POST /_proxy/claims/reset      forget recorded claims
  POST /_proxy/faults            JSON {"error_rate": 0.2, "throttle_rate": 0.1, "delay_ms": 50}
  GET  /_proxy/health            200 once the proxy is up

Once it accepts connections it prints one line on stdout, `proxy listening on HOST:PORT`
(PORT 0 in --listen asks the kernel for a free port; the line says which). With --exit-on-eof it
runs until its standard input reaches end of file, so that it ends with the process that started
it (the test harness keeps the write end of that pipe open).

Usage: fault_proxy.py --listen HOST:PORT --upstream http://127.0.0.1:PORT [--seed N] [--exit-on-eof]
"""
import argparse
import json
import os
import random
import sys
import re
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import http.client

STATE_LOCK = threading.Lock()
CLAIMS = []
FAULTS = {"error_rate": 0.0, "throttle_rate": 0.0, "delay_ms": 0}
STATS = {"requests": 0, "injected": {"503": 0, "throttle": 0}}
RNG = random.Random(0)

EC2_THROTTLE = (
    b'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>RequestLimitExceeded'
    b"</Code><Message>Request limit exceeded (injected).</Message></Error></Errors>"
    b"<RequestID>00000000-0000-0000-0000-000000000000</RequestID></Response>"
)
ROUTE53_THROTTLE = (
    b'<?xml version="1.0"?><ErrorResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/">'
    b"<Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded (injected)"
    b"</Message></Error><RequestId>0</RequestId></ErrorResponse>"
)
JSON_THROTTLE = b'{"__type":"ThrottlingException","message":"Rate exceeded (injected)"}'


def classify(method, path, headers, body):
    """Returns (service, action, target) for a claim, or None for anything else."""
    if method == "POST" and re.search(r"/hostedzone/[^/]+/rrset/?$", path):
        values = re.findall(rb"<Value>([^<]*)</Value>", body)
        names = re.findall(rb"<Name>([^<]*)</Name>", body)
        return (
            "route53",
            "ChangeResourceRecordSets",
            {
                "zone": path.split("/hostedzone/")[1].split("/")[0],
                "name": names[0].decode() if names else "",
                "value": values[0].decode() if values else "",
            },
        )
    target = headers.get("X-Amz-Target", "")
    if target.endswith("PutParameter"):
        try:
            doc = json.loads(body or b"{}")
        except ValueError:
            doc = {}
        return ("ssm", "PutParameter", {"name": doc.get("Name"), "value": doc.get("Value")})
    if method == "POST" and b"Action=AssociateAddress" in body:
        form = urllib.parse.parse_qs(body.decode(errors="replace"))
        first = lambda k: (form.get(k) or [None])[0]
        return (
            "ec2",
            "AssociateAddress",
            {
                "allocation_id": first("AllocationId"),
                "network_interface_id": first("NetworkInterfaceId"),
                "private_ip": first("PrivateIpAddress"),
                "instance_id": first("InstanceId"),
            },
        )
    return None


def throttle_body(path, headers, body):
    if "/hostedzone" in path:
        return "text/xml", ROUTE53_THROTTLE
    if headers.get("X-Amz-Target"):
        return "application/x-amz-json-1.1", JSON_THROTTLE
    return "text/xml", EC2_THROTTLE


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream = None

    def log_message(self, fmt, *args):  # quiet
        pass

    def _reply(self, status, body, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _control(self, body):
        if self.path == "/_proxy/health":
            return self._reply(200, b"ok", "text/plain")
        if self.path == "/_proxy/claims" and self.command == "GET":
            with STATE_LOCK:
                data = json.dumps(CLAIMS).encode()
            return self._reply(200, data)
        if self.path == "/_proxy/stats" and self.command == "GET":
            with STATE_LOCK:
                data = json.dumps(STATS).encode()
            return self._reply(200, data)
        if self.path == "/_proxy/claims/reset" and self.command == "POST":
            with STATE_LOCK:
                CLAIMS.clear()
            return self._reply(200, b"{}")
        if self.path == "/_proxy/faults" and self.command == "POST":
            update = json.loads(body or b"{}")
            with STATE_LOCK:
                for key in ("error_rate", "throttle_rate", "delay_ms"):
                    if key in update:
                        FAULTS[key] = update[key]
                data = json.dumps(FAULTS).encode()
            return self._reply(200, data)
        return self._reply(404, b'{"error":"unknown control path"}')

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path.startswith("/_proxy/"):
            return self._control(body)
        arrived = time.time()
        claim = classify(self.command, self.path, self.headers, body)
        with STATE_LOCK:
            faults = dict(FAULTS)
            roll = RNG.random()
        if faults["delay_ms"]:
            time.sleep(faults["delay_ms"] / 1000.0)
        injected = None
        if roll < faults["throttle_rate"]:
            injected = "throttle"
            ctype, data = throttle_body(self.path, self.headers, body)
            status = 400
        elif roll < faults["throttle_rate"] + faults["error_rate"]:
            injected = "503"
            ctype, data, status = "text/plain", b"Service Unavailable (injected)", 503
        else:
            conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=30)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
            headers["Host"] = self.headers.get("Host", "")
            conn.request(self.command, self.path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            status = response.status
            ctype = response.getheader("Content-Type", "text/xml")
            conn.close()
        answered = time.time()
        with STATE_LOCK:
            STATS["requests"] += 1
            if injected is not None:
                STATS["injected"][injected] += 1
        if claim is not None:
            service, action, target = claim
            record = {
                "service": service,
                "action": action,
                "target": target,
                "client": self.client_address[0],
                "arrived": arrived,
                "answered": answered,
                "status": status,
                "injected": injected,
            }
            with STATE_LOCK:
                CLAIMS.append(record)
        self._reply(status, data, ctype)

    do_GET = _handle
    do_POST = _handle
    do_PUT = _handle
    do_DELETE = _handle


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--exit-on-eof", action="store_true")
    args = parser.parse_args()
    RNG.seed(args.seed)
    host, port = args.listen.rsplit(":", 1)
    Handler.upstream = urllib.parse.urlparse(args.upstream)
    if Handler.upstream.hostname not in ("127.0.0.1", "localhost", "::1") and not Handler.upstream.hostname.startswith("10."):
        raise SystemExit("refusing an upstream that is not local: " + args.upstream)
    server = ThreadingHTTPServer((host, int(port)), Handler)
    server.daemon_threads = True
    bound_host, bound_port = server.server_address[:2]
    print(f"proxy listening on {bound_host}:{bound_port}", flush=True)
    if args.exit_on_eof:
        threading.Thread(target=serve_until_eof, args=(server,), daemon=True).start()
        sys.stdin.buffer.read()
        os._exit(0)
    server.serve_forever()


def serve_until_eof(server):
    server.serve_forever()


if __name__ == "__main__":
    main()
