"""jitkern: JIT-compiled (NVRTC) Hopper kernels for LLM inference."""
__version__ = "0.1.0"
