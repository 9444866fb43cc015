"""`jitkern warmup | cache | bench | doctor` command line."""
from __future__ import annotations

import argparse
import importlib
import sys


def _bench(args):
    from .bench import FAMILIES
    from .bench.common import write_json
    mod = importlib.import_module(FAMILIES[args.family])
    records = mod.run(args)
    write_json(args.json, records, {"family": args.family, "argv": sys.argv[1:]})
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jitkern", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    from .bench import FAMILIES
    b = sub.add_parser("bench", help="benchmark a kernel family against its peers on this GPU")
    bsub = b.add_subparsers(dest="family", required=True)
    for fam, modname in FAMILIES.items():
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name != modname:
                raise
            continue
        fp = bsub.add_parser(fam, help=(mod.__doc__ or "").strip().splitlines()[0] if mod.__doc__ else None)
        fp.add_argument("--json", metavar="PATH", help="also write one JSON record per case to PATH")
        if hasattr(mod, "add_args"):
            mod.add_args(fp)
        fp.set_defaults(func=_bench)

    from . import cli_cmds
    cli_cmds.add_commands(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
