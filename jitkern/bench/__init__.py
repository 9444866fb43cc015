"""`jitkern bench <family>`: one module per family, each with ``add_args(parser)`` and
``run(args) -> list[dict]`` (one JSON record per case)."""
FAMILIES = {
    "runtime": "jitkern.bench.runtime",
    "gemm": "jitkern.bench.gemm",
    "grouped": "jitkern.bench.grouped",
    "mla": "jitkern.bench.mla",
    "spec": "jitkern.bench.spec",
}
