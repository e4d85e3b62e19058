"""The device-aware system, tested on the CPU.

A GPU run is the only full test of CUDA placement; what the CPU can check is checked here:
every method computes on the device it is given and creates no tensor on the *default*
device (a user who calls ``torch.set_default_device("cuda")`` must not get half a system
there), the environment fingerprint names the GPU/CUDA/cuDNN and the precision, unlearning
refuses a retrain in another environment, bf16 finetuning is deterministic and recorded.
"""
import json

import pytest
import torch

from clamu_helpers import UnlearningSystem
from clamu_helpers.runtime.determinism import fingerprint, fingerprint_of
from clamu_helpers.runtime.device import PRECISIONS, autocast, module_device, prepare_cuda, resolve, tensor_devices
from clamu_helpers.core.errors import DeviceError, ExactnessError, StateError
from clamu_helpers.training.finetune import finetune
from clamu_helpers.methods import METHODS
from clamu_helpers.settings import get_setting
from clamu_helpers.settings.base import FinetuneConfig


@pytest.fixture(scope="module")
def tiny6():
    s = get_setting("synthetic", "smoke", 0, tasks=6)
    s.theta0  # build M0 outside the default-device context below
    return s


@pytest.mark.parametrize("name", sorted(METHODS))
def test_no_tensor_is_created_on_the_default_device(tiny6, name):
    """Fit, unlearn, evaluate and digest with the default device set to ``meta``: a tensor made
    without an explicit device would land there and fail (meta tensors hold no data) or show up
    in the check that everything the system holds is on the requested device."""
    params = dict(METHODS[name].test_params)
    if METHODS[name].clustered:
        params.setdefault("clusters", 2)
    with torch.device("meta"):
        system = UnlearningSystem(tiny6, name, seed=0, device="cpu", **params).fit()
        system.unlearn([tiny6.task_ids[1]])
        acc = system.evaluate("val")
        digest = system.served_digest()
        model = system.model_for(tiny6.task_ids[0])
    assert tensor_devices(system) == {"cpu"}
    assert module_device(model) == torch.device("cpu")
    assert acc[tiny6.metric_name].notna().all()
    reference = UnlearningSystem(tiny6, name, seed=0, **params).fit()
    reference.unlearn([tiny6.task_ids[1]])
    assert digest == reference.served_digest()   # the default device changed nothing


def test_resolve_names_what_is_wrong():
    assert resolve(None) == torch.device("cpu") == resolve("cpu")
    with pytest.raises(DeviceError, match="not a device"):
        resolve("gpu0")
    with pytest.raises(DeviceError, match="not supported"):
        resolve("meta")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            resolve("cuda")
        with pytest.raises(DeviceError, match="CUDA is not available"):
            UnlearningSystem(get_setting("synthetic", "smoke", 0, tasks=2), "merge", device="cuda:0")


def test_system_reports_and_fingerprints_its_device(tiny):
    system = UnlearningSystem(tiny, "merge", device="cpu")
    assert system.device == torch.device("cpu") == tiny.device
    assert system.fingerprint == fingerprint(tiny.finetune_config.threads, "cpu", "float32")
    assert system.report()["device"] == "cpu"


def test_cuda_fingerprint_names_gpu_cuda_and_cudnn(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA H200")
    monkeypatch.setattr(torch.backends.cudnn, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 91002)
    prepare_cuda()   # what resolve("cuda") does: deterministic cuDNN, TF32 off
    fp = fingerprint(1, "cuda:0", "bf16")
    assert fp["device"] == "cuda:0" and fp["gpu"] == "NVIDIA H200" and fp["cudnn"] == 91002
    assert fp["cuda"] == torch.version.cuda and fp["dtype"] == "bf16" and fp["tf32"] is False
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA A100-SXM4-80GB")
    assert fingerprint(1, "cuda:0", "bf16")["gpu"] != fp["gpu"]


def test_unlearning_refuses_a_retrain_in_another_environment(tiny):
    system = UnlearningSystem(tiny, "merge", device="cpu").fit()
    before = system.served_digest()
    system.fingerprint = {**system.fingerprint, "device": "cuda:0", "gpu": "NVIDIA A100-SXM4-80GB"}
    with pytest.raises(ExactnessError, match=r"gpu: merged with 'NVIDIA A100-SXM4-80GB', here None") as e:
        system.unlearn([tiny.task_ids[0]])
    assert "device: merged with 'cuda:0', here 'cpu'" in str(e.value)
    assert system.served_digest() == before and not system.unlearned and system.unlearn_costs.gradient_steps == 0


def test_cpu_fingerprint_records_the_kernel_family():
    """On the CPU the fingerprint names the kernels torch will pick: ATen's capability, the
    vendor and instruction-set flags, BLAS and oneDNN; short, stable, and equal after JSON."""
    from clamu_helpers.runtime.determinism import KERNEL_FLAGS, cpu_kernels
    fp = fingerprint(1, "cpu", "float32")
    assert fp["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    flags = fp["cpu_flags"]
    assert flags is None or (flags == sorted(flags) and set(flags) <= KERNEL_FLAGS)
    assert set(cpu_kernels()) == {"cpu_capability", "cpu_vendor", "cpu_flags", "blas", "onednn"} <= set(fp)
    if torch.backends.mkl.is_available():
        assert fp["blas"].startswith("mkl")
    assert json.loads(json.dumps(fp)) == fp == fingerprint(1, "cpu", "float32")   # stable: nothing that ticks
    assert "cpu_capability" not in fingerprint(1, "cuda:0", "float32")            # a GPU fingerprint has its own


def test_cpuinfo_parsing_keeps_only_kernel_deciding_flags():
    from clamu_helpers.runtime.determinism import parse_cpuinfo
    x86 = ("processor\t: 0\nvendor_id\t: GenuineIntel\ncpu MHz\t\t: 2100.000\nflags\t\t: fpu sse2 avx avx2 fma "
           "avx512f avx512_bf16 avx512_vnni amx_tile amx_bf16 sha_ni\n\nprocessor\t: 1\nvendor_id\t: GenuineIntel\n"
           "flags\t\t: fpu\n")
    assert parse_cpuinfo(x86) == ("GenuineIntel", ["amx_bf16", "amx_tile", "avx", "avx2", "avx512_bf16",
                                                   "avx512_vnni", "avx512f", "fma"])
    arm = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd sve sve2 bf16 i8mm crc32\nCPU implementer\t: 0x41\n"
    assert parse_cpuinfo(arm) == ("arm:0x41", ["asimd", "bf16", "i8mm", "sve", "sve2"])
    assert parse_cpuinfo("") == (None, None)


def _other_kernels(real: dict) -> dict:
    """The kernel fields of a processor that would pick other kernels than this one."""
    return {**real, "cpu_capability": "AVX512" if real["cpu_capability"] != "AVX512" else "AVX2",
            "cpu_flags": sorted(set(real["cpu_flags"] or []) ^ {"avx512f", "avx512_bf16", "amx_tile"}),
            "cpu_vendor": "GenuineIntel" if real["cpu_vendor"] != "GenuineIntel" else "AuthenticAMD"}


def test_a_retrain_on_a_processor_with_other_kernels_is_refused_before_any_finetune(tiny, monkeypatch):
    from clamu_helpers import determinism, system as system_module
    system = UnlearningSystem(tiny, "merge", device="cpu").fit()
    before, real = system.served_digest(), determinism.cpu_kernels()
    other = _other_kernels(real)
    calls = []
    monkeypatch.setattr(system_module, "run_finetunes", lambda *a, **k: calls.append(a) or {})
    monkeypatch.setattr(determinism, "cpu_kernels", lambda: other)   # this process now "runs" elsewhere
    with pytest.raises(ExactnessError, match="refusing to retrain") as e:
        system.unlearn([tiny.task_ids[0]])
    for field in ("cpu_capability", "cpu_flags", "cpu_vendor"):   # every differing field, both values
        assert f"{field}: merged with {real[field]!r}, here {other[field]!r}" in str(e.value)
    assert "blas" not in str(e.value) and "instruction set" in str(e.value)
    assert not calls and not system.unlearned and system.unlearn_costs.gradient_steps == 0
    assert system.served_digest() == before


def test_a_fingerprint_recorded_before_the_kernel_fields_is_not_a_mismatch(tiny):
    from clamu_helpers.runtime.determinism import cpu_kernels, fingerprint_diff
    here = fingerprint(1, "cpu", "float32")
    old = {k: v for k, v in here.items() if k not in cpu_kernels()}
    assert fingerprint_diff(old, here) == {}                        # not recorded: not compared
    assert set(fingerprint_diff(here, old)) == set(cpu_kernels())   # recorded, missing here: a mismatch
    system = UnlearningSystem(tiny, "merge", device="cpu").fit()
    system.fingerprint = old                                        # as a system saved before them
    recorded = system.ledger.hashes[tiny.task_ids[0]]
    out = system.unlearn([tiny.task_ids[0]])
    assert out["hashes"] == {tiny.task_ids[0]: recorded}
    fresh = UnlearningSystem(tiny, "merge", device="cpu").fit([t for t in tiny.task_ids if t != tiny.task_ids[0]])
    assert system.served_digest() == fresh.served_digest()


def test_saved_state_from_another_device_loads_for_serving_only(tiny, tmp_path):
    system = UnlearningSystem(tiny, "merge", device="cpu").fit()
    system.save(tmp_path / "s")
    state = tmp_path / "s"
    folder = next(p for p in state.iterdir() if p.is_dir() and (p / "state.json").exists())
    meta = json.loads((folder / "state.json").read_text())
    meta["fingerprint"].update(device="cuda:0", gpu="NVIDIA H200")
    (folder / "state.json").write_text(json.dumps(meta))
    with pytest.raises(StateError):   # the checksum or the fingerprint refuses it
        UnlearningSystem.load(state, tiny)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_precision_is_deterministic_recorded_and_part_of_the_key(tiny, precision):
    cfg = FinetuneConfig(**{**tiny.finetune_config.to_json(), "precision": precision})
    task = tiny.task(tiny.task_ids[0])
    a = finetune(tiny, task, seed=3, config=cfg, device="cpu")
    b = finetune(tiny, task, seed=3, config=cfg)
    assert a.digest == b.digest and a.values.dtype == torch.float32 and a.values.device.type == "cpu"
    assert a.meta["fingerprint"] == fingerprint_of(cfg, "cpu") and a.meta["fingerprint"]["dtype"] == precision
    if precision == "bf16":
        f32 = finetune(tiny, task, seed=3)
        assert f32.digest != a.digest   # bf16 autocast really ran


def test_bf16_audit_is_exact(tiny):
    from clamu_helpers.unlearning.audit import audit
    from clamu_helpers.settings.synthetic import SyntheticSetting
    s = SyntheticSetting("smoke", 0, tasks=5, finetune=FinetuneConfig(steps=15, lr=1e-2, batch_size=8,
                                                                      precision="bf16"))
    out = audit(s, "sift", unlearn=2, seed=1)
    assert out["exact"] and out["fingerprint"]["dtype"] == "bf16"


@pytest.mark.parametrize("method", ["clamu", "clamu-supermask"])
def test_bf16_audit_with_masks_is_exact(method):
    """ClAMU's masks optimised under bf16 autocast (the cpu profile's text and author settings):
    the refit after unlearning is the fit that never saw the task, bit for bit."""
    from clamu_helpers.unlearning.audit import audit
    from clamu_helpers.settings.synthetic import SyntheticSetting
    s = SyntheticSetting("smoke", 0, tasks=5, finetune=FinetuneConfig(steps=15, lr=1e-2, batch_size=8,
                                                                      precision="bf16"))
    out = audit(s, method, unlearn=2, seed=1)
    assert out["exact"] and out["fingerprint"]["dtype"] == "bf16"


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be one of"):
        FinetuneConfig(precision="fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        autocast(torch.device("cpu"), "half")


def test_audit_cli_takes_device_and_precision(capsys):
    from clamu_helpers.__main__ import main
    assert main(["audit", "--setting", "synthetic", "--device", "cpu", "--precision", "bf16", "--method", "merge",
                 "--unlearn", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["exact"] and out["device"] == "cpu" and out["fingerprint"]["dtype"] == "bf16"
    if not torch.cuda.is_available():
        assert main(["audit", "--setting", "synthetic", "--device", "cuda", "--unlearn", "1"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err


def test_gpu_profile_script_checks_exactness_at_toy_size(tmp_path):
    """benchmarks/gpu_paper_profile.py is the script a GPU machine runs; at toy size on the CPU
    it must audit through the device-aware system, retrain in a second process and time."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_paper_profile.py"
    spec = importlib.util.spec_from_file_location("gpu_paper_profile", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "r.json"
    assert mod.main(["--tiny", "--device", "cpu", "--tasks", "3", "--unlearn", "1", "--steps", "2",
                     "--only", "gpt2-lm", "--methods", "sift", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    m = r["models"]["gpt2-lm"]
    assert r["all_exact"] and m["audits"]["sift"]["exact"] and m["second_process_retrain"]["equal"]
    assert m["finetune_s_per_step_float32"] > 0 and m["finetune_s_per_step_bf16"] > 0 and m["mask_s_per_step"] > 0


def test_bf16_benchmark_measures_at_toy_size(tmp_path):
    """benchmarks/bench_bf16.py (the bf16-vs-float32 measurement of the text and authors
    settings) at toy size: bf16 really changes τ_t, each precision repeats its bits, and the
    per-task rows and the 1-point verdict are written."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_bf16.py"
    spec = importlib.util.spec_from_file_location("bench_bf16", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--settings", "synthetic", "--profile", "smoke", "--tasks", "2", "--seeds", "0",
                     "--repeat", "2", "--out", str(tmp_path)]) == 0
    r = json.loads((tmp_path / "bench_bf16.json").read_text())
    s = r["summary"]["synthetic"]
    assert s["tasks"] == 2 and s["deterministic"] and (tmp_path / "bench_bf16.csv").exists()
    assert 0 < s["tau_rel_change_min"] and s["tau_rel_change_max"] < 0.5   # bf16 ran, and stayed close
    assert 0.5 < s["sign_agreement_min"] <= 1 and s["speedup_median"] > 0
    assert isinstance(s["within_1_point_mean"], bool) and s["flips"] <= s["test_examples"]


def test_auto_precision_is_bf16_only_where_the_processor_has_it(monkeypatch):
    """A profile's "auto": bf16 with avx512_bf16 or amx_bf16, float32 without (emulated bf16 is
    slower than float32); $CLAMU_PRECISION overrides it, and a bad value is named."""
    from clamu_helpers.runtime import determinism, precision
    from clamu_helpers.runtime.precision import AUTO, native_bf16, resolve_precision
    monkeypatch.delenv("CLAMU_PRECISION", raising=False)
    real = determinism.cpu_kernels()
    for flags, want in ((["avx2", "avx512f", "avx512_bf16"], "bf16"), (["amx_bf16", "avx2"], "bf16"),
                        (["avx2", "avx512f"], "float32"), (None, "float32")):
        monkeypatch.setattr(precision, "cpu_kernels", lambda flags=flags: {**real, "cpu_flags": flags})
        assert native_bf16() is (want == "bf16") and resolve_precision(AUTO) == want
        assert resolve_precision("float32") == "float32" and resolve_precision("bf16") == "bf16"
    monkeypatch.setenv("CLAMU_PRECISION", "bf16")
    assert resolve_precision(AUTO) == resolve_precision("float32") == "bf16"
    monkeypatch.setenv("CLAMU_PRECISION", "half")
    with pytest.raises(ValueError, match="CLAMU_PRECISION must be one of"):
        resolve_precision(AUTO)


def test_cpu_profile_text_and_authors_finetune_in_the_resolved_precision(monkeypatch):
    """The cpu profile declares "auto" for text and authors (smoke stays float32), a setting's
    finetunes take the resolved precision, and ClAMU's masks take the setting's."""
    from clamu_helpers.settings import authors, text
    from clamu_helpers.runtime.precision import AUTO
    from clamu_helpers.methods.clamu import Clamu as ClAMU
    assert text.PROFILE_SIZES["cpu"].precision == AUTO == authors.PROFILE_SIZES["cpu"].precision
    assert text.PROFILE_SIZES["smoke"].precision == "float32" == authors.PROFILE_SIZES["smoke"].precision
    monkeypatch.delenv("CLAMU_PRECISION", raising=False)
    assert get_setting("fictitious-authors", "smoke", 0, tasks=2, progress=False).finetune_config.precision == "float32"
    monkeypatch.setenv("CLAMU_PRECISION", "bf16")
    s = get_setting("fictitious-authors", "smoke", 0, tasks=2, progress=False)
    assert s.finetune_config.precision == "bf16"
    ctx = type("Ctx", (), {"setting": s, "seed": 0})()
    method = ClAMU()
    seen = {}
    monkeypatch.setattr("clamu_helpers.methods.clamu.MaskRun", lambda st, target, data, cfg, g: seen.setdefault("cfg", cfg))
    monkeypatch.setattr(ClAMU, "group_data", lambda self, ctx, ids, split: None)
    method._run(ctx, ("a000",), None, 1.0, 1.0, 3, None)
    assert seen["cfg"].precision == "bf16" and seen["cfg"].threads == s.finetune_config.threads


def test_report_names_the_precision_it_ran(monkeypatch):
    from clamu_helpers.reproduction.reproduce import precision_line
    monkeypatch.setenv("CLAMU_PRECISION", "float32")
    assert precision_line("cpu") == "- **Precision**: float32 everywhere (the profile's \"auto\" resolved to float32: " \
                                    "this processor has no native bfloat16)."
    monkeypatch.setenv("CLAMU_PRECISION", "bf16")
    line = precision_line("cpu")
    assert "bfloat16 autocast for text and authors" in line and "every evaluation in float32" in line
    monkeypatch.delenv("CLAMU_PRECISION")
    assert precision_line("smoke") == "- **Precision**: float32 everywhere."
