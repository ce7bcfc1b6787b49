"""Keeping image data and secrets out of logs and out of the errors returned to callers."""

import os
import re

# Runs of base64 characters, possibly wrapped into lines (MIME base64 breaks every 76 columns,
# written as real newlines or as the two characters \n in a repr'd string).
_BASE64_PIECES = re.compile(r"(?:[A-Za-z0-9+/]{16,}(?:\r?\n|\\r\\n|\\n)?)+={0,2}")
_LINE_BREAKS = re.compile(r"\r|\n|\\r|\\n")
# 200+ base64 characters: an image (or other binary), never a word someone needs to read.
MIN_BASE64_RUN = 200
# Secrets the worker holds: RunPod's API key and the bucket credentials, plus anything whose
# name says it is one.
_SECRET_NAMES = ("RUNPOD_AI_API_KEY", "BUCKET_ACCESS_KEY_ID", "BUCKET_SECRET_ACCESS_KEY")
_SECRET_WORDS = ("KEY", "SECRET", "TOKEN", "PASSWORD")


def _secrets():
    found = []
    for name, value in os.environ.items():
        upper = name.upper()
        if name in _SECRET_NAMES or any(word in upper for word in _SECRET_WORDS):
            if len(value) >= 8:
                found.append((name, value))
    # Longest first, so a secret containing another is replaced whole.
    return sorted(found, key=lambda item: -len(item[1]))


def _shorten(match):
    text = match.group(0)
    chars = len(_LINE_BREAKS.sub("", text))
    return f"<{chars} base64 chars>" if chars >= MIN_BASE64_RUN else text


def redact(text):
    text = _BASE64_PIECES.sub(_shorten, str(text))
    for name, value in _secrets():
        text = text.replace(value, f"<{name}>")
    return text
