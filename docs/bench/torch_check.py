"""The GPU check the bash start.sh ran at every cold start (/cuda_test.py), with torch: the
baseline `worker-runtime cuda-check` replaces.

Import torch, check CUDA, read device properties and the arch list, run a 1024x1024 matmul on
the GPU, try to import xformers. Exit codes as that script's: 0 passed, 1 CUDA works but xformers
cannot be used, 2 CUDA problems.
"""
import sys

import torch

print(f"PyTorch {torch.__version__} (CUDA {torch.version.cuda})")
if not torch.cuda.is_available():
    print("❌ CUDA is not available")
    sys.exit(2)

for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"GPU {i}: {p.name}, compute capability {p.major}.{p.minor}, "
          f"{p.total_memory / 2**30:.1f} GiB")

major, minor = torch.cuda.get_device_capability(0)
sm = f"sm_{major}{minor}"
archs = torch.cuda.get_arch_list()
print(f"arch list: {' '.join(archs)}")
if sm not in archs:
    print(f"❌ {sm} is not in torch's arch list")
    sys.exit(2)

a = torch.randn(1024, 1024, device="cuda")
b = torch.randn(1024, 1024, device="cuda")
c = a @ b
torch.cuda.synchronize()
if not bool(torch.isfinite(c).all()):
    print("❌ matmul produced non-finite values")
    sys.exit(2)
print("matmul 1024x1024 ok")

try:
    import xformers
    import xformers.ops  # noqa: F401

    print(f"xformers {xformers.__version__}")
except Exception as e:  # that script treats any failure as "reduced performance"
    print(f"⚠ xformers unavailable: {type(e).__name__}: {e}")
    sys.exit(1)
print(f"🎉 CUDA compatibility test PASSED - {torch.cuda.get_device_name(0)} ready!")
sys.exit(0)
