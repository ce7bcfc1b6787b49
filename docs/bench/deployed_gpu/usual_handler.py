"""The usual worker handler: import runpod and start serving at once; runpod runs its
deployed-mode fitness checks (torch's CUDA init and matmul among them) inside start()."""

import runpod


def handler(job):
    return {"ok": True}


print("usual-handler: serving", flush=True)
runpod.serverless.start({"handler": handler})
