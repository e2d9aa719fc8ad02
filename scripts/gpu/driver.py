"""The CUDA driver through ctypes: kernels/*.cu compiled to cubins with the local nvcc, loaded and launched on
PyTorch's current stream."""
import ctypes
import os
import subprocess

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KERNEL_DIR = os.path.join(ROOT, "engine-rs", "kernels")


class Driver:
    def __init__(self, cubin_dir):
        self.lib = ctypes.CDLL("libcuda.so.1")
        torch.cuda.init()
        torch.zeros(1, device="cuda")  # makes the primary context current on this thread
        self.functions = {}
        self.modules = []
        for name in sorted(os.listdir(cubin_dir)):
            if not name.endswith(".cubin"):
                continue
            data = open(os.path.join(cubin_dir, name), "rb").read()
            module = ctypes.c_void_p()
            self.check(self.lib.cuModuleLoadData(ctypes.byref(module), ctypes.c_char_p(data)), f"load {name}")
            self.modules.append((module, data))
        self.kernel_names = {}

    def check(self, status, what):
        if status != 0:
            raise RuntimeError(f"CUDA driver error {status} in {what}")

    def function(self, name):
        if name not in self.functions:
            for module, _ in self.modules:
                fn = ctypes.c_void_p()
                if self.lib.cuModuleGetFunction(ctypes.byref(fn), module, name.encode()) == 0:
                    self.functions[name] = fn
                    break
            else:
                raise RuntimeError(f"kernel {name} not found")
        return self.functions[name]

    def launch(self, name, grid, block, args, smem=0):
        values = []
        for a in args:
            if isinstance(a, torch.Tensor):
                values.append(ctypes.c_uint64(a.data_ptr()))
            elif isinstance(a, float):
                values.append(ctypes.c_float(a))
            elif isinstance(a, tuple) and a[0] == "u64":
                values.append(ctypes.c_uint64(a[1]))
            else:
                values.append(ctypes.c_int32(int(a)))
        params = (ctypes.c_void_p * len(values))(*[ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) for v in values])
        grid = tuple(grid) + (1,) * (3 - len(grid))
        block = tuple(block) + (1,) * (3 - len(block))
        stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
        self.check(self.lib.cuLaunchKernel(self.function(name), *[ctypes.c_uint(x) for x in grid],
                                           *[ctypes.c_uint(x) for x in block], ctypes.c_uint(smem), stream,
                                           params, None), f"launch {name}")
        torch.cuda.synchronize()


def compile_kernels(out_dir):
    major, minor = torch.cuda.get_device_capability()
    arch = f"sm_{major}{minor}"
    nvcc = os.environ.get("NVCC", "nvcc")
    for name in sorted(os.listdir(KERNEL_DIR)):
        if name.endswith(".cu"):
            stem = name[:-3]
            subprocess.run([nvcc, "-cubin", f"-arch={arch}", "-O3", "-std=c++17", "-o",
                            os.path.join(out_dir, stem + ".cubin"), os.path.join(KERNEL_DIR, name)], check=True)
    return arch
