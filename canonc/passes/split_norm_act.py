"""Split a fused norm+activation module (timm ``BatchNormAct2d``) into BN → drop → act."""

from __future__ import annotations

from torch import fx, nn

from ..graph import get_module, set_module
from ..trace import is_norm_act
from .base import PassContext

RULE = "split-norm-act"
_BN_BY_DIM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def plain_bn(module: nn.modules.batchnorm._BatchNorm) -> nn.modules.batchnorm._BatchNorm:
    """A plain torch BatchNorm with the same parameters and statistics as ``module``."""
    dim = 2
    for d, cls in _BN_BY_DIM.items():
        if isinstance(module, cls):
            dim = d
    bn = _BN_BY_DIM[dim](
        module.num_features,
        eps=module.eps,
        momentum=module.momentum,
        affine=module.affine,
        track_running_stats=module.track_running_stats,
    )
    bn.load_state_dict(module.state_dict(), strict=False)
    return bn.to(next(iter(module.state_dict().values())).dtype).eval()


def run(gm: fx.GraphModule, ctx: PassContext) -> None:
    """Rewrite each norm-act call into separate BN, dropout and activation calls."""
    for node in list(gm.graph.nodes):
        module = get_module(gm, node)
        if module is None or not is_norm_act(module):
            continue
        if not ctx.apply(RULE, node.name, f"{type(module).__name__} → BatchNorm + activation"):
            continue
        base = node.target
        set_module(gm, base, plain_bn(module))
        current = node
        for part in ("drop", "act"):
            sub = getattr(module, part, None)
            if sub is None or isinstance(sub, nn.Identity):
                continue
            name = f"{base}_{part}"
            set_module(gm, name, sub)
            with gm.graph.inserting_after(current):
                new = gm.graph.call_module(name, (current,))
            current.replace_all_uses_with(new, delete_user_cb=lambda u, n=new: u is not n)
            current = new
