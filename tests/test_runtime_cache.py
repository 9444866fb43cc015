"""Compiler and disk cache (CPU only: NVRTC compiles for sm_90a without a GPU)."""
import errno
import multiprocessing as mp
import os
import warnings

import pytest

from jitkern.runtime import JitCompileError, KernelSpec, compile_spec
from jitkern.runtime import cache as cache_mod
from jitkern.runtime.cache import DiskCache, cache_key

SMOKE = KernelSpec("test/smoke.cuh", "jitkern::smoke_axpb<4>", family="test")


def test_miss_then_hit(cache_dir):
    c = DiskCache()
    e1, s1 = compile_spec(SMOKE, "sm_90a", c)
    e2, s2 = compile_spec(SMOKE, "sm_90a", DiskCache())  # a fresh process-level view of the same folder
    assert (s1, s2) == ("compiled", "cached")
    assert e1.cubin == e2.cubin and e1.cubin[:4] == b"\x7fELF"
    assert e2.meta["lowered_name"].startswith("_ZN7jitkern10smoke_axpb")
    assert e2.meta["ptxas"]["registers"] > 0
    assert (cache_dir / e1.key[:2] / f"{e1.key}.cubin").is_file()


def test_key_changes_with_every_input(monkeypatch):
    base = cache_key(SMOKE, "sm_90a")
    assert cache_key(KernelSpec("test/smoke.cuh", "jitkern::smoke_axpb<2>"), "sm_90a") != base  # source/name
    assert cache_key(KernelSpec("test/smoke.cuh", "jitkern::smoke_axpb<4>", defines=(("X", "1"),)), "sm_90a") != base
    assert cache_key(SMOKE, "sm_90") != base  # arch
    real = cache_mod.toolchain_versions()
    monkeypatch.setattr(cache_mod, "toolchain_versions", lambda: {**real, "nvrtc": "99.9"})
    assert cache_key(SMOKE, "sm_90a") != base  # NVRTC version
    monkeypatch.undo()
    monkeypatch.setattr(cache_mod, "template_digest", lambda t: "edited")
    assert cache_key(SMOKE, "sm_90a") != base  # template content
    monkeypatch.undo()
    assert cache_key(SMOKE, "sm_90a") == base  # and it is stable


@pytest.mark.parametrize("damage", ["garbage", "truncate", "missing"])
def test_corrupt_entry_is_recompiled(cache_dir, damage):
    e, _ = compile_spec(SMOKE, "sm_90a", DiskCache())
    path = cache_dir / e.key[:2] / f"{e.key}.cubin"
    if damage == "garbage":
        path.write_bytes(b"\x00" * len(e.cubin))
    elif damage == "truncate":
        path.write_bytes(e.cubin[: len(e.cubin) // 2])
    else:
        path.unlink()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        e2, status = compile_spec(SMOKE, "sm_90a", DiskCache())
    assert status == "compiled" and e2.cubin == e.cubin
    if damage != "missing":
        assert any("corrupt" in str(x.message) for x in w)
    assert path.read_bytes() == e.cubin


def _worker(args):
    cache_root, barrier = args
    os.environ["JITKERN_CACHE_DIR"] = cache_root
    spec = KernelSpec("test/smoke.cuh", "jitkern::smoke_axpb<3>", defines=(("JK_RACE", "1"),), family="test")
    barrier.wait()
    _, status = compile_spec(spec, "sm_90a", DiskCache())
    return status


def test_four_processes_compile_once(tmp_path):
    ctx = mp.get_context("spawn")
    with ctx.Manager() as m:
        barrier = m.Barrier(4)
        with ctx.Pool(4) as pool:
            statuses = pool.map(_worker, [(str(tmp_path), barrier)] * 4)
    assert sorted(statuses) == ["cached", "cached", "cached", "compiled"]


def test_unusable_dir_degrades_to_memory(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("JITKERN_CACHE_DIR", str(blocker / "cache"))
    c = DiskCache()
    with pytest.warns(RuntimeWarning, match="in memory"):
        e, s1 = compile_spec(SMOKE, "sm_90a", c)
    _, s2 = compile_spec(SMOKE, "sm_90a", c)
    assert (s1, s2) == ("compiled", "cached") and e.cubin[:4] == b"\x7fELF"


@pytest.mark.parametrize("err", [errno.EROFS, errno.ENOSPC])
def test_read_only_or_full_dir_degrades(cache_dir, monkeypatch, err):
    # Root ignores permission bits, so a read-only or full filesystem is simulated at os.open/open.
    real_open = open

    def failing_open(path, mode="r", *a, **k):
        if "w" in mode and str(cache_dir) in str(path):
            raise OSError(err, os.strerror(err), str(path))
        return real_open(path, mode, *a, **k)

    monkeypatch.setattr("builtins.open", failing_open)
    c = DiskCache()
    with pytest.warns(RuntimeWarning, match="not usable"):
        _, s1 = compile_spec(SMOKE, "sm_90a", c)
    _, s2 = compile_spec(SMOKE, "sm_90a", c)
    assert (s1, s2) == ("compiled", "cached")
    assert not list(cache_dir.glob("??/*.cubin")) and not list(cache_dir.glob("??/*.tmp"))


def test_compile_error_carries_log_and_source(cache_dir):
    bad = KernelSpec("test/smoke.cuh", "jitkern::smoke_axpb<no_such_constant>", family="test")
    with pytest.raises(JitCompileError) as ei:
        compile_spec(bad, "sm_90a", DiskCache())
    e = ei.value
    assert "no_such_constant" in e.log and "error" in e.log
    assert os.path.isfile(e.source_path) and "smoke.cuh" in open(e.source_path).read()
    assert e.kernel_name == bad.name and e.source_path in str(e)


def test_unknown_arch_rejected():
    from jitkern.runtime import target_for_arch
    with pytest.raises(ValueError, match="arch"):
        target_for_arch("sm_80")


def test_template_digest_covers_included_headers_only(tmp_path, monkeypatch):
    from jitkern.runtime import render
    (tmp_path / "common").mkdir()
    (tmp_path / "fam").mkdir()
    (tmp_path / "common" / "c.cuh").write_text("// common\n")
    (tmp_path / "fam" / "k.cuh").write_text("// kernel\n")
    monkeypatch.setattr(render, "templates_dir", lambda: tmp_path)
    digest = render.template_digest.__wrapped__
    d0 = digest("fam/k.cuh")
    (tmp_path / "fam" / "NOTES.md").write_text("measurements\n")
    assert digest("fam/k.cuh") == d0  # notes beside a template do not invalidate the cache
    (tmp_path / "common" / "c.cuh").write_text("// common, edited\n")
    d1 = digest("fam/k.cuh")
    assert d1 != d0
    (tmp_path / "fam" / "k.cuh").write_text("// kernel, edited\n")
    d2 = digest("fam/k.cuh")
    assert d2 != d1
    # a sibling template is covered once (and only while) the kernel includes it
    (tmp_path / "fam" / "other.cuh").write_text("// sibling\n")
    assert digest("fam/k.cuh") == d2
    (tmp_path / "fam" / "part.cuh").write_text("// part\n")
    (tmp_path / "fam" / "k.cuh").write_text('#pragma once\n#if 0\n  #include "fam/part.cuh"\n#endif\n')
    d3 = digest("fam/k.cuh")
    (tmp_path / "fam" / "part.cuh").write_text("// part, edited\n")
    assert digest("fam/k.cuh") != d3
    (tmp_path / "fam" / "other.cuh").write_text("// sibling, edited\n")
    d4 = digest("fam/k.cuh")
    (tmp_path / "fam" / "other.cuh").write_text("// sibling, edited again\n")
    assert digest("fam/k.cuh") == d4


def test_ptxas_summary_flags_serialized_wgmma():
    from jitkern.runtime.cache import _ptxas_summary
    log = ("ptxas info    : (C7511) Potential Performance Loss: wgmma.mma_async instructions are serialized due to "
           "insufficient register resources for the wgmma pipeline in the function '_Z1kv'\n"
           "ptxas info    : Used 168 registers\nptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n")
    s = _ptxas_summary(log)
    assert s["wgmma_serialized"] is True and s["registers"] == 168 and s["spill_stores"] == 0
    assert _ptxas_summary(log.split("\n", 1)[1])["wgmma_serialized"] is False


def test_serialized_wgmma_falls_back_to_the_named_defines(cache_dir, monkeypatch):
    # A spec whose first build ptxas reports as serialised is rebuilt with its fallback macros;
    # both builds stay cached and later lookups land on the rebuilt one.
    import dataclasses
    real = cache_mod._ptxas_summary
    monkeypatch.setattr(cache_mod, "_ptxas_summary", lambda log: {**real(log), "wgmma_serialized": True})
    spec = dataclasses.replace(SMOKE, serialized_fallback=(("JITKERN_RETRY", "1"),))
    first, _ = compile_spec(spec, "sm_90a")  # flagged: the fallback is built too (and flagged, no loop)
    assert "-DJITKERN_RETRY=1" in first.meta["options"]
    monkeypatch.setattr(cache_mod, "_ptxas_summary", real)
    plain, _ = compile_spec(SMOKE, "sm_90a")
    assert "-DJITKERN_RETRY=1" not in plain.meta["options"] and plain.key != first.key
    again, status = compile_spec(spec, "sm_90a")
    assert status == "cached" and again.key == first.key
