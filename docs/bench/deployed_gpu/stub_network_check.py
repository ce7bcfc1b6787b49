"""Runs a handler script with runpod's network fitness check replaced by a no-op.

runpod's deployed mode dials a public DNS server (8.8.8.8:53) at start; a benchmark machine with
no network would fail it, and must not send traffic anywhere. Every other check runs as in
production. The replacement is made the moment runpod's module is imported, so the handler's own
import order (and its import time) is unchanged.

usage: python3 stub_network_check.py HANDLER.py [ARGS...]
"""

import importlib.abc
import importlib.machinery
import runpy
import sys

TARGET = "runpod.serverless.modules.rp_system_fitness"


class _PatchOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        original = spec.loader.exec_module

        def exec_module(module):
            original(module)

            async def _no_network_check():
                return None

            module._check_network_connectivity = _no_network_check

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _PatchOnImport())
script = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
