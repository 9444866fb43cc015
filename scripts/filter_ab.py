"""verify_sampled with top-k / top-p, variants of filter_fast by -D macro (timing ablations):
python3 scripts/filter_ab.py [--pre] [--ab]. Bench inputs (V = 129280 bf16, b x 7 drafts), CUDA-graph
replay over rotating inputs; prints us per variant and case. --pre: compile only. --ab: also the
unfiltered kernels against templates/spec/sampled_prev.cuh (a copy of the previous header made for
the A/B: git show <commit>:templates/spec/sampled.cuh > templates/spec/sampled_prev.cuh)."""
import dataclasses
import sys

import torch

from jitkern.ops import speculative as ops

VARIANTS = {
    "default": (),
    "stop after argmax": (("JITKERN_FILTER_STOP", "1"),),
    "stop after sketch": (("JITKERN_FILTER_STOP", "2"),),
    "stop after collect": (("JITKERN_FILTER_STOP", "3"),),
    "unroll 8": (("JITKERN_FILTER_UNROLL", "8"),),
    "unroll 16": (("JITKERN_FILTER_UNROLL", "16"),),
}
_orig = ops.sampled_spec


def with_defines(defs):
    return lambda *a, **kw: dataclasses.replace(_orig(*a, **kw), defines=tuple(_orig(*a, **kw).defines) + defs)


def main(argv):
    if "--pre" in argv:
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(2) as ex:
            list(ex.map(_compile, list(VARIANTS.values()) + ["prev sampled", "prev tree"]))
        return
    if "--ab" in argv:
        unfiltered_ab()
    from jitkern.bench.common import graph_time_us
    V = 129280
    for b, k in ((1, 7), (16, 7), (64, 7)):
        rot = 8
        logits, q, dr, cu = inputs(b, k, V, rot)
        for tk, tp in ((50, 0.9), (None, 0.9)):
            line = []
            for name, defs in VARIANTS.items():
                ops.sampled_spec = with_defines(defs)
                us = graph_time_us(lambda i: ops.verify_sampled(logits[i], dr[i], q[i], cu, 1.0, tk, tp, seed=i,
                                                                max_num_draft=k), rotate=rot)
                line.append(f"{name} {us:.1f}")
            ops.sampled_spec = _orig
            print(f"b={b} k={k} top_k={tk} top_p={tp}: " + " | ".join(line), flush=True)


def inputs(b, k, V, rot):
    """`rot` sets of bf16 logits [b(k+1), V], q = softmax of fresh logits [bk, V], drafts drawn from
    q, and cu [b+1] (k drafts per request)."""
    g = torch.Generator(device="cuda").manual_seed(0)
    logits = [torch.randn(b * (k + 1), V, device="cuda", generator=g).to(torch.bfloat16) for _ in range(rot)]
    q = [torch.softmax(torch.randn(b * k, V, device="cuda", generator=g), -1) for _ in range(rot)]
    dr = [torch.multinomial(x, 1, generator=g).view(-1) for x in q]
    return logits, q, dr, torch.arange(b + 1, device="cuda", dtype=torch.int32) * k


def prev(spec):
    """The same kernel from templates/spec/sampled_prev.cuh (the header before filter_fast, kept
    only while this A/B runs)."""
    name = spec.name
    if name.startswith("jitkern::verify_sampled<"):  # the previous kernel had no kFilter argument
        name = name.rsplit(",", 1)[0] + ">"
    return dataclasses.replace(spec, template="spec/sampled_prev.cuh", name=name, defines=())


def unfiltered_ab():
    """Unfiltered verify_sampled / verify_tree_sampled (chain), new header vs sampled_prev.cuh,
    interleaved, three rounds: does the filter code cost the unfiltered paths anything?"""
    from jitkern.bench.common import graph_time_us
    V = 129280
    orig_tree = ops.tree_sampled_spec
    for b, k in ((1, 7), (16, 7), (64, 7), (256, 3)):
        rows, rot = b * (k + 1), 4
        logits, q, dr, cu = inputs(b, k, V, rot)
        par = torch.arange(-1, k, device="cuda", dtype=torch.int32).repeat(b)
        cun = torch.arange(b + 1, device="cuda", dtype=torch.int32) * (k + 1)
        toks = [torch.cat([d.new_zeros(b, 1), d.view(b, k)], 1).reshape(-1) for d in dr]
        tq = [torch.cat([x.new_zeros(b, 1, V), x.view(b, k, V)], 1).view(rows, V) for x in q]
        res = {}
        for _ in range(3):
            for name, sf, tf in (("new", _orig, orig_tree), ("prev", lambda *a: prev(_orig(*a)),
                                                              lambda *a: prev(orig_tree(*a)))):
                ops.sampled_spec, ops.tree_sampled_spec = sf, tf
                us = graph_time_us(lambda i: ops.verify_sampled(logits[i], dr[i], q[i], cu, 1.0, seed=i,
                                                                max_num_draft=k), rotate=rot)
                ut = graph_time_us(lambda i: ops.verify_tree_sampled(logits[i], toks[i], par, tq[i], cun, 1.0, seed=i,
                                                                     max_depth=k), rotate=rot)
                res.setdefault(name, []).append((us, ut))
        ops.sampled_spec, ops.tree_sampled_spec = _orig, orig_tree
        print(f"b={b} k={k} unfiltered sampled / tree (3 rounds): " + " | ".join(
            f"{nm} " + ", ".join(f"{a:.1f}/{t:.1f}" for a, t in v) for nm, v in res.items()), flush=True)


def _compile(defs):
    from jitkern.runtime import compile_spec
    if defs == "prev sampled":
        spec = prev(_orig(torch.bfloat16, torch.int64, torch.int32, True))
    elif defs == "prev tree":
        spec = prev(ops.tree_sampled_spec(torch.bfloat16, torch.int64, torch.int32, True))
    else:
        spec = with_defines(defs)(torch.bfloat16, torch.int64, torch.int32, True, True)
    compile_spec(spec, "sm_90a")


if __name__ == "__main__":
    main(sys.argv[1:])
