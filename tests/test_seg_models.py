"""Segmentation models: registry, output contract, PraNet's published size, the structure loss."""


import numpy as np
import pytest
import torch

from stylseg.seg import PraNet, count_parameters, create_segmenter, structure_loss
from stylseg.utils import StylsegError

SMALL = dict(encoder="resnet18", encoder_depth=3, decoder_channels=(16, 8, 4))


def test_unknown_name_lists_valid():
    with pytest.raises(StylsegError, match="pranet, unet, unetpp"):
        create_segmenter("segformer")


@pytest.mark.parametrize("arch", ["unet", "unetpp"])
def test_smp_models_return_logits(arch):
    torch.manual_seed(0)
    m = create_segmenter(arch, **SMALL).eval()
    with torch.no_grad():
        y = m(torch.randn(2, 3, 32, 32))
    assert y.shape == (2, 1, 32, 32)
    # the unused deeper stages of a depth-3 encoder are dropped
    assert not hasattr(m.encoder, "layer3") and not hasattr(m.encoder, "layer4")
    with pytest.raises(StylsegError, match="multiple of 8"):
        create_segmenter(arch, image_size=36, **SMALL)


def test_pranet_train_returns_four_side_outputs_eval_returns_last():
    torch.manual_seed(0)
    m = create_segmenter("pranet", encoder="resnet18")
    x = torch.randn(2, 3, 64, 64)
    m.train()
    outs = m(x)
    assert isinstance(outs, list) and len(outs) == 4
    assert all(o.shape == (2, 1, 64, 64) for o in outs)
    m.eval()
    with torch.no_grad():
        y = m(x)
        again = m.train(False)(x)
    assert y.shape == (2, 1, 64, 64) and torch.equal(y, again)
    loss = structure_loss(outs, (torch.rand(2, 1, 64, 64) > 0.5).float())
    loss.backward()
    assert m.ra2.conv1.conv.weight.grad is not None  # deep supervision reaches the last branch


def test_pranet_res2net50d_matches_published_parameter_count():
    # Official PraNet: 32.55 M parameters, counted with Res2Net-50's ImageNet classifier
    # (2048 x 1000 + 1000), which the official code builds but never uses.
    m = PraNet("res2net50d")
    n = count_parameters(m)
    classifier = 2048 * 1000 + 1000
    assert abs(n + classifier - 32.55e6) / 32.55e6 < 0.01, n
    assert abs(n - 30.5e6) / 30.5e6 < 0.01, n
    assert m.backbone.feature_info.channels() == [256, 512, 1024, 2048]


def _np_structure_loss(x, m):
    """PraNet's structure loss by hand for an image smaller than 16x16: every 31x31 window
    (zero padded, padding counted) covers the whole image, so the box mean is sum(m)/961."""
    box = m.sum() / 961.0
    w = 1 + 5 * np.abs(box - m)
    bce = np.maximum(x, 0) - x * m + np.log1p(np.exp(-np.abs(x)))
    wbce = (w * bce).sum() / w.sum()
    p = 1 / (1 + np.exp(-x))
    inter = (p * m * w).sum()
    union = ((p + m) * w).sum()
    return wbce + 1 - (inter + 1) / (union - inter + 1)


def test_structure_loss_hand_computed():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 5)) * 2
    m = np.zeros((4, 5))
    m[1:3, 1:4] = 1
    expect = _np_structure_loss(x, m)
    t = lambda a: torch.tensor(a, dtype=torch.float64)[None, None].float()
    got = structure_loss(t(x), t(m))
    assert float(got) == pytest.approx(expect, rel=1e-5)
    # list of side outputs: summed; batch: averaged
    assert float(structure_loss([t(x), t(-x)], t(m))) == pytest.approx(expect + _np_structure_loss(-x, m), rel=1e-5)
    both = structure_loss(torch.cat([t(x), t(-x)]), torch.cat([t(m), t(m)]))
    assert float(both) == pytest.approx((expect + _np_structure_loss(-x, m)) / 2, rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["unet", "unetpp", "pranet"])
def test_paper_profile_step_on_cpu(arch):
    """One paper-profile training step (256 px, batch 1, the paper's encoders) of each architecture."""
    from stylseg.config import get_profile
    from stylseg.seg.models import segmenter_config
    from stylseg.seg.train import train_step

    sc = get_profile("paper").seg
    kw = segmenter_config(arch, sc)
    torch.manual_seed(0)
    model = create_segmenter(kw.pop("arch"), image_size=sc.image_size, **kw).train()
    opt = torch.optim.Adam(model.parameters(), lr=sc.lr_for(arch))
    x = torch.randn(1, 3, sc.image_size, sc.image_size)
    m = torch.zeros(1, 1, sc.image_size, sc.image_size)
    m[..., 64:160, 80:200] = 1
    before = [p.detach().clone() for p in model.parameters()][:3]
    loss = train_step(model, opt, x, m, sc)
    assert np.isfinite(loss) and loss > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, list(model.parameters())[:3]))
