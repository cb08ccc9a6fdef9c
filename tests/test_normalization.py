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
    with pytest.raises(ValueError, match=r"mean must be \[3,H,W\]"):
        Normalization(torch.zeros(4, 1, 1))
    with pytest.raises(ValueError, match="std must be positive"):
        Normalization(torch.zeros(3, 1, 1), torch.zeros(3, 1, 1))
    with pytest.raises(ValueError, match="smaller than the images"):
        Normalization(torch.zeros(3, 2, 2)).apply(torch.zeros(1, 3, 4, 4))
