import pytest
import torch
from torch import nn

from hpstudy.errors import HpstudyError
from hpstudy.models import count_macs, count_parameters, create_model, list_models

MOBILENET_PARAMS = 3_309_476  # SPEC §1, width 1.0, 100 classes
MOBILENET_MACS = 46_446_592  # SPEC §1 says "about 46.4 M"


def test_registry_lists_all_models():
    assert {"mobilenet", "mobilenetv2", "resnet18"} <= set(list_models())


def test_unknown_model_names_the_known_ones():
    with pytest.raises(HpstudyError, match=r"unknown model 'mobilenet3'.*mobilenet.*resnet18"):
        create_model("mobilenet3")


@pytest.mark.parametrize("width", [0.0, -1.0, float("nan")])
def test_bad_width_is_a_user_error(width):
    with pytest.raises(HpstudyError, match="width"):
        create_model("mobilenet", width=width)


def test_mobilenet_parameter_count():
    assert count_parameters(create_model("mobilenet", 100, 1.0)) == MOBILENET_PARAMS


def test_mobilenet_macs():
    macs = count_macs(create_model("mobilenet"))
    assert macs == MOBILENET_MACS
    assert abs(macs - 46.4e6) / 46.4e6 < 0.01


def test_mobilenet_architecture():
    m = create_model("mobilenet")
    assert len(m.blocks) == 13
    strides = [b.depthwise.conv.stride[0] for b in m.blocks]
    assert strides == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
    assert [b.pointwise.conv.out_channels for b in m.blocks][-2:] == [1024, 1024]
    assert all(b.depthwise.conv.groups == b.depthwise.conv.in_channels for b in m.blocks)
    assert all(conv.bias is None for conv in m.modules() if isinstance(conv, nn.Conv2d))
    assert m.classifier.bias is not None


@pytest.mark.parametrize("num_classes", [100, 10])
def test_mobilenet_output_shape(num_classes):
    m = create_model("mobilenet", num_classes, width=0.25).eval()
    assert m(torch.zeros(3, 3, 32, 32)).shape == (3, num_classes)


def test_width_scales_channels_and_parameters():
    counts = {}
    for width in (1.0, 0.5, 0.25):
        m = create_model("mobilenet", width=width)
        assert m.classifier.in_features == int(1024 * width)
        assert m.stem.conv.out_channels == int(32 * width)
        counts[width] = count_parameters(m)
    assert counts[1.0] > counts[0.5] > counts[0.25]


def test_count_macs_restores_training_mode():
    m = create_model("mobilenet", width=0.125)
    m.blocks[0].eval()  # a partly frozen model must come back exactly as it was
    count_macs(m)
    assert m.training and m.stem.training
    assert not m.blocks[0].training and not m.blocks[0].depthwise.bn.training
    count_macs(m.eval())
    assert not m.training


def test_count_macs_leaves_the_model_as_it_was():
    m = create_model("mobilenet", width=0.125)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    first = count_macs(m)
    # the pass runs in eval mode: BN running statistics are not updated
    assert all(torch.equal(v, state[k]) for k, v in m.state_dict().items())
    assert all(not mod._forward_hooks and not mod._forward_pre_hooks for mod in m.modules())
    assert torch.is_grad_enabled()
    assert count_macs(m) == first  # nothing accumulates between calls


def test_count_macs_by_hand():
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 32 * 32, 10))
    assert count_macs(m) == 8 * 32 * 32 * 3 * 9 + 8 * 32 * 32 * 10


def test_count_macs_by_hand_depthwise_strided():
    m = nn.Sequential(
        nn.Conv2d(3, 8, 1),  # pointwise: 8 x 32 x 32 outputs, 3 inputs each
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8),  # depthwise: 8 x 16 x 16, 1 x 3 x 3
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )
    assert count_macs(m) == 8 * 32 * 32 * 3 + 8 * 16 * 16 * 9 + 10 * 8  # biases, BN, pool: none
    assert count_macs(m, input_size=(3, 64, 64)) == 4 * (8 * 32 * 32 * 3 + 8 * 16 * 16 * 9) + 80


@pytest.mark.parametrize("name", ["mobilenet", "mobilenetv2", "resnet18"])
def test_forward_backward_small_width(name):
    torch.manual_seed(0)
    m = create_model(name, num_classes=10, width=0.125)
    out = m(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    nn.functional.cross_entropy(out, torch.tensor([1, 2])).backward()
    assert all(p.grad is not None for p in m.parameters())


@pytest.mark.parametrize(
    ("name", "params"),
    # ResNet-18 and MobileNetV2 match the widely used kuangliu/pytorch-cifar counts.
    [("resnet18", 11_220_132), ("mobilenetv2", 2_412_212), ("mobilenet", MOBILENET_PARAMS)],
)
def test_parameter_counts(name, params):
    assert count_parameters(create_model(name, 100)) == params
    assert count_parameters(create_model(name, 100, width=0.5)) < params
