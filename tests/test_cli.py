"""The ``canonc`` command end to end, and the bad-input suite (issue 9 point 2).

Every bad input must give exit code 2 or 3, exactly one line on stderr naming the problem
and the fix, no traceback, no output file (not even a temp leftover), and an unchanged
input file. The CLI runs in-process (``canonc.cli.main``) unless a fresh process matters.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from unittest import mock

import pytest
import torch
import torch.serialization
from safetensors.torch import load_file, save_file

from canonc.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

NET_PY = '''
import torch
import torch.nn.functional as F
from torch import nn

INPUT_SHAPE = (1, 3, 12, 12)


class Net(nn.Module):
    def __init__(self, track=True):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4, track_running_stats=track)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(4, track_running_stats=track)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = F.relu(self.bn(self.conv(x)))
        y = y + self.bn2(self.conv2(y))
        return self.fc(y.mean((2, 3)))


def wild(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d) and m.track_running_stats:
                m.running_mean.copy_(torch.randn(4, generator=gen))
                m.running_var.copy_(torch.rand(4, generator=gen) + 0.1)
                m.weight.copy_(torch.randn(4, generator=gen))
                m.bias.copy_(torch.randn(4, generator=gen))
    return model


def build():
    torch.manual_seed(0)
    return wild(Net()).eval()


def build_train():
    return build().train()


def build_half():
    return build().half()


def build_bf16():
    return build().to(torch.bfloat16)


def build_nan():
    model = build()
    model.conv2.weight.data[0, 0, 0, 0] = float("nan")
    return model


def build_inf():
    model = build()
    model.bn.running_var[1] = float("inf")
    return model


def build_no_stats():
    return Net(track=False).eval()


def build_raises():
    raise ValueError("weights server unreachable")


class Pool3d(nn.Module):
    def forward(self, x):
        return F.avg_pool3d(x, 2)


def build_half_pool3d():
    model = nn.Sequential(nn.Conv3d(1, 2, 1), Pool3d()).half()
    model.input_shape = None
    return model


build_half_pool3d.input_shape = (1, 1, 4, 4, 4)


class Gate(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
            return self.conv(x)
        return x


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 3, 1)
        self.gate = Gate()

    def forward(self, x):
        return self.gate(self.stem(x))


def build_untraceable():
    torch.manual_seed(0)
    return Untraceable().eval()
'''

REPORT_KEYS = {"model", "input_shape", "verified", "max_abs_error_fp64", "max_rel_error_fp64", "max_abs_error_fp32",
               "bn_before", "bn_after", "params_before", "params_after", "rewrites", "skipped", "lint", "timings_s"}


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A directory with ``net.py`` (importable as ``net``), as the working directory."""
    (tmp_path / "net.py").write_text(NET_PY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("net", None)
    yield tmp_path
    sys.modules.pop("net", None)


def _net():
    import net

    return net


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp"))


def _refused(capsys, work: Path, code: int, words: tuple[str, ...], *args: str) -> str:
    """Run a bad input; check exit code, one stderr line with ``words``, no output, input unchanged."""
    inputs = [Path(a.split(":")[0]) for a in args if Path(a.split(":")[0]).is_file()]
    hashes = {p: _sha(p) for p in inputs}
    before = {p.name for p in work.iterdir()}
    rc, out, err = _cli(capsys, *args, "-o", "out.pt", "--report", "report.json")
    lines = err.strip().splitlines()
    assert rc == code, err
    assert len(lines) == 1 and lines[0].startswith("canonc: error: "), err
    assert "Traceback" not in err and out == ""
    for word in words:
        assert word.lower() in lines[0].lower(), (word, lines[0])
    assert {p.name for p in work.iterdir()} - before == set()  # no out.pt, no report, no temp file
    assert _leftovers(work) == []
    assert all(_sha(p) == h for p, h in hashes.items())
    return lines[0]


def _output(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


# -- model sources that work --------------------------------------------------------------

def test_factory_source_with_report(work, capsys):
    rc, out, err = _cli(capsys, "net.py:build", "-o", "out.pt", "--report", "report.json")
    assert rc == 0, err
    assert "VERIFIED" in out and err == ""
    report = json.loads((work / "report.json").read_text())
    assert REPORT_KEYS <= report.keys()
    assert report["verified"] is True and report["input_shape"] == [[1, 3, 12, 12]]
    assert (report["bn_before"], report["bn_after"]) == (2, 0) and report["max_rel_error_fp64"] <= 1e-9
    assert report["params_after"] == report["params_before"] - 16
    assert {r["rule"] for r in report["rewrites"]} >= {"merge-left", "modularize", "lift-functional"}
    assert set(report["timings_s"]) >= {"trace", "passes", "verify"}
    canon = torch.load(work / "out.pt", weights_only=False)
    x = torch.randn(2, 3, 12, 12)
    assert not canon.training
    torch.testing.assert_close(_output(canon, x), _output(_net().build(), x), rtol=1e-4, atol=1e-5)
    assert oct((work / "out.pt").stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    assert _leftovers(work) == []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_state_dict_with_arch(work, capsys, suffix):
    model = _net().wild(_net().Net(), seed=5).eval()  # other weights than build() gives
    state = model.state_dict()
    path = work / f"weights{suffix}"
    if suffix == ".pt":
        torch.save(state, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    digest = _sha(path)
    rc, _, err = _cli(capsys, str(path), "--arch", "net.py:build", "-o", "out.pt", "--quiet")
    assert rc == 0, err
    x = torch.randn(1, 3, 12, 12)
    torch.testing.assert_close(_output(torch.load(work / "out.pt", weights_only=False), x), _output(model, x),
                               rtol=1e-4, atol=1e-5)
    assert _sha(path) == digest


def test_trusted_pickle(work, capsys):
    model = _net().build()
    torch.save(model, work / "full.pt")
    rc, _, err = _cli(capsys, "full.pt", "--trust-pickle", "--input-shape", "1,3,12,12", "-o", "out.pt", "--quiet")
    assert rc == 0, err
    x = torch.randn(1, 3, 12, 12)
    torch.testing.assert_close(_output(torch.load(work / "out.pt", weights_only=False), x), _output(model, x),
                               rtol=1e-4, atol=1e-5)
    line = _refused(capsys, work, 2, ("--input-shape",), "full.pt", "--trust-pickle")  # a pickle has no INPUT_SHAPE
    assert "full.pt" in line


_FRESH_LOAD = textwrap.dedent('''
    import importlib.util, pickle, sys
    import torch
    from safetensors.torch import load_file, save_file

    def no_pickle(*args, **kwargs):
        raise AssertionError("the emitted model must load without pickle")

    torch.load = pickle.load = pickle.loads = no_pickle
    folder = sys.argv[1]
    spec = importlib.util.spec_from_file_location("emitted", folder + "/model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.load(folder)
    assert not model.training
    assert not any(name.startswith("canonc") for name in sys.modules), "canonc was imported"
    x = load_file(sys.argv[2])["x"]
    with torch.no_grad():
        save_file({"y": model(x)}, sys.argv[3])
''')


def test_emit_dir_loads_in_a_fresh_process_without_canonc(work, capsys):
    rc, _, err = _cli(capsys, "net.py:build", "--emit-dir", "emitted", "-o", "out.pt", "--quiet")
    assert rc == 0, err
    assert sorted(p.name for p in (work / "emitted").iterdir()) == ["model.py", "weights.safetensors"]
    assert not re.search(r"^\s*(import|from)\s+canonc", (work / "emitted" / "model.py").read_text(), re.M)
    x = torch.randn(3, 3, 12, 12)
    save_file({"x": x}, str(work / "x.safetensors"))
    (work / "load_emitted.py").write_text(_FRESH_LOAD)
    proc = subprocess.run([sys.executable, "load_emitted.py", str(work / "emitted"), "x.safetensors", "y.safetensors"],
                          cwd=work, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    y = load_file(str(work / "y.safetensors"))["y"]
    torch.testing.assert_close(y, _output(_net().build(), x), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(y, _output(torch.load(work / "out.pt", weights_only=False), x), rtol=0, atol=1e-6)


def test_models_source(work, capsys):
    rc, out, err = _cli(capsys, "models:resnet18", "--input-shape", "1,3,32,32", "-o", "out.pt", "--report", "r.json")
    assert rc == 0, err
    report = json.loads((work / "r.json").read_text())
    assert report["model"] == "models:resnet18" and report["verified"] is True
    assert (report["bn_before"], report["bn_after"]) == (20, 0)
    assert "VERIFIED" in out


def test_models_source_works_from_any_directory_beside_a_users_own_models_package(work):
    """A fresh process outside the repository, whose working directory holds a ``models`` package
    of its own: ``models:`` still loads canonc's zoo, and the user's package is not imported."""
    (work / "models").mkdir()
    (work / "models" / "__init__.py").write_text("raise RuntimeError('the user package was imported')\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = ("import sys; from canonc.cli import main; "
            "sys.exit(main(['models:resnet18', '--input-shape', '1,3,32,32', '-o', 'out.pt', '--quiet']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "the user package was imported" not in proc.stderr
    x = torch.randn(2, 3, 32, 32)
    from canonc.load import load

    original = load("models:resnet18").model.eval()
    torch.testing.assert_close(torch.load(work / "out.pt", weights_only=False)(x), original(x), rtol=1e-4, atol=1e-5)


def test_train_mode_model_is_canonized_in_eval_with_a_warning(work, capsys):
    rc, out, err = _cli(capsys, "net.py:build_train", "-o", "out.pt", "--report", "r.json")
    assert rc == 0, err
    assert "train mode" in out and "eval mode" in out
    assert any("train mode" in w for w in json.loads((work / "r.json").read_text())["warnings"])
    assert not torch.load(work / "out.pt", weights_only=False).training


@pytest.mark.parametrize("dtype", ["half", "bf16"])
def test_low_precision_models_are_written_back_in_their_dtype(work, capsys, dtype):
    want = {"half": torch.float16, "bf16": torch.bfloat16}[dtype]
    rc, _, err = _cli(capsys, f"net.py:build_{dtype}", "-o", "out.pt", "--report", "r.json")
    assert rc == 0, err
    report = json.loads((work / "r.json").read_text())
    assert report["verified"] is True and report["max_rel_error_fp64"] <= 1e-9  # the logic is checked in fp64
    canon = torch.load(work / "out.pt", weights_only=False)
    assert {p.dtype for p in canon.state_dict().values() if p.is_floating_point()} == {want}
    x = torch.randn(1, 3, 12, 12)
    y = _output(canon, x.to(want))
    assert y.dtype == want
    ref = _output(_net().build().double(), x.double())
    assert (y.double() - ref).abs().max() <= 0.05 * (1 + ref.abs().max())


def test_model_saved_on_cuda_loads_on_this_cpu(work, capsys):
    """What this shows: a file whose storages are tagged ``cuda:0`` -- the record torch.save
    writes for CUDA tensors -- loads, because canonc maps storages to the CPU. This machine
    has no GPU, so the file is made by patching torch's location tag while saving; the data
    itself never was on a GPU."""
    model = _net().wild(_net().Net(), seed=3).eval()
    with mock.patch.object(torch.serialization, "location_tag", lambda storage: "cuda:0"):
        torch.save(model.state_dict(), work / "cuda_weights.pt")
    with pytest.raises(RuntimeError, match="CUDA"):  # proof that the file asks for a CUDA device
        torch.load(work / "cuda_weights.pt", weights_only=True)
    rc, _, err = _cli(capsys, "cuda_weights.pt", "--arch", "net.py:build", "-o", "out.pt", "--quiet")
    assert rc == 0, err
    x = torch.randn(1, 3, 12, 12)
    torch.testing.assert_close(_output(torch.load(work / "out.pt", weights_only=False), x), _output(model, x),
                               rtol=1e-4, atol=1e-5)


# -- bad inputs -------------------------------------------------------------------------------

def test_missing_file(work, capsys):
    _refused(capsys, work, 2, ("no such file", "nope.pt"), "nope.pt")
    _refused(capsys, work, 2, ("no such file",), "nope.py:build")


def test_empty_file(work, capsys):
    (work / "empty.pt").write_bytes(b"")
    _refused(capsys, work, 2, ("empty.pt", "empty"), "empty.pt", "--arch", "net.py:build")


@pytest.fixture
def weights(work) -> dict[str, Path]:
    """The state dict of ``build()`` as .pt and .safetensors."""
    state = _net().build().state_dict()
    torch.save(state, work / "w.pt")
    save_file({k: v.contiguous() for k, v in state.items()}, str(work / "w.safetensors"))
    return {"pt": work / "w.pt", "safetensors": work / "w.safetensors"}


def test_truncated_files(work, capsys, weights):
    for kind, path in weights.items():
        data = path.read_bytes()
        cut = work / f"cut.{kind}"
        cut.write_bytes(data[: len(data) // 2])
        _refused(capsys, work, 2, (cut.name, "re-save"), cut.name, "--arch", "net.py:build")
    onnx = pytest.importorskip("onnx")
    model = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3])]))
    data = model.SerializeToString()
    (work / "cut.onnx").write_bytes(data[: len(data) // 2])
    _refused(capsys, work, 2, ("cut.onnx",), "cut.onnx")


def test_pickle_that_holds_no_model(work, capsys):
    torch.save({"epoch": 3, "lr": 0.1}, work / "meta.pt")
    _refused(capsys, work, 2, ("meta.pt", "no model", "state_dict"), "meta.pt")
    torch.save([1, 2, 3], work / "list.pt")
    _refused(capsys, work, 2, ("list.pt", "no model"), "list.pt", "--trust-pickle")


class _Payload:
    """Unpickling this creates a file: stands in for arbitrary code in a model file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickle_that_would_run_code_is_never_unpickled(work, capsys):
    marker = work / "MARKER"
    with open(work / "evil.pkl.pt", "wb") as f:
        pickle.dump(_Payload(marker), f)
    torch.save({"weights": _Payload(marker)}, work / "evil.pt")
    for name in ("evil.pkl.pt", "evil.pt"):
        _refused(capsys, work, 2, (name, "--trust-pickle", "runs code"), name)
        _refused(capsys, work, 2, (name,), name, "--arch", "net.py:build")
        assert not marker.exists()
    # the payload is live: with --trust-pickle it runs (and the file still holds no model)
    rc, _, err = _cli(capsys, "evil.pt", "--trust-pickle", "-o", "out.pt")
    assert rc == 2 and "no model" in err and marker.exists() and not (work / "out.pt").exists()


def test_wrong_input_shape(work, capsys):
    _refused(capsys, work, 2, ("1,5,12,12", "--input-shape"), "net.py:build", "--input-shape", "1,5,12,12")
    _refused(capsys, work, 2, ("--input-shape",), "net.py:build", "--input-shape", "1,3")
    _refused(capsys, work, 2, ("--input-shape",), "net.py:build", "--input-shape", "1,three,12,12")
    _refused(capsys, work, 2, ("--input-shape",), "net.py:build", "--input-shape", "0,3,12,12")


def test_state_dict_that_does_not_match_arch(work, capsys):
    torch.save(torch.nn.Linear(3, 2).state_dict(), work / "other.pt")
    _refused(capsys, work, 2, ("other.pt", "does not match", "missing", "unexpected"), "other.pt", "--arch", "net.py:build")
    state = _net().build().state_dict()
    state["conv.weight"] = torch.zeros(5, 3, 3, 3)  # right keys, wrong shape
    torch.save(state, work / "shape.pt")
    _refused(capsys, work, 2, ("shape.pt", "conv.weight"), "shape.pt", "--arch", "net.py:build")


def test_state_dict_without_arch(work, capsys, weights):
    for path in weights.values():
        _refused(capsys, work, 2, (path.name, "--arch"), path.name)


@pytest.mark.parametrize("factory", ["build_nan", "build_inf"])
def test_nan_and_inf_weights(work, capsys, factory):
    _refused(capsys, work, 2, ("NaN or Inf",), f"net.py:{factory}")


def test_model_without_kernels_for_its_dtype(work, capsys):
    _refused(capsys, work, 2, ("float16", "float32"), "net.py:build_half_pool3d")


def test_bn_without_running_statistics(work, capsys):
    _refused(capsys, work, 3, ("'bn'", "running statistics", "track_running_stats=True"), "net.py:build_no_stats")


def test_model_that_will_not_trace(work, capsys):
    _refused(capsys, work, 3, ("'gate'", "--leaf gate"), "net.py:build_untraceable")
    rc, _, err = _cli(capsys, "net.py:build_untraceable", "--leaf", "gate", "-o", "out.pt", "--quiet")  # the advice works
    assert rc == 0 and err == ""
    x = torch.randn(1, 3, 12, 12)
    torch.testing.assert_close(_output(torch.load(work / "out.pt", weights_only=False), x),
                               _output(_net().build_untraceable(), x))


def test_factory_that_fails(work, capsys):
    _refused(capsys, work, 2, ("build_raises", "ValueError", "weights server unreachable"), "net.py:build_raises")
    _refused(capsys, work, 2, ("no callable", "nothing"), "net.py:nothing")
    (work / "broken.py").write_text("import not_a_module_anywhere\n")
    _refused(capsys, work, 2, ("broken.py", "fails to import"), "broken.py:build")


def test_unknown_source(work, capsys):
    _refused(capsys, work, 2, ("unknown model source",), "caffe:alexnet")
    _refused(capsys, work, 2, ("torchvision has no model",), "torchvision:resnet1000")


def _no_output_written(capsys, work: Path, code: int, words: tuple[str, ...], *args: str) -> None:
    rc, out, err = _cli(capsys, *args)
    lines = err.strip().splitlines()
    assert rc == code and len(lines) == 1 and lines[0].startswith("canonc: error: "), err
    assert "Traceback" not in err and out == ""
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert _leftovers(work) == []


def test_unwritable_output_path(work, capsys):
    (work / "a_file").write_text("x")
    _no_output_written(capsys, work, 2, ("a_file",), "net.py:build", "-o", "a_file/out.pt")
    _no_output_written(capsys, work, 2, ("missing_dir",), "net.py:build", "-o", "missing_dir/out.pt")
    _no_output_written(capsys, work, 2, ("/proc",), "net.py:build", "-o", "/proc/out.pt")
    _no_output_written(capsys, work, 2, ("-o out.txt",), "net.py:build", "-o", "out.txt")
    _no_output_written(capsys, work, 2, ("no output",), "net.py:build")
    assert sorted(p.name for p in work.iterdir() if p.name != "__pycache__") == ["a_file", "net.py"]


def test_output_path_equal_to_input_path(work, capsys, weights):
    digest = _sha(weights["pt"])
    _no_output_written(capsys, work, 2, ("w.pt", "input"), "w.pt", "--arch", "net.py:build", "-o", "w.pt")
    _no_output_written(capsys, work, 2, ("w.pt", "input"), "w.pt", "--arch", "net.py:build", "-o", "./sub/../w.pt")
    assert _sha(weights["pt"]) == digest
    # --emit-dir writes model.py and weights.safetensors: neither may be an input
    (work / "model.py").write_text(NET_PY)
    digest = _sha(work / "model.py")
    _no_output_written(capsys, work, 2, ("model.py", "input"), "model.py:build", "--emit-dir", ".")
    assert _sha(work / "model.py") == digest
    (work / "weights.safetensors").write_bytes(weights["safetensors"].read_bytes())
    _no_output_written(capsys, work, 2, ("weights.safetensors", "input"),
                       "weights.safetensors", "--arch", "net.py:build", "--emit-dir", str(work))


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_writes_are_atomic(tmp_path, error):
    """A write that dies half-way leaves the old file as it was and no temp file."""
    from canonc.codegen import atomic_write
    from canonc.errors import InputError

    target = tmp_path / "canon.pt"
    target.write_bytes(b"old")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_bytes(b"new, but only half")
        raise error

    with pytest.raises(InputError if isinstance(error, OSError) else KeyboardInterrupt):
        atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["canon.pt"]
    atomic_write(tmp_path / "fresh.pt", lambda tmp: tmp.write_bytes(b"whole"))
    assert (tmp_path / "fresh.pt").read_bytes() == b"whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["canon.pt", "fresh.pt"]
