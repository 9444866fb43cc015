"""CLI on a machine with no GPU: compile-only warmup of the whole preset (every template compiles
for sm_90a), cache list/stats/verify/clear, doctor, manifests."""
import json
import subprocess
import sys


from jitkern.cli import main


def _run(*argv):
    return subprocess.run([sys.executable, "-m", "jitkern.cli", *argv], capture_output=True, text=True)


def test_warmup_preset_compiles_everything_then_hits_cache(cache_dir, tmp_path, capsys):
    out = tmp_path / "w.json"
    assert main(["warmup", "--preset", "deepseek-v3", "--arch", "sm_90a", "--no-progress", "--json", str(out)]) == 0
    first = json.loads(out.read_text())
    s = first["summary"]
    assert s["failed"] == 0 and s["compiled"] == len(first["records"]) > 0
    assert {r["family"] for r in first["records"]} >= {"quant"}
    assert main(["warmup", "--preset", "deepseek-v3", "--arch", "sm_90a", "--no-progress", "--json", str(out)]) == 0
    second = json.loads(out.read_text())["summary"]
    assert second["cached"] == s["compiled"] and second["compiled"] == 0
    capsys.readouterr()
    assert main(["cache", "verify"]) == 0
    # a rebuilt spec (serialised wgmma, see KernelSpec.serialized_fallback) leaves both builds cached
    assert f"{s['compiled'] + s['rebuilt']} ok, 0 corrupt" in capsys.readouterr().out
    assert main(["cache", "list"]) == 0
    listing = capsys.readouterr().out
    assert "quant_token_group" in listing and "quant_block" in listing
    # damage one cubin: verify reports it and fails; --fix removes it
    victim = next(cache_dir.glob("??/*.cubin"))
    victim.write_bytes(b"junk")
    assert main(["cache", "verify"]) == 1
    assert main(["cache", "verify", "--fix"]) == 0
    assert not victim.exists()
    assert main(["cache", "clear"]) == 0
    assert not list(cache_dir.glob("??/*.cubin"))


def test_manifest_yaml_and_unknown_family(cache_dir, tmp_path):
    m = tmp_path / "shapes.yaml"
    m.write_text("quant:\n  - {dtype: float32, kinds: [block]}\n")
    r = _run("warmup", "--manifest", str(m), "--arch", "sm_90a", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "compiled 1, cached 0, failed 0" in r.stdout
    m.write_text('{"nonsense": []}')
    m2 = tmp_path / "shapes.json"
    m2.write_text('{"nonsense": []}')
    r = _run("warmup", "--manifest", str(m2), "--arch", "sm_90a")
    assert r.returncode != 0 and "unknown family 'nonsense'" in r.stderr


def test_warmup_without_gpu_needs_arch(cache_dir):
    r = _run("warmup", "--preset", "deepseek-v3")
    assert r.returncode != 0 and "--arch sm_90a" in r.stderr


def test_warmup_rejects_unknown_arch(cache_dir):
    r = _run("warmup", "--arch", "sm_80")
    assert r.returncode != 0 and "arch" in r.stderr


def test_doctor_and_stats(cache_dir):
    r = _run("doctor")
    assert r.returncode == 0, r.stderr
    assert "nvidia-cutlass" in r.stdout and "smoke compile for sm_90a" in r.stdout
    r = _run("cache", "stats")
    assert r.returncode == 0 and "entries:" in r.stdout
