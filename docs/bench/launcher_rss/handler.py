"""A stand-in handler: reports the launcher's memory while the WebUI runs, then exits 0.

The launcher (worker-runtime) is this process's parent.
"""
import os
import time


def status(pid):
    with open(f"/proc/{pid}/status") as f:
        return {k: v.strip() for k, v in (line.split(":", 1) for line in f if ":" in line)}


time.sleep(1)  # the WebUI is up and serving; the launcher is in its steady state
launcher = status(os.getppid())
maps = open(f"/proc/{os.getppid()}/maps").read()
print(f"launcher RSS while the WebUI runs: VmRSS {launcher['VmRSS']}, VmHWM {launcher['VmHWM']}; "
      f"libcuda mapped in the launcher: {'libcuda' in maps}", flush=True)
