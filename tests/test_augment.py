import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hpstudy.augment import flip_crop, mixup, mixup_accuracy, normalize, sample_mixup_lambda

MEAN = torch.tensor([0.507, 0.487, 0.441])
STD = torch.tensor([0.267, 0.256, 0.276])


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def position_images(n: int, seed: int = 0) -> torch.Tensor:
    """Channel 0 holds column + 10, channel 1 row + 10, channel 2 noise; no pixel is 0."""
    ramp = torch.arange(32, dtype=torch.uint8) + 10
    x = torch.empty(n, 3, 32, 32, dtype=torch.uint8)
    x[:, 0] = ramp[None, None, :]
    x[:, 1] = ramp[None, :, None]
    x[:, 2] = torch.randint(1, 256, (n, 32, 32), generator=gen(seed), dtype=torch.uint8)
    return x


def recover(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(flipped, dy, dx) of each output of `position_images`, offsets in the flipped frame.

    Output pixel (16, 16) and its right neighbour always come from the image, never the padding.
    """
    col, right, row = (
        out[:, 0, 16, 16].long() - 10,
        out[:, 0, 16, 17].long() - 10,
        out[:, 1, 16, 16],
    )
    flipped = right < col
    # Unflipped: column 16 shows image column dx + 12; flipped it shows 31 - (dx + 12).
    dx = torch.where(flipped, 19 - col, col - 12)
    return flipped, row.long() - 10 - 12, dx


def reference(image: torch.Tensor, flipped: bool, dy: int, dx: int) -> torch.Tensor:
    image = image.flip(-1) if flipped else image
    return F.pad(image, (4, 4, 4, 4))[:, dy : dy + 32, dx : dx + 32]


def test_flip_crop_matches_per_image_reference():
    x = position_images(300)
    out = flip_crop(x, gen())
    assert out.shape == x.shape and out.dtype == x.dtype and out.is_contiguous()
    flipped, dy, dx = recover(out)
    for i in range(len(x)):
        expected = reference(x[i], bool(flipped[i]), int(dy[i]), int(dx[i]))
        assert torch.equal(out[i], expected), i


def test_flip_rate_is_one_half():
    n = 10_000
    flipped, _, _ = recover(flip_crop(position_images(n), gen(1)))
    # Binomial(n, 1/2): 5 standard deviations.
    assert abs(flipped.sum().item() - n / 2) < 5 * math.sqrt(n / 4)


def test_crop_offsets_uniform_and_independent():
    n = 9_000
    flipped, dy, dx = recover(flip_crop(position_images(n), gen(2)))
    assert dy.min() == 0 and dy.max() == 8 and dx.min() == 0 and dx.max() == 8
    for offsets in (dy, dx):
        counts = torch.bincount(offsets, minlength=9).double()
        expected = n / 9
        chi2 = ((counts - expected) ** 2 / expected).sum().item()
        assert chi2 < 26.1  # chi-square, 8 degrees of freedom, p = 0.001
    # dy and dx jointly uniform over the 81 cells (80 dof, p = 0.001), so not tied to each other.
    joint = torch.bincount(dy * 9 + dx, minlength=81).double()
    assert ((joint - n / 81) ** 2 / (n / 81)).sum().item() < 124.8
    # Neither offset, nor the flip, is correlated with its neighbour's in the batch.
    for v in (dy.double(), dx.double(), flipped.double()):
        r = np.corrcoef(v[:-1].numpy(), v[1:].numpy())[0, 1]
        assert abs(r) < 4 / math.sqrt(n)
    r = np.corrcoef(flipped.double().numpy(), dx.double().numpy())[0, 1]
    assert abs(r) < 4 / math.sqrt(n)


def test_padding_is_raw_black():
    x = position_images(500)
    out = flip_crop(x, gen(3))
    _, dy, dx = recover(out)
    zeros = (out == 0).sum(dim=(2, 3))  # no image pixel is 0, so zeros are padding
    expected = 32 * 32 - (32 - (dy - 4).abs()) * (32 - (dx - 4).abs())
    assert torch.equal(zeros, expected[:, None].expand(-1, 3))

    white = flip_crop(torch.full((200, 3, 32, 32), 255, dtype=torch.uint8), gen(4))
    assert set(white.unique().tolist()) == {0, 255}
    normed = normalize(white, MEAN, STD)
    padding = (white == 0).expand_as(normed)
    target = (-MEAN / STD)[None, :, None, None].expand_as(normed)
    torch.testing.assert_close(normed[padding], target[padding])


def test_identical_images_get_independent_augmentations():
    x = position_images(1).expand(64, -1, -1, -1).contiguous()
    out = flip_crop(x, gen(5))
    assert len(torch.unique(out.flatten(1), dim=0)) > 30


def test_same_seed_repeats_different_seed_differs():
    x = position_images(64)
    assert torch.equal(flip_crop(x, gen(7)), flip_crop(x, gen(7)))
    assert not torch.equal(flip_crop(x, gen(7)), flip_crop(x, gen(8)))


def test_flip_crop_float_and_channels_last():
    x = position_images(32)
    expected = flip_crop(x, gen(9))
    as_float = flip_crop(x.float(), gen(9))
    assert as_float.dtype == torch.float32 and torch.equal(as_float, expected.float())
    cl = flip_crop(x.contiguous(memory_format=torch.channels_last), gen(9))
    assert cl.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(cl, expected)


def test_normalize():
    x = torch.randint(0, 256, (4, 3, 8, 8), generator=gen(), dtype=torch.uint8)
    out = normalize(x, MEAN, STD)
    assert out.dtype == torch.float32
    expected = (x.double() / 255 - MEAN.double()[:, None, None]) / STD.double()[:, None, None]
    torch.testing.assert_close(out.double(), expected, rtol=1e-6, atol=1e-6)
    cl = normalize(x.contiguous(memory_format=torch.channels_last), MEAN, STD)
    assert cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(cl, out)
    half = normalize(x, MEAN, STD, dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half, out.bfloat16())


def beta_cdf(x: float, a: float) -> float:
    """CDF of Beta(a, a) at x; u = x**a removes the singularity at 0."""
    u = np.linspace(0.0, x**a, 200_001)
    f = (1 - u ** (1 / a)) ** (a - 1) / a
    integral = float(np.sum((f[1:] + f[:-1]) / 2) * (u[1] - u[0]))
    return integral * math.gamma(2 * a) / math.gamma(a) ** 2


def test_mixup_lambda_is_beta():
    alpha, n = 0.2, 20_000
    rng = np.random.default_rng(0)
    lam = np.array([sample_mixup_lambda(alpha, rng) for _ in range(n)])
    assert isinstance(sample_mixup_lambda(alpha, rng), float)
    assert ((lam >= 0) & (lam <= 1)).all()
    var = 1 / (4 * (2 * alpha + 1))  # Beta(a, a): a² / ((2a)² (2a + 1))
    assert abs(lam.mean() - 0.5) < 5 * math.sqrt(var / n)
    assert abs(lam.var() - var) < 0.01
    # U-shaped: most mass near 0 and 1.
    p = beta_cdf(0.1, alpha)
    assert 0.3 < p < 0.35
    for share in ((lam < 0.1).mean(), (lam > 0.9).mean()):
        assert abs(share - p) < 5 * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("alpha", [0.0, -1.0])
def test_mixup_lambda_off(alpha):
    assert sample_mixup_lambda(alpha, np.random.default_rng(0)) == 1.0


def test_mixup():
    x = torch.randn(16, 3, 4, 4, generator=gen())
    mixed, partner = mixup(x, 0.3, gen(1))
    assert torch.equal(torch.sort(partner).values, torch.arange(16))
    assert torch.equal(mixed, 0.3 * x + 0.7 * x[partner])
    again, partner2 = mixup(x, 0.3, gen(1))
    assert torch.equal(partner, partner2) and torch.equal(mixed, again)
    assert not torch.equal(partner, mixup(x, 0.3, gen(2))[1])
    assert torch.equal(mixup(x, 1.0, gen(1))[0], x)


def test_mixup_accuracy():
    logits = torch.eye(4)  # predictions 0, 1, 2, 3
    y = torch.tensor([0, 1, 0, 0])
    y_partner = torch.tensor([1, 1, 2, 3])
    acc = mixup_accuracy(logits, y, y_partner, 0.7)
    # Per example: 0.7, 0.7 + 0.3, 0.3, 0.3; a sum, not a mean.
    assert acc.dim() == 0 and acc.dtype == torch.float32
    assert acc.item() == pytest.approx(2.3)
    assert mixup_accuracy(logits, y, y_partner, 1.0).item() == 2.0
    assert mixup_accuracy(logits, y, y_partner, 0.0).item() == 3.0


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda_with_cuda_generator():
    x = position_images(256).cuda()
    g = torch.Generator(device="cuda").manual_seed(0)
    out = flip_crop(x, g)
    assert out.is_cuda
    flipped, dy, dx = recover(out.cpu())
    for i in range(len(x)):
        assert torch.equal(
            out[i].cpu(), reference(x[i].cpu(), bool(flipped[i]), int(dy[i]), int(dx[i]))
        )
    normed = normalize(out, MEAN, STD)
    mixed, partner = mixup(normed, 0.4, g)
    assert mixed.is_cuda and partner.is_cuda
    acc = mixup_accuracy(torch.randn(256, 100, device="cuda"), partner, partner, 0.4)
    assert acc.is_cuda and acc.dim() == 0
