"""Plain-torch reference math for speculative verification (the tests' oracle), plus the
"plain PyTorch" implementations the bench measures as the peer. Packed layout: see
:mod:`jitkern.ops.speculative`."""
from __future__ import annotations

import torch


def _split(cu):
    cu = [int(x) for x in cu.tolist()]
    return [(cu[i], cu[i + 1] - cu[i]) for i in range(len(cu) - 1)]


def verify_greedy(target_logits, draft_tokens, cu_num_draft, max_num_draft=None):
    """Oracle for :func:`jitkern.ops.speculative.verify_greedy` (torch.argmax per row)."""
    reqs = _split(cu_num_draft.cpu())
    n = draft_tokens.numel()
    cols = (n if max_num_draft is None else max_num_draft) + 1
    am = torch.argmax(target_logits, dim=-1).cpu() if target_logits.shape[0] else torch.empty(0, dtype=torch.long)
    drafts = draft_tokens.cpu().long()
    acc = torch.empty(len(reqs), dtype=torch.int32)
    out = torch.full((len(reqs), cols), -1, dtype=torch.int32)
    for i, (d0, k) in enumerate(reqs):
        r0 = d0 + i
        if k >= cols:
            acc[i] = -1
            continue
        a = 0
        while a < k and int(drafts[d0 + a]) == int(am[r0 + a]):
            a += 1
        acc[i] = a
        out[i, :a] = drafts[d0:d0 + a].int()
        out[i, a] = int(am[r0 + a])
    return acc, out


def verify_tree_greedy(target_logits, tree_tokens, tree_parents, cu_num_nodes, max_depth):
    """Oracle for :func:`jitkern.ops.speculative.verify_tree_greedy`."""
    cu = [int(x) for x in cu_num_nodes.cpu().tolist()]
    am = torch.argmax(target_logits, dim=-1).cpu().tolist() if target_logits.shape[0] else []
    toks, par = tree_tokens.cpu().tolist(), tree_parents.cpu().tolist()
    b, cols = len(cu) - 1, max_depth + 1
    acc = torch.full((b,), -1, dtype=torch.int32)
    out = torch.full((b, cols), -1, dtype=torch.int32)
    path = torch.full((b, cols), -1, dtype=torch.int32)
    for i in range(b):
        n0, nn = cu[i], cu[i + 1] - cu[i]
        p = [0]
        while True:
            cur = p[-1]
            nxt = [c for c in range(1, nn) if par[n0 + c] == cur and toks[n0 + c] == am[n0 + cur]]
            if not nxt:
                break
            p.append(nxt[0])
        if len(p) > cols:
            continue
        acc[i] = len(p) - 1
        path[i, :len(p)] = torch.tensor(p, dtype=torch.int32)
        out[i, :len(p) - 1] = torch.tensor([toks[n0 + c] for c in p[1:]], dtype=torch.int32)
        out[i, len(p) - 1] = am[n0 + p[-1]]
    return acc, out, path


def target_probs(logits, temperature, top_k=None, top_p=None):
    """Target distribution per row, float64 [n, V]: softmax(logits / T) (T == 0: one-hot at
    torch.argmax), then top-k, then top-p, renormalised (semantics and tie rules:
    :func:`jitkern.ops.speculative.verify_sampled`). Logits compare as their float32 values.
    top_k: None or int (< 1 or >= V: off); top_p: None or float (>= 1 or NaN: off)."""
    x = logits.float()
    if temperature == 0:
        p = torch.zeros(x.shape, dtype=torch.float64)
        p.scatter_(-1, torch.argmax(x, -1, keepdim=True), 1.0)
        return p
    V = x.shape[-1]
    keep = torch.ones(x.shape, dtype=torch.bool)
    if top_k is not None and 0 < int(top_k) < V:
        kth = x.topk(int(top_k), dim=-1).values[..., -1:]
        keep &= x >= kth  # every token tied with the k-th largest stays
    z = x.double() / float(temperature)
    p = torch.softmax(z.masked_fill(~keep, float("-inf")), dim=-1)
    if top_p is not None and float(top_p) < 1.0:
        for r in range(x.shape[0]):
            vals, cum = value_group_mass(x[r], p[r])
            hit = torch.nonzero(cum >= float(top_p))  # smallest prefix of value groups reaching top_p
            thr = vals[int(hit[0])] if hit.numel() else vals[-1]
            keep[r] &= x[r] >= thr
        p = torch.softmax(z.masked_fill(~keep, float("-inf")), dim=-1)
    return p


def value_group_mass(x, p):
    """Distinct values of ``x`` in descending order and the cumulative mass of ``p`` over the
    tokens whose value is >= each (groups of tied values together). O(V log V)."""
    xs, order = torch.sort(x, descending=True)
    vals, counts = torch.unique_consecutive(xs, return_counts=True)
    cum = torch.cumsum(p[order], 0)[torch.cumsum(counts, 0) - 1]
    return vals, cum


def _per_request(v, b):
    """A scalar or a [b] tensor (or None) as a list of b Python values."""
    if isinstance(v, torch.Tensor):
        return [x for x in v.cpu().tolist()]
    return [v] * b


def _accept_prob(px, qx):
    """P(u * q < p) for u uniform in [0, 1): min(1, p / q); p = 0 never accepts."""
    if px <= 0:
        return 0.0
    return 1.0 if qx <= 0 else min(1.0, px / qx)


def _residual(p, q):
    """normalize(max(0, p - q)), or p when that has no mass (float64 vectors)."""
    r = (p - q).clamp_min(0)
    s = float(r.sum())
    return r / s if s > 0 else p


def sampled_outcome_probs(target_logits, draft_tokens, draft_probs, cu_num_draft, temperature,
                          top_k=None, top_p=None):
    """Exact distribution of one request's (accepted count a, emitted token y) under the
    rejection-sampling scheme, float64. Returns a list (per request) of [k + 1, V] tensors whose
    entry [a, y] is P(accept exactly a drafts, then emit y); each sums to 1. temperature /
    top_k / top_p: scalars or [b] tensors."""
    reqs = _split(cu_num_draft.cpu())
    b = len(reqs)
    temps, tks, tps = _per_request(temperature, b), _per_request(top_k, b), _per_request(top_p, b)
    res = []
    for i, (d0, k) in enumerate(reqs):
        r0 = d0 + i
        p = target_probs(target_logits[r0:r0 + k + 1].cpu().float(), float(temps[i]), tks[i], tps[i])
        q = draft_probs[d0:d0 + k].cpu().double()
        V = p.shape[1]
        dist = torch.zeros(k + 1, V, dtype=torch.float64)
        reach = 1.0
        for j in range(k):
            x = int(draft_tokens[d0 + j])
            acc = _accept_prob(float(p[j, x]), float(q[j, x]))
            dist[j] = reach * (1 - acc) * _residual(p[j], q[j])
            reach *= acc
        dist[k] = reach * p[k]
        res.append(dist)
    return res


def _children(par, nn):
    """Children of each node of one request, in increasing index order."""
    ch = [[] for _ in range(nn)]
    for c in range(1, nn):
        if 0 <= par[c] < nn and par[c] != c:
            ch[par[c]].append(c)
    return ch


def _tree_request(target_logits, tree_tokens, tree_parents, draft_probs, cu, i, temps, tks, tps):
    n0, nn = cu[i], cu[i + 1] - cu[i]
    p = target_probs(target_logits[n0:n0 + nn].cpu().float(), float(temps[i]), tks[i], tps[i])
    q = draft_probs[n0:n0 + nn].cpu().double()
    toks = [int(t) for t in tree_tokens[n0:n0 + nn].cpu().tolist()]
    ch = _children([int(x) for x in tree_parents[n0:n0 + nn].cpu().tolist()], nn)
    return p, q, toks, ch


def tree_sampled_outcome_tensors(target_logits, tree_tokens, tree_parents, draft_probs, cu_num_nodes,
                                 temperature=1.0, top_k=None, top_p=None):
    """Exact outcome distribution of :func:`jitkern.ops.speculative.verify_tree_sampled`, float64:
    per request a dict ``{path: probs [V]}`` with ``path`` the accepted node indices (relative,
    root first) and ``probs[y]`` = P(that path is accepted, then y is emitted); all sum to 1."""
    cu = [int(x) for x in cu_num_nodes.cpu().tolist()]
    b = len(cu) - 1
    temps, tks, tps = _per_request(temperature, b), _per_request(top_k, b), _per_request(top_p, b)
    res = []
    for i in range(b):
        p, q, toks, ch = _tree_request(target_logits, tree_tokens, tree_parents, draft_probs, cu, i, temps, tks, tps)
        out = {}

        def walk(node, reach, path):
            w = p[node]
            for c in ch[node]:
                x = toks[c]
                a = _accept_prob(float(w[x]), float(q[c, x])) if 0 <= x < w.numel() else 0.0
                if a > 0:
                    walk(c, reach * a, path + (c,))
                reach *= 1 - a
                if reach == 0:
                    return
                w = _residual(w, q[c])
            out[path] = out.get(path, 0.0) + reach * w

        walk(0, 1.0, (0,))
        res.append(out)
    return res


def tree_sampled_outcome_probs(target_logits, tree_tokens, tree_parents, draft_probs, cu_num_nodes,
                               temperature=1.0, top_k=None, top_p=None):
    """:func:`tree_sampled_outcome_tensors` as ``{(path, y): probability}`` over the outcomes of
    positive probability (small vocabularies)."""
    res = []
    for d in tree_sampled_outcome_tensors(target_logits, tree_tokens, tree_parents, draft_probs, cu_num_nodes,
                                          temperature, top_k, top_p):
        res.append({(path, y): float(w[y]) for path, w in d.items() for y in torch.nonzero(w > 0).view(-1).tolist()})
    return res


def verify_tree_sampled(target_logits, tree_tokens, tree_parents, draft_probs, cu_num_nodes, temperature=1.0,
                        top_k=None, top_p=None, max_depth=None, generator=None):
    """CPU reference implementation of :func:`jitkern.ops.speculative.verify_tree_sampled`
    (same walk, float64, random numbers from ``generator``; the same distribution, not the same
    draws). Returns ``(accepted [b], out_tokens [b, max_depth + 1], path [b, max_depth + 1])`` int32."""
    cu = [int(x) for x in cu_num_nodes.cpu().tolist()]
    b = len(cu) - 1
    temps, tks, tps = _per_request(temperature, b), _per_request(top_k, b), _per_request(top_p, b)
    cols = (max(0, min(cu[-1], 256) - 1) if max_depth is None else max_depth) + 1
    acc = torch.full((b,), -1, dtype=torch.int32)
    out = torch.full((b, cols), -1, dtype=torch.int32)
    path = torch.full((b, cols), -1, dtype=torch.int32)
    for i in range(b):
        p, q, toks, ch = _tree_request(target_logits, tree_tokens, tree_parents, draft_probs, cu, i, temps, tks, tps)
        node, pth = 0, [0]
        while True:
            w, nxt = p[node], None
            for c in ch[node]:
                x = toks[c]
                a = _accept_prob(float(w[x]), float(q[c, x])) if 0 <= x < w.numel() else 0.0
                if float(torch.rand((), generator=generator, dtype=torch.float64)) < a:
                    nxt = c
                    break
                w = _residual(w, q[c])
            if nxt is None:
                y = int(torch.multinomial(w, 1, generator=generator))
                break
            node = nxt
            pth.append(node)
        if len(pth) > cols:
            continue
        acc[i] = len(pth) - 1
        path[i, :len(pth)] = torch.tensor(pth, dtype=torch.int32)
        out[i, :len(pth) - 1] = torch.tensor([toks[c] for c in pth[1:]], dtype=torch.int32)
        out[i, len(pth) - 1] = y
    return acc, out, path


def markov_logits(base_t, h, w_out):
    """The exact greedy Markov logits, float32 [b, V] (the kernel's definition, bit for bit):
    ``acc = 0; acc = acc + w_out[:, c] * h[:, c]`` for c = 0..r-1 in increasing order, each
    product rounded to fp32 on its own (bf16 x bf16 products are exact unless they leave fp32's
    range) and never fused with the add, then ``base + acc``. base_t [b, V], h [b, r] and
    w_out [V, r] hold bf16-representable values (any float dtype)."""
    wt = w_out.float().t().contiguous()            # [r, V]
    h = h.float()
    acc = torch.zeros(base_t.shape, dtype=torch.float32, device=base_t.device)
    for c in range(wt.shape[0]):
        acc = acc + wt[c].unsqueeze(0) * h[:, c:c + 1]
    return base_t.float() + acc


def markov_draft_greedy(base_logits, first_prev, w_in, w_out):
    """Oracle for greedy :func:`jitkern.ops.speculative.markov_draft`: logits by
    :func:`markov_logits`, next = torch.argmax (lowest index on ties, NaN wins), repeat.
    int32 [b, k]."""
    b, k, V = base_logits.shape
    prev = first_prev.long().clone()
    out = torch.empty(b, k, dtype=torch.int32, device=base_logits.device)
    for t in range(k):
        prev = torch.argmax(markov_logits(base_logits[:, t], w_in[prev], w_out), -1)
        out[:, t] = prev.int()
    return out


def torch_markov_draft(base_logits, first_prev, w_in, w_out):
    """What a user writes without a kernel (the bench's peer): one fp32 matmul per position.
    Its summation order is cuBLAS's, so near ties may break differently from the oracle."""
    b, k, V = base_logits.shape
    prev = first_prev.long().clone()
    out = torch.empty(b, k, dtype=torch.int32, device=base_logits.device)
    wo = w_out.float()
    for t in range(k):
        logits = base_logits[:, t].float() + w_in[prev].float() @ wo.t()
        prev = torch.argmax(logits, -1)
        out[:, t] = prev.int()
    return out


def markov_step_probs(base_logits, prev_tokens, first_prev, w_in, w_out, temperature):
    """float64 softmax of position t's logits given the kernel's own previous tokens, [b, k, V]."""
    b, k, V = base_logits.shape
    prev = torch.cat([first_prev.long().view(b, 1), prev_tokens[:, :-1].long()], 1)   # [b, k]
    h = w_in[prev].double()                         # [b, k, r]
    logits = base_logits.double() + h @ w_out.double().t()
    return torch.softmax(logits / temperature, -1)


def select_draft_length(confidence_logits, threshold):
    """Longest prefix with sigmoid(c) >= threshold, per row (int32 [b])."""
    ok = torch.sigmoid(confidence_logits.float()) >= threshold
    return torch.cumprod(ok.int(), dim=1).sum(1).int()


# ---- plain PyTorch peers for the bench (uniform k, [b, k+1, V] logits) --------------------------

def torch_verify_greedy(logits, drafts):
    """What a user writes without a kernel: argmax / compare / cumprod. logits [b, k+1, V], drafts [b, k]."""
    am = logits.argmax(-1)
    match = (am[:, :-1] == drafts).int()
    acc = match.cumprod(1).sum(1)
    bonus = am.gather(1, acc.unsqueeze(1))
    return acc, bonus


def torch_verify_sampled(logits, drafts, q, temperature=1.0, generator=None, top_k=None, top_p=None):
    """softmax / ratio / residual / multinomial. logits [b, k+1, V], drafts [b, k], q [b, k, V].
    top_k / top_p as a user writes them (topk mask, then a sorted cumulative-mass mask; ties at
    the top-p edge are not kept together, unlike the kernels)."""
    x = logits.float() / temperature
    if top_k is not None:
        x = x.masked_fill(x < x.topk(top_k, -1).values[..., -1:], float("-inf"))
    p = torch.softmax(x, -1)
    if top_p is not None:
        ps, idx = p.sort(-1, descending=True)
        ps = ps.masked_fill(ps.cumsum(-1) - ps >= top_p, 0.0)
        p = torch.zeros_like(p).scatter_(-1, idx, ps)
        p = p / p.sum(-1, keepdim=True)
    b, k = drafts.shape
    px = p[:, :k].gather(2, drafts.unsqueeze(2)).squeeze(2)
    qx = q.gather(2, drafts.unsqueeze(2)).squeeze(2)
    u = torch.rand(b, k, device=logits.device, generator=generator)
    ok = (u * qx < px).int()
    acc = ok.cumprod(1).sum(1)
    resid = (p[:, :k] - q).clamp_min(0)
    resid = torch.cat([resid, p[:, k:]], 1)
    pick = resid.gather(1, acc.view(b, 1, 1).expand(b, 1, p.shape[2])).squeeze(1)
    tok = torch.multinomial(pick, 1, generator=generator)
    return acc, tok
