#!/usr/bin/env python3
"""FALLBACK, to delete once the node's own GET /healthz is merged (wt-ops:
[health] maintenance_file). Serves GET /healthz the way the node will: 503
"maintenance" while MAINT_FILE exists, else the status of the node's GET /health
(200 ok / 503 stopping / 503 unreachable). lab.sh uses it only when
`ingestd check-config` rejects `maintenance_file`.

usage: healthz-shim.py LISTEN_HOST LISTEN_PORT UPSTREAM_URL MAINT_FILE
"""
import http.server
import os
import sys
import urllib.error
import urllib.request

host, port, upstream, maint = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy


class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/healthz":
            code, body = 404, "not found\n"
        elif os.path.exists(maint):
            code, body = 503, "maintenance\n"
        else:
            try:
                with opener.open(upstream, timeout=2) as r:
                    code, body = r.status, r.read().decode()
            except urllib.error.HTTPError as e:
                code, body = e.code, e.read().decode()
            except OSError as e:
                code, body = 503, f"node health unreachable: {e}\n"
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer((host, port), H).serve_forever()
