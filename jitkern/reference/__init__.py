"""Plain-torch reference math for every op (CPU or GPU): the oracle the tests compare against.
One module per family; import them as ``jitkern.reference.<family>``."""
from . import mla, moe, quant, speculative  # noqa: F401
