"""JIT runtime: render a template, compile it with NVRTC, cache the cubin, load and launch it.

The one entry point kernels use is :func:`get_kernel` with a :class:`KernelSpec`.
"""
from .arch import Target, current_target, target_for_arch
from .compiler import JitCompileError
from .kernel_spec import KernelSpec
from .cache import get_kernel, compile_spec, cache_dir
from .launch import Kernel

__all__ = ["Target", "current_target", "target_for_arch", "JitCompileError", "KernelSpec",
           "get_kernel", "compile_spec", "cache_dir", "Kernel"]
