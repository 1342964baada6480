"""CAM / Grad-CAM oracles and the spurious share on BiasedShapes' exact mask."""
import numpy as np
import pytest
import torch

from nccore.data.synthetic import make_biased_shapes
from nccore.metrics.saliency import cam, decode_panel, encode_panel, grad_cam, saliency, spurious_share
from nccore.models import build_model


@pytest.mark.parametrize("arch", ["resnet18", "vgg11", "densenet121"])
def test_a_classifier_reading_one_channel_gives_that_channels_map(arch):
    torch.manual_seed(0)
    m = build_model(arch, 2, width=0.125, image_size=16).eval()
    k = 3
    with torch.no_grad():
        m.classifier.weight.zero_()
        m.classifier.weight[1, k] = 2.0
    x = torch.rand(2, 3, 16, 16)
    A = m.body(x)
    target = torch.tensor([1, 1])
    assert torch.allclose(cam(m, x, target), 2.0 * A[:, k], atol=1e-6)
    # Grad-CAM of a GAP-linear head = ReLU(CAM) / (h·w)
    h, w = A.shape[-2:]
    assert torch.allclose(grad_cam(m, x, target), torch.relu(2.0 * A[:, k]) / (h * w), atol=1e-6)


def test_spurious_share_by_hand():
    maps = torch.tensor([[[1.0, 3.0], [0.0, -5.0]]])
    mask = torch.tensor([[[True, False], [False, True]]])
    assert spurious_share(maps, mask).tolist() == [0.25]     # 1 / (1 + 3); the negative pixel is ignored
    assert np.isnan(spurious_share(torch.zeros(1, 2, 2), mask)[0])


def test_biased_shapes_mask_is_the_background():
    d = make_biased_shapes(4, image_size=16, noise=0.0, seed=1)
    for x, m, p in zip(d["x"], d["spurious_mask"], d["p"]):
        bg = np.array([[0.2, 0.4, 0.9], [0.9, 0.6, 0.2]], dtype=np.float32)[p]
        assert np.allclose(x[:, m].T, bg) and not np.allclose(x[:, ~m].T, bg)


def test_saliency_upsamples_to_the_image_and_the_panel_round_trips():
    m = build_model("resnet18", 2, width=0.125, image_size=16).eval()
    x = torch.rand(3, 3, 16, 16)
    maps, pred = saliency(m, x)
    assert maps.shape == (3, 16, 16) and pred.shape == (3,)
    s = encode_panel(x.numpy(), maps.numpy(), np.arange(3), np.zeros(3), pred.numpy())
    back = decode_panel(s)
    assert back["images"].shape == (3, 3, 16, 16) and back["maps"].max() == 255


def test_vgg_on_small_images_falls_back_to_grad_cam_at_a_spatial_layer():
    m = build_model("vgg11", 2, width=0.125, image_size=16).eval()
    m.requires_grad_(False)                                  # a frozen base (tuning methods)
    x = torch.rand(2, 3, 16, 16)
    assert m.body(x).shape[-1] == 1                          # CAM would be constant
    maps, _ = saliency(m, x)
    assert maps.shape == (2, 16, 16) and maps.flatten(1).std(1).min() > 0
