"""Every architecture keeps the features/classifier contract and trains."""
import pytest
import torch

from nccore.models import ARCHS, build_model


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_features_and_classifier_shapes_and_a_few_steps(arch):
    torch.manual_seed(0)
    m = build_model(arch, num_classes=3, width=0.125, image_size=16)
    x, y = torch.randn(16, 3, 16, 16), torch.randint(0, 3, (16,))
    f = m.features(x)
    assert f.shape == (16, m.feature_dim) and isinstance(m.classifier, torch.nn.Linear)
    assert m.classifier.in_features == m.feature_dim and m.classifier.out_features == 3
    assert torch.equal(m(x), m.classifier(f))
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(8):
        loss = torch.nn.functional.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_imagenet_stem_for_large_images():
    m = build_model("resnet18", 2, width=0.125, image_size=96)
    assert m.body[0][0].kernel_size == (7, 7)
    assert m.features(torch.randn(2, 3, 96, 96)).shape == (2, m.feature_dim)


def test_width_scales_channels():
    assert build_model("vgg11", 2, 0.25).feature_dim == 128
    assert build_model("resnet18", 2, 0.5).feature_dim == 256


def test_unknown_arch_and_bad_width_are_refused():
    with pytest.raises(ValueError, match="arch='resnet50'.*choose one of"):
        build_model("resnet50", 2)
    with pytest.raises(ValueError, match="width=0"):
        build_model("vgg11", 2, width=0)


def test_local_weights_load_and_mismatch_is_clear(tmp_path):
    src = build_model("resnet18", 5, width=0.125)
    torch.save(src.state_dict(), tmp_path / "w.pt")
    dst = build_model("resnet18", 2, width=0.125, weights=str(tmp_path / "w.pt"))
    assert torch.equal(dst.body[0][0].weight, src.body[0][0].weight)   # body loaded, fresh 2-class head kept
    with pytest.raises(ValueError, match="do not fit this architecture"):
        build_model("resnet18", 2, width=0.25, weights=str(tmp_path / "w.pt"))
    with pytest.raises(ValueError, match="file not found"):
        build_model("resnet18", 2, weights=str(tmp_path / "missing.pt"))
