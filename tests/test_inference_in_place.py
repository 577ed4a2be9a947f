"""In-place work in plain inference only: `canonc.nn.ReLU` on a tensor only it reads, `Sum` into its own stack."""

from __future__ import annotations

import torch
from torch import nn

import canonc
from canonc import nn as cnn
from canonc.xai import explain


class TwoReaders(nn.Module):
    """conv1's output feeds a ReLU and a residual: that ReLU must never run in place."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.relu2 = nn.ReLU()
        self.head = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv1(x)
        b = self.relu1(a)
        c = self.relu2(self.conv2(b))
        return self.head((a + c).mean((2, 3)))


def _canon() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    return canonc.canonize(TwoReaders().eval(), x).module, x


def test_only_the_sole_reader_is_linked():
    canon, _ = _canon()
    relus = {name: m for name, m in canon.named_modules() if isinstance(m, nn.ReLU)}
    assert type(relus["relu1"]) is nn.ReLU and relus["relu1"].inplace is False  # conv1 has two readers
    assert type(relus["relu2"]) is cnn.ReLU and relus["relu2"]._producer == (canon.conv2,)


def test_same_function_with_and_without_grad_and_hooks():
    canon, x = _canon()
    torch.manual_seed(0)
    torch.randn(2, 3, 8, 8)
    reference = TwoReaders().eval()  # the same weights as _canon's
    with torch.no_grad():
        expected = reference(x)
        assert torch.allclose(canon(x), expected, atol=1e-6)
    assert torch.allclose(canon(x), expected, atol=1e-6)  # grad on: out of place


def test_a_hook_on_the_producer_sees_its_true_output():
    canon, x = _canon()
    seen = []
    handle = canon.conv2.register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        canon(x)
    handle.remove()
    assert (seen[0] < 0).any()  # the ReLU did not overwrite what the hook kept


def test_in_place_when_nobody_watches():
    canon, x = _canon()
    seen = []

    class Spy(nn.Module):  # reads conv2's output tensor object after the forward, without a hook on conv2
        def forward(self, t):
            seen.append(t)
            return t

    with torch.no_grad():
        out = canon.conv2(canon.relu1(canon.conv1(x)))
        relu = canon.relu2
        result = relu(Spy()(out))
    assert result.data_ptr() == seen[0].data_ptr() and (seen[0] >= 0).all()  # overwritten in place


def test_explanations_run_out_of_place():
    canon, x = _canon()
    relevance = explain(canon, x, 1, "lrp-epsilon-plus")
    assert relevance.shape == (2, 8, 8) and torch.isfinite(relevance).all() and relevance.abs().sum() > 0


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x) + x)


def test_sum_adds_into_its_first_summand_only_in_plain_inference():
    torch.manual_seed(0)
    model, x = Residual().eval(), torch.randn(2, 4, 6, 6)
    canon = canonc.canonize(model, x).module
    sums = [m for m in canon.modules() if isinstance(m, cnn.Sum)]
    assert len(sums) == 1 and sums[0]._producer == (canon.conv,)  # conv's output is fresh and read only by the sum
    stacks = [n for n in canon.graph.nodes if n.op == "call_function" and n.target is cnn.stack_summands]
    assert len(stacks) == 1
    assert type(canon.relu) is cnn.ReLU and canon.relu._producer == (sums[0],)
    with torch.no_grad():
        expected = model(x)
        x_before = x.clone()
        assert torch.allclose(canon(x), expected, atol=1e-6)
        assert torch.equal(x, x_before)  # the identity branch (the input) was not written
        assert isinstance(cnn.stack_summands([x, x], 0), cnn.Summands)  # no stacked copy in plain inference
    assert cnn.stack_summands([x, x], 0).shape == (2, 2, 4, 6, 6)  # a real stack under autograd
    assert torch.allclose(canon(x), expected, atol=1e-6)
    assert not isinstance(model.relu, cnn.ReLU)  # the user's model is untouched


def test_hooked_sum_sees_the_stacked_tensor_in_plain_inference():
    torch.manual_seed(0)
    model, x = Residual().eval(), torch.randn(2, 4, 6, 6)
    canon = canonc.canonize(model, x).module
    total = next(m for m in canon.modules() if isinstance(m, cnn.Sum))
    seen = []
    handle = total.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    with torch.no_grad():
        y = canon(x)
    handle.remove()
    assert len(seen) == 1 and type(seen[0]) is torch.Tensor and seen[0].shape == (2, 2, 4, 6, 6)
    with torch.no_grad():
        assert torch.allclose(y, model(x), atol=1e-6)


def test_hooked_producer_keeps_its_output_in_plain_inference():
    torch.manual_seed(0)
    model, x = Residual().eval(), torch.randn(2, 4, 6, 6)
    canon = canonc.canonize(model, x).module
    kept = []
    handle = canon.conv.register_forward_hook(lambda m, args, out: kept.append((out, out.clone())))
    with torch.no_grad():
        canon(x)
    handle.remove()
    out, copy_at_hook = kept[0]
    assert torch.equal(out, copy_at_hook)  # the sum did not add into the hooked conv's output


def test_a_canonized_model_canonizes_again_under_no_grad():
    torch.manual_seed(0)
    model, x = Residual().eval(), torch.randn(2, 4, 6, 6)
    canon = canonc.canonize(model, x).module
    with torch.no_grad():  # tracing must see the stack, not the plain-inference tuple
        again = canonc.canonize(canon, x)
    assert again.report.verified
    stacks = [n for n in again.module.graph.nodes if n.op == "call_function" and n.target is cnn.stack_summands]
    assert len(stacks) == 1
