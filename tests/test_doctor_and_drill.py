"""Issue 29's install and drill plumbing on a CPU machine: `slmrec doctor` tries each part for real and flags a
broken install; scripts/setup.sh picks exactly one ONNX Runtime by the GPU it sees; benchmarks/gpu_drill.sh without a
GPU checks that every command it plans parses, says so in one line and exits 0."""

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import run_cli

ROOT = Path(__file__).resolve().parents[1]


def test_doctor_runs_every_cpu_path_for_real(capsys):
    code, out, _ = run_cli(["doctor", "--device", "cpu", "--json"], capsys)
    assert code == 0
    result = json.loads(out)
    status = {c["check"]: c["status"] for c in result["checks"]}
    assert result["devices"] == ["cpu"] and result["problems"] == 0
    assert status["ort CPU provider"] == "ok"  # a real session ran a MatMul
    assert status["bnb int8 on cpu"] == "ok" and status["bnb nf4 on cpu"] == "ok"


def test_doctor_flags_two_onnxruntimes_and_a_gpu_without_cuda_provider(monkeypatch, capsys):
    from slmrec_cli.stages import doctor

    monkeypatch.setattr(doctor, "installed", lambda dist: "1.0" if dist.startswith("onnxruntime") else None)
    checks = doctor.ort_checks(["cpu"])
    assert [c["status"] for c in checks] == ["problem"] and "both onnxruntime" in checks[0]["detail"]

    monkeypatch.setattr(doctor, "installed", lambda dist: "1.32" if dist == "onnxruntime" else None)
    gpu = {c["check"]: c for c in doctor.ort_checks(["cpu", "cuda:0"])}  # a GPU seen by torch, a CPU-only ORT
    assert gpu["ort CUDA provider"]["status"] == "problem"
    assert "SLMREC_EXTRAS=gpu" in gpu["ort CUDA provider"]["detail"]
    assert {c["check"]: c for c in doctor.ort_checks(["cpu"])}["ort CUDA provider"]["status"] == "info"

    monkeypatch.setattr(doctor, "installed", lambda dist: "1.0" if dist.startswith("onnxruntime") else
                        __import__("importlib.metadata").metadata.version(dist))
    code, _, err = run_cli(["doctor", "--device", "cpu"], capsys)
    assert code == 1 and "doctor: 1 problem(s): onnxruntime" in err


def setup_plan(tmp_path: Path, gpu: bool | None, **env) -> subprocess.CompletedProcess:
    """scripts/setup.sh's commands (dry run) with a fake nvidia-smi that sees a GPU, sees none, or is absent."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    smi = bin_dir / "nvidia-smi"
    if gpu is not None:
        smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)'\n" if gpu else
                       "#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2; exit 9\n")
        smi.chmod(0o755)
    path = f"{bin_dir}:{os.environ['PATH']}" if gpu is not None else os.environ["PATH"]
    return subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh")], capture_output=True, text=True,
                          env={**os.environ, "PATH": path, "SLMREC_SETUP_DRY_RUN": "1", **env})


def test_setup_picks_one_onnxruntime_by_the_gpu_it_sees(tmp_path):
    cpu = setup_plan(tmp_path, gpu=False)
    assert cpu.returncode == 0 and "-e .[cpu,gguf,quant,dev]" in cpu.stdout and "torch==2.13.0" in cpu.stdout
    gpu = setup_plan(tmp_path, gpu=True, SLMREC_TORCH="2.13.0")
    assert gpu.returncode == 0 and "-e .[gpu,gguf,quant,dev]" in gpu.stdout
    if importlib.util.find_spec("onnxruntime") is not None:  # the CPU build here: removed, then the GPU one forced
        assert "uninstall --quiet -y onnxruntime" in gpu.stdout
        assert "--force-reinstall --no-deps onnxruntime-gpu" in gpu.stdout
    chosen = setup_plan(tmp_path, gpu=True, SLMREC_EXTRAS="cpu,dev")
    assert "-e .[cpu,dev]" in chosen.stdout
    both = setup_plan(tmp_path, gpu=None, SLMREC_EXTRAS="gpu,quant,cpu")
    assert both.returncode == 2 and "not both" in both.stderr and both.stdout == ""


def drill():
    spec = importlib.util.spec_from_file_location("gpu_drill", ROOT / "benchmarks" / "gpu_drill.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_drill_without_a_gpu_checks_its_plumbing_in_one_line(tmp_path):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\nexit 9\n")
    smi.chmod(0o755)
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_drill.sh")], capture_output=True, text=True,
                          env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("\n") == 1 and "no CUDA GPU here" in proc.stdout and "every command parsed" in proc.stdout


def test_gpu_drill_plan_covers_every_path_and_a_bad_option_fails_the_plumbing(tmp_path):
    module = drill()
    plan = module.plan(tmp_path, 40)
    names = " | ".join(name for name, _ in plan)
    for path in ("teacher 8 layers bf16", "teacher fp16", "8-bit", "4-bit", "prune-probe", "cached teacher",
                 "live teacher", "evaluate 8bit", "evaluate 4bit", "export every variant", "bench-only"):
        assert path in names
    assert {f"recommend {v}" for v in module.VARIANTS} <= {name for name, _ in plan}
    module.parse_only(plan)
    with pytest.raises(SystemExit, match="no such option|No such option"):
        module.parse_only([("bad", ["export", "--bench-only", "x", "--no-such-option"])])
    with pytest.raises(SystemExit, match="no command"):
        module.parse_only([("bad", ["no-such-stage"])])


def test_gpu_drill_writes_its_tables(tmp_path):
    module = drill()
    result = {"device": "NVIDIA H100", "paths": [{"path": "doctor", "status": "PASS", "seconds": 3.0, "why": ""}],
              "numbers": {"seconds_per_step": {"t8": 0.031, "s4": 0.017, "t-fp16": None},
                          "bench": [{"variant": "onnx-fp32", "runtime": "ort", "provider": "cuda", "batch": 512,
                                     "users_per_s": 90000.0, "p50_ms": 5.6, "p95_ms": 6.0}],
                          "ort_placement": {"onnx-int8": {"CPUExecutionProvider": 12}}}}
    text = module.markdown(result)
    assert "| doctor | PASS | 3.0 |" in text and "t8 0.031, s4 0.017" in text and "t-fp16" not in text
    assert "| onnx-fp32 | ort | cuda | 512 | 90000 | 5.60 | 6.00 |" in text and "CPUExecutionProvider" in text


def test_gpu_drill_reads_what_the_stages_write(tmp_path):
    """numbers() reads the keys slmrec writes: efficiency.json's train_seconds_per_step, bench.json's results and
    ort_cuda_placement (as stages/export.run_bench names them)."""
    module = drill()
    (tmp_path / "runs" / "t8").mkdir(parents=True)
    (tmp_path / "runs" / "t8" / "efficiency.json").write_text(json.dumps({"train_seconds_per_step": 0.03}))
    (tmp_path / "exports" / "s4").mkdir(parents=True)
    bench = {"results": [{"variant": "onnx-fp32", "runtime": "ort", "provider": "cuda", "batch": 1, "users_per_s": 9.0,
                          "p50_ms": 1.0, "p95_ms": 2.0, "calls": 3}],
             "ort_cuda_placement": {"onnx-int8": {"nodes": 10, "elsewhere": 4}}}
    (tmp_path / "exports" / "s4" / "bench.json").write_text(json.dumps(bench))
    got = module.numbers(tmp_path)
    assert got["seconds_per_step"]["t8"] == 0.03 and got["seconds_per_step"]["s4"] is None
    assert got["bench"][0]["users_per_s"] == 9.0 and got["ort_placement"] == bench["ort_cuda_placement"]
