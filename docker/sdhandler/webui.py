"""Calling the WebUI: one total deadline per call, never through a proxy, never a redirect.

http.client (not requests) because it reads no proxy settings from the environment, follows no
redirects, and exposes the socket, so each read waits only for what is left of the deadline:
a WebUI that sends a byte every half second cannot hold a job past it.
"""

import http.client
import json
import os
import re
import socket
import time
import urllib.parse

from .redaction import redact

DEFAULT_WEBUI_API_URL = "http://127.0.0.1:3000"
CONNECT_TIMEOUT = 10.0
# A bound on one answer, whatever the job: far above what the pixel bound lets a job ask for.
MAX_ANSWER_BYTES = 1 << 30


def webui_url():
    return (os.environ.get("WEBUI_API_URL") or DEFAULT_WEBUI_API_URL).rstrip("/")


class Answer:
    """One WebUI answer: status, the decoded JSON body (or None) and the raw text."""

    def __init__(self, status, reason, body, text):
        self.status = status
        self.reason = reason
        self.body = body
        self.text = text
        self.location = None


class CallFailed(Exception):
    """The WebUI did not answer: unreachable, connection lost, or past the deadline."""

    def __init__(self, message, timed_out=False):
        super().__init__(message)
        self.timed_out = timed_out


def call(method, path, payload=None, timeout=600.0, query=None):
    """Answer for `method path` (payload as JSON for POST, query parameters for GET) within
    `timeout` seconds in total, or CallFailed."""
    base = urllib.parse.urlsplit(webui_url())
    deadline = time.monotonic() + timeout
    target = (base.path.rstrip("/") + path) or "/"
    if query:
        target += "?" + urllib.parse.urlencode(
            {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in query.items()})
    body, headers = None, {"Accept": "application/json"}
    if method == "POST":
        body = json.dumps(payload if payload is not None else {}).encode("utf-8")
        headers["Content-Type"] = "application/json"
    connection_class = (http.client.HTTPSConnection if base.scheme == "https"
                        else http.client.HTTPConnection)
    connection = connection_class(base.hostname or "127.0.0.1", base.port,
                                  timeout=min(CONNECT_TIMEOUT, timeout))

    def left():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("deadline")
        return remaining

    try:
        connection.connect()
        # Kept: http.client lets go of the socket once an answer says it closes the connection.
        sock = connection.sock
        sock.settimeout(left())
        connection.request(method, target, body=body, headers=headers)
        sock.settimeout(left())
        response = connection.getresponse()
        chunks, size = [], 0
        while True:
            sock.settimeout(left())
            chunk = response.read1(1 << 16)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                raise CallFailed(f"answered more than {MAX_ANSWER_BYTES >> 20} MiB")
            chunks.append(chunk)
    except (socket.timeout, TimeoutError):
        raise CallFailed(f"did not answer within {timeout:g}s", timed_out=True) from None
    except ConnectionRefusedError:
        raise CallFailed("connection refused") from None
    except (OSError, http.client.HTTPException) as exc:
        raise CallFailed(f"connection failed: {type(exc).__name__}") from None
    finally:
        connection.close()
    raw = b"".join(chunks)
    text = raw.decode("utf-8", "replace")
    try:
        decoded = json.loads(text) if raw else None
        parsed = True
    except ValueError:
        decoded, parsed = None, False
    answer = Answer(response.status, response.reason, decoded, text)
    answer.json = parsed
    answer.location = response.getheader("Location")
    return answer


def detail(answer):
    """The most useful message in an A1111 error answer, redacted."""
    body = answer.body
    if not answer.json:
        return redact(answer.text.strip()[:300]) or answer.reason or "no details"
    if isinstance(body, dict):
        found = body.get("detail")
        if isinstance(found, list):
            # FastAPI's 422: [{"loc": ["body", "steps"], "msg": "..."}]
            parts = []
            for item in found:
                if isinstance(item, dict):
                    loc = [str(p) for p in item.get("loc", []) if p != "body"]
                    parts.append(f"{'.'.join(loc) or 'body'}: {item.get('msg', '')}")
            if parts:
                return redact("; ".join(parts))
        if isinstance(found, str) and found:
            return redact(found)
        for key in ("errors", "error"):
            if isinstance(body.get(key), str) and body[key]:
                return redact(body[key])
    return redact(json.dumps(body)[:300])


# Errors after which the WebUI process is unusable, whatever a health check says.
FATAL = re.compile(r"CUDA error|CUDA out of memory|OutOfMemoryError|out of memory|"
                   r"CUBLAS_STATUS|CUDNN_STATUS|cuDNN error|device-side assert|"
                   r"illegal memory access|NVML|no CUDA-capable device", re.IGNORECASE)
# The smallest generation: what every job needs the WebUI to still be able to do.
PROBE = {"prompt": "", "steps": 1, "width": 64, "height": 64, "batch_size": 1, "n_iter": 1,
         "send_images": False, "save_images": False, "do_not_save_samples": True,
         "do_not_save_grid": True}


def healthy(timeout):
    """(True, "") when the WebUI still generates, else (False, why)."""
    try:
        answer = call("POST", "/sdapi/v1/txt2img", PROBE, timeout=timeout)
    except CallFailed as exc:
        return False, str(exc)
    if answer.status == 200 and answer.json:
        return True, ""
    if answer.status == 200:
        return False, "answered 200 with a body that is not JSON"
    return False, f"answered {answer.status}: {detail(answer)}"
