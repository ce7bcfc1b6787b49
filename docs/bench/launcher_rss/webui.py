"""A stand-in WebUI for measuring the launcher: answers GET /sdapi/v1/sd-models with 200."""
import http.server
import sys

port = int(sys.argv[sys.argv.index("--port") + 1])


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path == "/sdapi/v1/sd-models"
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"[]")

    def log_message(self, *args):
        pass


print(f"stand-in WebUI on 127.0.0.1:{port}, flags: {' '.join(sys.argv[1:])}", flush=True)
http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
