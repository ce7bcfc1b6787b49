# Run by `worker-runtime facts` with the image's Python, once, at image build time (no GPU there).
# Prints one line "@@IMAGE_FACTS@@<json>" so import-time chatter on stdout cannot corrupt it.
import json
import platform
import sys

facts = {"python": {"version": platform.python_version(), "executable": sys.executable}}


def err(e):
    return f"{type(e).__name__}: {e}".strip()


try:
    import torch

    cuda = torch.version.cuda
    try:
        # torch.cuda.get_arch_list() returns [] when no GPU is visible (it checks is_available()
        # first); the arch list is compiled in, so read it where get_arch_list() reads it.
        flags = torch._C._cuda_getArchFlags() if cuda else None
        source = "torch._C._cuda_getArchFlags()"
    except Exception:
        flags, source = " ".join(torch.cuda.get_arch_list()), "torch.cuda.get_arch_list()"
    facts["torch"] = {
        "version": torch.__version__,
        "cuda": cuda,
        "arch_list": (flags or "").split(),
        "arch_list_source": source,
    }
except Exception as e:
    facts["torch_error"] = err(e)

try:
    import xformers

    x = {"version": getattr(xformers, "__version__", None)}
    try:
        # What A1111 does before it uses xformers (modules/sd_hijack_optimizations.py).
        import xformers.ops  # noqa: F401

        x["ops_import"] = True
    except Exception as e:
        x["ops_import"], x["ops_error"] = False, err(e)
    try:
        from xformers import _cpp_lib

        x["has_cpp_library"] = bool(getattr(_cpp_lib, "_has_cpp_library", False))
        failure = getattr(_cpp_lib, "_cpp_library_load_exception", None)
        if failure is not None:
            x["cpp_library_error"] = str(failure).splitlines()[0]
        meta = getattr(_cpp_lib, "_build_metadata", None)
        if meta is not None:
            x["built_for_torch"] = str(meta.torch_version)
            x["built_for_cuda"] = None if meta.cuda_version is None else str(meta.cuda_version)
            arch = (meta.build_env or {}).get("TORCH_CUDA_ARCH_LIST")
            x["arch_list"] = None if arch is None else str(arch)
    except Exception as e:
        x["metadata_error"] = err(e)
    facts["xformers"] = x
except ModuleNotFoundError as e:
    # Only "no module named xformers" means absent; a missing dependency is a broken install.
    facts["xformers_error"] = "not installed" if e.name == "xformers" else err(e)
except Exception as e:
    facts["xformers_error"] = err(e)

print("@@IMAGE_FACTS@@" + json.dumps(facts))
