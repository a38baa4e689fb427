"""What the Python peer tests share: the simulator's merchant files, the real host names resolved
to the simulator (as an /etc/hosts entry would, so the SDKs keep their built-in gateway), a
notification receiver, and the simulator's control API."""

import json
import os
import socket
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REAL_HOSTS = {"api.mch.weixin.qq.com", "api2.mch.weixin.qq.com", "api.weixin.qq.com"}
WAIT_SECS = 30


class Sim:
    """A running `wxpay sim`: its URL and its state directory (merchant.json and files)."""

    def __init__(self, url, state_dir):
        self.url = url.rstrip("/")
        self.dir = state_dir
        with open(os.path.join(state_dir, "merchant.json"), encoding="utf-8") as f:
            self.merchant = json.load(f)
        self.port = int(self.url.rsplit(":", 1)[1])

    def path(self, key):
        return os.path.join(self.dir, self.merchant[key])

    def read(self, key):
        with open(self.path(key), encoding="utf-8") as f:
            return f.read()

    def route_real_hosts_here(self):
        """api.mch.weixin.qq.com:443 and friends reach this simulator, over TLS with its CA."""
        original = socket.getaddrinfo
        port = self.port

        def getaddrinfo(host, p, *args, **kwargs):
            if host in REAL_HOSTS:
                return original("127.0.0.1", port, *args, **kwargs)
            return original(host, p, *args, **kwargs)

        socket.getaddrinfo = getaddrinfo
        os.environ["REQUESTS_CA_BUNDLE"] = self.path("sim_ca_cert")
        os.environ["NO_PROXY"] = "*"

    def control(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def new_user(self):
        status, v = self.control("POST", "/sim/users", {})
        check(status == 200, f"/sim/users: {status} {v}")
        return v["openid"]


class Receiver:
    """Records the notifications the simulator sends and acknowledges them."""

    def __init__(self, xml_ack=False):
        self.received = []
        self.cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.cond:
                    receiver.received.append((self.path, self.headers, body))
                    receiver.cond.notify_all()
                if xml_ack:
                    ack = b"<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/xml")
                    self.send_header("Content-Length", str(len(ack)))
                    self.end_headers()
                    self.wfile.write(ack)
                else:
                    self.send_response(204)
                    self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]

    def wait(self, path):
        """The first notification to `path`; waits for it (up to WAIT_SECS)."""
        deadline = time.monotonic() + WAIT_SECS
        with self.cond:
            while True:
                for p, headers, body in self.received:
                    if p == path:
                        return headers, body
                left = deadline - time.monotonic()
                check(left > 0, f"no notification to {path} within {WAIT_SECS} s")
                self.cond.wait(left)

    def close(self):
        self.server.shutdown()


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def step(name):
    print(f"  ok  {name}", flush=True)


def sim_from_env(var):
    url, state_dir = os.environ[var].split(" ", 1)
    return Sim(url, state_dir)


def main(run):
    try:
        run()
    except Exception as e:  # the report names the failed step; the traceback says where
        import traceback

        traceback.print_exc()
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
