"""ONNX out and in: canonical modules and canonized models export and verify in ONNX Runtime;
ONNX files import as torch.nn layers, canonize and match the input file in ORT; bad files fail cleanly.

Zoo-wide export and the five torchvision ONNX imports are in ``test_onnx_zoo.py``.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import canonc
from canonc import nn as cnn
from canonc import onnx_export
from canonc.cli import main
from canonc.errors import InputError, RefusedError, VerificationError
from canonc.onnx_export import build_onnx, op_counts, run_session, session
from canonc.onnx_import import import_onnx
from models.zoo import randomize_bn


def ort_tol(y: np.ndarray) -> float:
    """The ORT tolerance of the issue: ``1e-4·(1 + max|y|)``."""
    return 1e-4 * (1.0 + float(np.abs(y).max()))


def ulps(n: int, magnitude: float) -> float:
    """``n`` float32 rounding steps at ``magnitude``: how closely two float32 runtimes can agree.

    Which kernels ONNX Runtime picks (and so the rounding) depends on the CPU, so a fixed
    absolute bound holds on one machine and not on another for the same export.
    """
    return n * float(np.spacing(np.float32(max(magnitude, 1.0))))


def _thresh_relu() -> nn.Module:
    m = cnn.ThreshReLU(4)
    gen = torch.Generator().manual_seed(0)
    m.tau.copy_(torch.randn(4, generator=gen))
    m.upper.copy_(torch.tensor([True, False, True, False]))
    m.keep.copy_(torch.tensor([False, False, False, True]))
    return m


def _bias_map() -> nn.Module:
    m = cnn.BiasMap(4, (3, 3), (1, 1), (1, 1), (1, 1))
    gen = torch.Generator().manual_seed(1)
    m.kernel.copy_(torch.randn(m.kernel.shape, generator=gen))
    m.interior.copy_(m.kernel.sum(dim=(1, 2, 3)))
    return m


def _offset() -> nn.Module:
    m = cnn.Offset((4, 6, 6))
    m.offset.data.normal_(generator=torch.Generator().manual_seed(2))
    return m


def _linked_relu() -> nn.Module:
    relu = cnn.ReLU()
    relu.overwrite_output_of(nn.Identity())  # in place in plain inference: the export must see Relu
    return relu


# Canonical module name → (factory, how it is applied to the running tensor, an op its export must contain).
CANONICAL_CASES = {
    "ThreshReLU": (_thresh_relu, lambda m, x: m(x), "Where"),
    "ReLU": (_linked_relu, lambda m, x: m(x * 1.0), "Relu"),
    "Sum": (cnn.Sum, lambda m, x: m(torch.stack([x, torch.relu(x)], -1)), "ReduceSum"),
    "Mean": (lambda: cnn.Mean((2, 3), False), lambda m, x: x + m(x)[:, :, None, None], "ReduceMean"),
    "Gate": (cnn.Gate, lambda m, x: m(x, torch.sigmoid(x.amax((2, 3), keepdim=True))), "Sigmoid"),
    "Mul": (cnn.Mul, lambda m, x: m(x, torch.tanh(x)), "Tanh"),
    "BiasMap": (_bias_map, lambda m, x: m(x, x.shape), "Conv"),
    "Concat": (lambda: cnn.Concat(1), lambda m, x: m([x, torch.relu(x)])[:, ::2], "Concat"),
    "PadSame": (lambda: cnn.PadSame((3, 3), (2, 2), (1, 1)), lambda m, x: m(x)[:, :, 1:, 1:], "Pad"),
    "MatMul": (lambda: cnn.MatMul(0.5), lambda m, x: m(x, x.transpose(-1, -2)), "MatMul"),
    "Offset": (_offset, lambda m, x: m(x), "Add"),
}


class AllCanonical(nn.Module):
    """Every canonical module of ``canonc.nn``, applied one after the other to a (N, 4, 6, 6) tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.names = [n for n in CANONICAL_CASES if hasattr(cnn, n)]
        self.mods = nn.ModuleList(CANONICAL_CASES[n][0]() for n in self.names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name, mod in zip(self.names, self.mods):
            x = CANONICAL_CASES[name][1](mod, x)
        return x


def test_every_canonical_module_has_an_export_case():
    assert {c.__name__ for c in cnn.CANONICAL_MODULES} <= set(CANONICAL_CASES)


def test_canonical_modules_export_to_standard_ops(tmp_path):
    model = AllCanonical().eval()
    x = torch.randn(1, 4, 6, 6)
    info = canonc.export_onnx(model, x, tmp_path / "m.onnx")
    assert info["onnx_verified"] and info["onnx_opset"] >= 18 and info["onnx_exporter"] == "dynamo"
    assert info["onnx_max_abs_error"] <= ulps(4, info["onnx_output_max"])
    assert {CANONICAL_CASES[n][2] for n in model.names} <= set(info["onnx_op_counts"])
    assert not [k for k in info["onnx_op_counts"] if "::" in k or k == "BatchNormalization"]
    x7 = torch.randn(7, 4, 6, 6)  # a batch size never seen at export
    y = run_session(session(tmp_path / "m.onnx"), (x7,))[0]
    assert np.abs(y - model(x7).detach().numpy()).max() <= ulps(4, np.abs(y).max())
    _, legacy = build_onnx(model, x, exporter="legacy")  # the fallback exporter
    assert legacy["onnx_exporter"] == "legacy" and legacy["onnx_verified"] and legacy["onnx_max_abs_error"] <= ulps(4, legacy["onnx_output_max"])
    _, optimized = build_onnx(model, x, optimize=True)  # checked first, then optimised and verified again
    assert optimized["onnx_verified"] and optimized["onnx_max_abs_error"] <= ulps(4, optimized["onnx_output_max"])
    assert sum(optimized["onnx_op_counts"].values()) < sum(info["onnx_op_counts"].values())


class SmallNet(nn.Module):
    """Conv-BN-ReLU stem, a residual block, squeeze-excitation, ReLU6 / Hardswish / SiLU, concat,
    transposed conv, pooling and a linear head: the ops canonc rewrites, in 32 px."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.bn2 = nn.BatchNorm2d(8)
        self.act6 = nn.ReLU6()
        self.se_fc = nn.Conv2d(8, 8, 1)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.bn3 = nn.BatchNorm2d(4)
        self.hs = nn.Hardswish()
        self.silu = nn.SiLU()
        self.pool = nn.MaxPool2d(2)
        self.avg = nn.AvgPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        y = self.act6(self.bn2(self.conv2(x)))
        y = y * torch.sigmoid(self.se_fc(y.mean((2, 3), keepdim=True)))
        x = self.pool(x + y)
        u = self.avg(self.hs(self.bn3(self.up(x))))
        z = torch.cat([self.silu(x), u], 1)
        return self.fc(torch.flatten(self.gap(z), 1))


@pytest.fixture(scope="module")
def small_net() -> nn.Module:
    torch.manual_seed(0)
    return randomize_bn(SmallNet(), seed=0, input_shape=(4, 3, 32, 32))


def _export_file(model: nn.Module, path, exporter: str) -> None:
    x = torch.randn(2, 3, 32, 32)
    if exporter == "dynamo":
        from torch.export import Dim

        torch.onnx.export(model, (x,), dynamo=True, optimize=False, dynamic_shapes=({0: Dim("batch")},)).save(path)
    else:
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (x,), path, dynamo=False, opset_version=17, do_constant_folding=False,
                          training=torch.onnx.TrainingMode.PRESERVE, input_names=["input"], output_names=["out"],
                          dynamic_axes={"input": {0: "batch"}, "out": {0: "batch"}})


@pytest.fixture(scope="module", params=["legacy", "dynamo"])
def small_onnx(request, small_net, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param) / "small.onnx"
    _export_file(small_net, path, request.param)
    return path


def test_import_builds_torch_layers_matching_ort(small_onnx, small_net):
    gm, shape = import_onnx(small_onnx)
    assert shape == (1, 3, 32, 32)
    kinds = {type(m) for m in gm.modules()}
    assert {nn.Conv2d, nn.BatchNorm2d, nn.ConvTranspose2d, nn.Linear, nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU,
            nn.MaxPool2d, nn.AvgPool2d} <= kinds
    names = dict(gm.named_modules())
    assert isinstance(names["conv1"], nn.Conv2d) and isinstance(names["bn2"], nn.BatchNorm2d)  # scope names kept
    assert torch.equal(names["conv1"].weight, small_net.conv1.weight)
    x = torch.randn(5, 3, 32, 32)
    y_ort = run_session(session(small_onnx), (x,))[0]
    y = gm(x).detach().numpy()
    assert np.abs(y - y_ort).max() <= ort_tol(y_ort)
    assert np.abs(y - small_net(x).detach().numpy()).max() <= ort_tol(y_ort)


def test_cli_onnx_in_onnx_out(small_onnx, tmp_path, capsys):
    out, report = tmp_path / "canon.onnx", tmp_path / "r.json"
    assert main([str(small_onnx), "-o", str(out), "--report", str(report), "--quiet"]) == 0
    model = onnx.load(str(out))
    counts = op_counts(model)
    assert "BatchNormalization" not in counts and counts["Conv"] == 3 and counts["ConvTranspose"] == 1
    rep = json.loads(report.read_text())
    assert rep["onnx_verified"] and rep["onnx_path"] == str(out) and rep["onnx_opset"] >= 18
    assert rep["onnx_op_counts"] == counts
    assert rep["onnx_provider"] == "CPUExecutionProvider"
    assert rep["bn_after"] == 0 and rep["bn_before"] == 3
    x = torch.randn(4, 3, 32, 32)
    y_in = run_session(session(small_onnx), (x,))[0]
    y_out = run_session(session(out), (x,))[0]
    assert np.abs(y_in - y_out).max() <= ort_tol(y_in)
    assert rep["onnx_reference_error"] <= rep["onnx_tolerance"]


def test_cli_pt_and_onnx(small_net, tmp_path, capsys):
    src = tmp_path / "net.pt"
    torch.save(small_net, src)
    out, side = tmp_path / "canon.pt", tmp_path / "side.onnx"
    assert main([str(src), "--trust-pickle", "--input-shape", "1,3,32,32", "-o", str(out), "--onnx", str(side)]) == 0
    assert out.exists() and side.exists()
    assert "onnx          opset 18 (dynamo)" in capsys.readouterr().out
    assert "BatchNormalization" not in op_counts(onnx.load(str(side)))


@pytest.fixture
def wide_net() -> nn.Module:
    """Conv-BN-ReLU ×2 and a classifier: 10 k weights, most in tensors above the 1 KiB of external data."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1),
                          nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    return randomize_bn(model, seed=0, input_shape=(4, 3, 32, 32))


def _external_tensors(path) -> list:
    model = onnx.load(str(path), load_external_data=False)
    return [t for t in model.graph.initializer if t.data_location == TensorProto.EXTERNAL]


def test_weights_over_the_limit_go_to_an_external_data_file(wide_net, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 0)  # every model is "large": the > 1 GiB path
    x = torch.randn(2, 3, 32, 32)
    canon = canonc.canonize(wide_net, x).module
    before = {k: v.clone() for k, v in canon.state_dict().items()}
    info = canonc.export_onnx(canon, x, tmp_path / "big.onnx", optimize=True)
    # float32 eval modules are exported and run without a copy, and left as they were
    assert all(torch.equal(v, before[k]) for k, v in canon.state_dict().items()) and not canon.training
    model_file, data_file = tmp_path / "big.onnx", tmp_path / "big.onnx.data"
    assert info["onnx_external_data"] and sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data"]
    external = _external_tensors(model_file)
    weights = sum(p.numel() for p in canon.parameters())
    assert external and {e.value for t in external for e in t.external_data if e.key == "location"} == {"big.onnx.data"}
    assert data_file.stat().st_size >= 4 * weights * 0.9 > 2 * model_file.stat().st_size  # the weights are outside
    onnx.checker.check_model(str(model_file), full_check=True)
    y = run_session(session(model_file), (x,))[0]
    assert np.abs(y - wide_net(x).detach().numpy()).max() <= ort_tol(y)


def test_cli_writes_external_data_beside_each_onnx_output(wide_net, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 0)
    src = tmp_path / "net.pt"
    torch.save(wide_net, src)
    out, side = tmp_path / "canon.onnx", tmp_path / "side.onnx"
    assert main([str(src), "--trust-pickle", "--input-shape", "1,3,32,32", "-o", str(out), "--onnx", str(side)]) == 0
    printed = capsys.readouterr().out
    assert "weights in external .onnx.data" in printed and f"wrote         {side}.data" in printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["canon.onnx", "canon.onnx.data", "net.pt", "side.onnx",
                                                          "side.onnx.data"]
    x = torch.randn(3, 3, 32, 32)
    y_out, y_side = (run_session(session(p), (x,))[0] for p in (out, side))
    assert np.array_equal(y_out, y_side) and np.abs(y_out - wide_net(x).detach().numpy()).max() <= ort_tol(y_out)


def test_onnx_input_with_external_data(wide_net, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 0)
    x = torch.randn(1, 3, 32, 32)
    canonc.export_onnx(canonc.canonize(wide_net, x).module, x, tmp_path / "in.onnx")
    out = tmp_path / "out.onnx"
    assert main([str(tmp_path / "in.onnx"), "-o", str(out), "--quiet"]) == 0  # read with its weights, checked vs it
    assert (tmp_path / "out.onnx.data").exists()
    (tmp_path / "in.onnx.data").unlink()
    assert main([str(tmp_path / "in.onnx"), "-o", str(tmp_path / "again.onnx")]) == 2
    err = capsys.readouterr().err
    assert "in.onnx is not a valid ONNX model" in err and "Traceback" not in err
    assert not (tmp_path / "again.onnx").exists()


def test_an_output_never_overwrites_the_input_onnx_external_data(wide_net, tmp_path, capsys):
    x = torch.randn(1, 3, 32, 32)
    canonc.export_onnx(canonc.canonize(wide_net, x).module, x, tmp_path / "tmp.onnx")
    onnx.save_model(onnx.load(str(tmp_path / "tmp.onnx")), str(tmp_path / "in.onnx"), save_as_external_data=True,
                    location="canon.onnx.data", size_threshold=0)  # the input's weights live in canon.onnx.data
    data = (tmp_path / "canon.onnx.data").read_bytes()
    assert main([str(tmp_path / "in.onnx"), "-o", str(tmp_path / "canon.onnx")]) == 2
    assert "canon.onnx.data is an input file" in capsys.readouterr().err
    assert (tmp_path / "canon.onnx.data").read_bytes() == data and not (tmp_path / "canon.onnx").exists()


def test_external_data_failing_a_check_leaves_nothing(wide_net, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 0)

    def fail(*args, **kwargs):
        raise VerificationError("ONNX Runtime output differs (planted)")

    x = torch.randn(1, 3, 32, 32)
    canon = canonc.canonize(wide_net, x).module
    monkeypatch.setattr(onnx_export, "verify_ort", fail)
    with pytest.raises(VerificationError, match="planted"):
        canonc.export_onnx(canon, x, tmp_path / "big.onnx")
    assert list(tmp_path.iterdir()) == []  # no model, no data file, no staging folder


def test_export_refuses_a_batchnorm_left_in_the_graph():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    for exporter in ("dynamo", "legacy"):  # neither exporter may fold the BN away
        with pytest.raises(VerificationError, match="BatchNormalization"):
            build_onnx(model, torch.randn(1, 3, 8, 8), exporter=exporter)


def _graph_model(nodes, inits, in_shape=(1, 4, 6, 6), opset=18, out_shape=None, domain_opsets=()) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *in_shape[1:]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape or ["N", *in_shape[1:]])],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *domain_opsets])
    model.ir_version = 8
    return model


def test_import_handmade_graph_asymmetric_pads_matmul_add(tmp_path):
    rng = np.random.default_rng(0)
    inits = {"w": rng.standard_normal((5, 4, 3, 3)).astype(np.float32),
             "m": rng.standard_normal((5 * 3 * 3, 7)).astype(np.float32),
             "c": rng.standard_normal(7).astype(np.float32),
             "shape": np.array([0, -1], dtype=np.int64), "pads": np.array([0, 0, 1, 0, 0, 0, 0, 1], dtype=np.int64)}
    nodes = [
        helper.make_node("Pad", ["x", "pads"], ["p"], mode="reflect"),
        helper.make_node("Conv", ["p", "w"], ["c1"], pads=[0, 1, 1, 0], strides=[2, 2]),
        helper.make_node("LeakyRelu", ["c1"], ["r"], alpha=0.1),
        helper.make_node("Reshape", ["r", "shape"], ["f"]),
        helper.make_node("MatMul", ["f", "m"], ["mm"]),
        helper.make_node("Add", ["mm", "c"], ["y"]),
    ]
    path = tmp_path / "h.onnx"
    onnx.save(_graph_model(nodes, inits, out_shape=["N", 7]), path)
    gm, _ = import_onnx(path)
    linears = [m for m in gm.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 1 and linears[0].bias is not None  # MatMul + Add became one Linear
    assert any(isinstance(m, nn.ConstantPad2d) for m in gm.modules())  # asymmetric conv pads
    x = torch.randn(3, 4, 6, 6)
    y_ort = run_session(session(path), (x,))[0]
    assert np.abs(gm(x).detach().numpy() - y_ort).max() <= ort_tol(y_ort)


def _write(path, model: onnx.ModelProto) -> None:
    path.write_bytes(model.SerializeToString())


def _run_fails(args, capsys) -> tuple[int, str]:
    code = main(args)
    err = capsys.readouterr().err.strip()
    return code, err


def test_bad_onnx_inputs_fail_cleanly(small_onnx, tmp_path, capsys):
    data = small_onnx.read_bytes()
    cases = {}
    (tmp_path / "trunc.onnx").write_bytes(data[: len(data) // 3])
    cases["trunc.onnx"] = (2, "not a valid ONNX model")
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07garbage that is not protobuf" * 5)
    cases["junk.onnx"] = (2, "not a valid ONNX model")
    (tmp_path / "empty.onnx").write_bytes(b"")
    cases["empty.onnx"] = (2, "is empty")
    erf = [helper.make_node("Erf", ["x"], ["y"], name="my_erf")]
    _write(tmp_path / "erf.onnx", _graph_model(erf, {}))
    cases["erf.onnx"] = (3, "ONNX op Erf (node 'my_erf') is not supported")
    custom = [helper.make_node("Foo", ["x"], ["y"], name="foo1", domain="com.example")]
    _write(tmp_path / "custom.onnx", _graph_model(custom, {}, domain_opsets=[helper.make_opsetid("com.example", 1)]))
    cases["custom.onnx"] = (3, "ONNX op com.example::Foo (node 'foo1')")
    crop = [helper.make_node("Crop", ["x"], ["y"], name="crop")]  # opset 1, no converter adapter
    old = _graph_model(crop, {}, opset=1, out_shape=[1, 4, 6, 6])
    old.ir_version = 3
    _write(tmp_path / "old.onnx", old)
    cases["old.onnx"] = (2, "uses ONNX opset 1, which onnx.version_converter cannot raise")
    for name, (want, text) in cases.items():
        out = tmp_path / f"out_{name}"
        code, err = _run_fails([str(tmp_path / name), "-o", str(out)], capsys)
        assert code == want, (name, err)
        assert len(err.splitlines()) == 1 and text in err, (name, err)
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith((".", "out_"))) == []


def test_import_errors_are_typed(tmp_path):
    fixed = [helper.make_node("Reshape", ["x", "s"], ["y"], name="flat")]
    model = _graph_model(fixed, {"s": np.array([1, -1], dtype=np.int64)}, out_shape=[1, 144])
    _write(tmp_path / "fixed.onnx", model)
    with pytest.raises(RefusedError, match="Reshape node 'flat'.*fixes the batch size"):
        import_onnx(tmp_path / "fixed.onnx")
    two = _graph_model([helper.make_node("Relu", ["x"], ["y"])], {}, in_shape=(1, 4, 6, 6))
    two.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    _write(tmp_path / "sym.onnx", two)
    with pytest.raises(InputError, match="fixed"):
        import_onnx(tmp_path / "sym.onnx")
