from __future__ import annotations

import pytest
import torch

from jsla_fast import Normalization


def test_mean_image_is_centre_cropped_and_std_applied():
    mean = torch.arange(3 * 6 * 8, dtype=torch.float32).view(3, 6, 8)
    std = torch.tensor([2.0, 4.0, 8.0]).view(3, 1, 1)
    images = torch.ones(2, 3, 4, 4)
    out = Normalization(mean, std).apply(images)
    torch.testing.assert_close(out, (images - mean[:, 1:5, 2:6]) / std)
    per_channel = Normalization(torch.tensor([0.5, 0.25, 0.0]).view(3, 1, 1))
    torch.testing.assert_close(per_channel.apply(images)[0, :, 0, 0], torch.tensor([0.5, 0.75, 1.0]))


def test_bad_statistics_are_explained():
    with pytest.raises(ValueError, match=r"mean must be a tensor \[3,H,W\] or \[3,1,1\], got \(4, 1, 1\)"):
        Normalization(torch.zeros(4, 1, 1))
    with pytest.raises(ValueError, match="std must be positive"):
        Normalization(torch.zeros(3, 1, 1), torch.zeros(3, 1, 1))
    with pytest.raises(ValueError, match="smaller than the images"):
        Normalization(torch.zeros(3, 2, 2)).apply(torch.zeros(1, 3, 4, 4))


def test_prepare_resizes_subtracts_and_centre_crops():
    mean = torch.rand(3, 8, 12)
    norm = Normalization(mean, size=(8, 12), crop=6)
    image = torch.rand(3, 16, 24)
    expect = (torch.nn.functional.interpolate(image[None], size=(8, 12), mode="bilinear", align_corners=False,
                                              antialias=True)[0] - mean)[:, 1:7, 3:9]
    torch.testing.assert_close(norm.prepare(image), expect)
    assert norm.prepare(image[None].repeat(2, 1, 1, 1)).shape == (2, 3, 6, 6)
    assert Normalization.from_dict(norm.to_dict()).size == (8, 12)
    with pytest.raises(ValueError, match="crop 9 is larger"):
        Normalization(mean, size=(8, 12), crop=9)
