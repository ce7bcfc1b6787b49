"""The parts of docker/handler.py: what a job may ask (rules), how the WebUI is called (webui),
what leaves the worker (outputs), and what never reaches a log or a caller (redaction)."""
