"""The GPU checks' parts (scripts/gpu_check.py, scripts/gpu_tp_check.py): PASS/FAIL lines (report.py), the CUDA
driver through ctypes (driver.py), CPU references (reference.py), kernel tests (kernel_tests.py), a Llama forward
from the kernels (kernel_llama.py), the engine's C ABI (engine.py) and its checks and benchmarks (engine_tests.py).
"""
