"""The human-readable reports: HTML (opened in headless Chromium), Markdown, per-layer error."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import torchvision

import canonc.passes as passes
from canonc.core import canonize
from canonc.errors import InputError, VerificationError
from canonc.report_formats import check_report_path, render, wants_profile
from canonc.report_html import to_html
from canonc.report_md import to_markdown
from models.zoo import randomize_bn

SHAPE = (1, 3, 32, 32)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module", autouse=True)
def _flush_denormals():
    """Random-BN nets produce float32 denormals that make CPU convs ~10x slower."""
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return randomize_bn(torchvision.models.get_model(name, weights=None), seed=0, input_shape=(2, 3, 32, 32))


@pytest.fixture(scope="module")
def resnet_report():
    return canonize(_model("resnet18"), torch.randn(SHAPE), name="resnet18", profile=True).report


@pytest.fixture(scope="module")
def densenet_report():
    return canonize(_model("densenet121"), torch.randn(SHAPE), name="densenet121", profile=True).report


def chromium(html: Path, tmp: Path) -> tuple[str, Path]:
    """Open ``html`` in headless Chromium: its DOM after the scripts ran, and a screenshot."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it with apt; apt failed here)")
    base = [exe, *CHROMIUM_FLAGS, "--window-size=1400,1000"]
    dom = subprocess.run([*base, f"--user-data-dir={tmp / 'profile-dom'}", "--dump-dom", html.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    png = tmp / (html.stem + ".png")
    subprocess.run([*base, f"--user-data-dir={tmp / 'profile-png'}", f"--screenshot={png}", html.as_uri()],
                   capture_output=True, timeout=120, check=True)
    return dom, png


def _table_rows(dom: str, cls: str) -> int:
    body = re.search(rf'<table class="{cls}[^"]*">.*?<tbody>(.*?)</tbody>', dom, re.S)
    return body.group(1).count("<tr") if body else -1


def _check_in_browser(report, tmp_path: Path) -> str:
    html = tmp_path / f"{report.model}.html"
    html.write_text(to_html(report))
    dom, png = chromium(html, tmp_path)
    assert 'id="status" class="badge ok">VERIFIED' in dom
    assert "fp64 max abs error" in dom and f"{report.max_abs_error_fp64:.3g}" in dom
    assert _table_rows(dom, "profile") == len(report.error_profile)
    assert _table_rows(dom, "rewrites") == len(report.rewrites)
    # the inline script drew both graphs: one <g class="n ..."> per visible box
    drawn = re.findall(r'<div id="g-(before|after)"><svg.*?</svg>', dom, re.S)
    assert drawn == ["before", "after"]
    assert dom.count('class="n') >= 20
    assert png.stat().st_size > 20_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return dom


def _check_profile(report) -> None:
    prof = report.error_profile
    assert len({p["node"] for p in prof}) == len(prof)  # one row per matched point
    last = prof[-1]
    assert last["node"] == "output" and last["original"] == "output"
    assert last["err_fp64"] == report.max_abs_error_fp64
    assert last["err_fp32"] == report.max_abs_error_fp32
    assert not any(p["diverges"] for p in prof)
    assert report.first_divergence == ""


def test_resnet18_html_in_chromium(resnet_report, tmp_path):
    _check_profile(resnet_report)
    # every BN's value is compared at the conv it was folded into
    pairs = {(p["node"], p["original"]) for p in resnet_report.error_profile}
    assert ("layer2_0_conv1", "layer2_0_bn1") in pairs
    assert {o for c, o in pairs if c == "layer1_0_add"} & {"add", "iadd"}  # Sum carries `out += identity`
    assert resnet_report.flops_after < resnet_report.flops_before
    dom = _check_in_browser(resnet_report, tmp_path)
    assert "canonical (71 nodes)" not in dom and "original (71 nodes)" in dom


def test_densenet121_html_in_chromium(densenet_report, tmp_path):
    _check_profile(densenet_report)
    assert len(densenet_report.error_profile) > 100
    dom = _check_in_browser(densenet_report, tmp_path)
    # collapsed by module scope: a dense layer is one box, far fewer boxes than nodes
    assert "denselayer1  [" in dom
    assert dom.count('class="n') < len(densenet_report.graph_before["nodes"]) // 2


def test_markdown(resnet_report):
    md = to_markdown(resnet_report)
    n = len(resnet_report.error_profile)
    assert md.startswith("# canonc report: resnet18 — VERIFIED")
    assert f"## Per-layer error ({n} matched tensors, output last)" in md
    section = md.split("## Per-layer error")[1].split("## Rewrite log")[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("| ") and not ln.startswith("| #")]
    assert len(rows) == n and rows[-1].startswith(f"| {n} | output | output |")
    assert f"## Rewrite log ({len(resnet_report.rewrites)})" in md and "<svg" not in md


def test_report_format_follows_suffix(resnet_report, tmp_path):
    assert render(resnet_report, tmp_path / "r.json") == resnet_report.to_json()
    assert render(resnet_report, tmp_path / "r.md").startswith("# canonc report: resnet18")
    assert render(resnet_report, tmp_path / "r.html").startswith("<!DOCTYPE html>")
    assert wants_profile("r.html") and wants_profile("r.md") and not wants_profile("r.json")
    with pytest.raises(InputError, match="use a .json, .md or .html path"):
        check_report_path("report.txt")


BROKEN = "layer2.0.conv1"


def _broken_merge_left(gm, ctx) -> None:
    """merge-left with a bug: the weight merged into ``BROKEN`` is off by 1 % in one channel."""
    merged = any(e.rule == "merge-left" and e.detail.endswith(f"into {BROKEN}") for e in ctx.rewrites)
    for node in gm.graph.nodes:
        if not merged or node.op != "call_module" or node.target != BROKEN:
            continue
        conv = gm.get_submodule(BROKEN)
        if getattr(conv, "perturbed", False) or not ctx.apply("merge-left", node.name, "test: perturbed merged weight"):
            continue
        bad = copy.deepcopy(conv)
        with torch.no_grad():
            bad.weight[0] *= 1.01
        bad.perturbed = True
        gm.add_submodule(BROKEN, bad)


def test_refused_model_report_names_first_diverging_layer(monkeypatch, tmp_path):
    pipeline = list(passes.PIPELINE)
    at = [name for name, _ in pipeline].index("merge-left") + 1
    pipeline.insert(at, ("broken-merge-left", _broken_merge_left))
    monkeypatch.setattr(passes, "PIPELINE", pipeline)
    with pytest.raises(VerificationError) as info:
        canonize(_model("resnet18"), torch.randn(SHAPE), name="resnet18")
    report = info.value.report
    first = next(p for p in report.error_profile if p["diverges"])
    assert (first["node"], first["original"], first["layer"]) == ("layer2_0_conv1", "layer2_0_bn1", BROKEN)
    before = report.error_profile[: report.error_profile.index(first)]
    assert before and all(p["err_fp64"] < 1e-9 for p in before)
    assert report.first_divergence.startswith("layer2_0_conv1 (Conv2d layer2.0.conv1)")
    assert "layer2_0_bn1" in report.first_divergence
    html = to_html(report)
    assert 'class="badge bad">REFUSED' in html and '<tr class="diverges first">' in html
    assert "**First diverging tensor:** layer2_0_conv1" in to_markdown(report)
