"""ROS image messages to RGB: every supported encoding, row padding, endianness, the Bayer
pattern naming, compressed input, and clear errors for what can't be decoded."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from jsla_fast.ros.camera_image import ENCODINGS, ImageError, decode_compressed, decode_image, encode_image

BAYER_OFFSETS = {  # ROS pattern -> (row, col) of R, and of B, in the top-left 2x2 block
    "bayer_rggb8": ((0, 0), (1, 1)), "bayer_bggr8": ((1, 1), (0, 0)),
    "bayer_gbrg8": ((1, 0), (0, 1)), "bayer_grbg8": ((0, 1), (1, 0)),
}


def smooth_rgb(rng: np.random.Generator, h: int = 24, w: int = 32) -> np.ndarray:
    """A smooth colour image (demosaicing is exact-ish on smooth content)."""
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = rng.uniform(40, 200, 3)
    slope = rng.uniform(-40, 40, (3, 2))
    img = base + slope[:, 0] * y[..., None] + slope[:, 1] * x[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def mosaic(rgb: np.ndarray, encoding: str) -> np.ndarray:
    (ry, rx), (by, bx) = BAYER_OFFSETS[encoding]
    out = rgb[:, :, 1].copy()  # green everywhere, then R and B sites
    out[ry::2, rx::2] = rgb[ry::2, rx::2, 0]
    out[by::2, bx::2] = rgb[by::2, bx::2, 2]
    return out


def message(pixels: np.ndarray, pad: int = 0) -> tuple[int, int, int, bytes]:
    """(height, width, step, data) with ``pad`` bytes of row padding."""
    h = pixels.shape[0]
    rows = pixels.reshape(h, -1).view(np.uint8) if pixels.dtype != np.uint8 else pixels.reshape(h, -1)
    padded = np.concatenate([rows, np.full((h, pad), 77, np.uint8)], axis=1)
    return h, pixels.shape[1], padded.shape[1], padded.tobytes()


@pytest.mark.parametrize("pad", [0, 5])
def test_colour_encodings_decode_to_the_same_rgb(seed, pad):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (7, 9, 1), dtype=np.uint8)
    variants = {"rgb8": rgb, "bgr8": rgb[:, :, ::-1], "rgba8": np.concatenate([rgb, alpha], 2),
                "bgra8": np.concatenate([rgb[:, :, ::-1], alpha], 2)}
    for encoding, pixels in variants.items():
        h, w, step, data = message(np.ascontiguousarray(pixels), pad)
        np.testing.assert_array_equal(decode_image(encoding, h, w, step, data), rgb, err_msg=encoding)


def test_mono_encodings_replicate_gray(seed):
    rng = np.random.default_rng(seed)
    gray16 = rng.integers(0, 65536, (5, 6), dtype=np.uint16)
    want = np.repeat((gray16 >> 8).astype(np.uint8)[:, :, None], 3, axis=2)
    for big in (False, True):
        pixels = gray16.astype(">u2" if big else "<u2")
        h, w, step, data = message(pixels, pad=2)
        np.testing.assert_array_equal(decode_image("mono16", h, w, step, data, is_bigendian=big), want)
    gray8 = rng.integers(0, 256, (5, 6), dtype=np.uint8)
    h, w, step, data = message(gray8)
    np.testing.assert_array_equal(decode_image("mono8", h, w, step, data), np.repeat(gray8[:, :, None], 3, 2))


@pytest.mark.parametrize("encoding", sorted(BAYER_OFFSETS))
def test_bayer_patterns_follow_ros_naming(encoding, seed):
    rng = np.random.default_rng(seed)
    rgb = smooth_rgb(rng)
    h, w, step, data = message(mosaic(rgb, encoding))
    got = decode_image(encoding, h, w, step, data).astype(int)
    inner = (slice(2, -2), slice(2, -2))  # demosaicing guesses at the border
    assert np.abs(got[inner] - rgb[inner].astype(int)).max() <= 3, encoding
    # a saturated primary comes back as that primary (a wrong pattern offset swaps R and B)
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 200
    h, w, step, data = message(mosaic(red, encoding))
    assert tuple(decode_image(encoding, h, w, step, data)[4, 4]) == (200, 0, 0)


def test_compressed_jpeg_and_png(seed):
    rgb = smooth_rgb(np.random.default_rng(seed))
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    np.testing.assert_array_equal(decode_compressed("png", png.tobytes()), rgb)
    ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 98])
    assert np.abs(decode_compressed("jpeg", jpg.tobytes()).astype(int) - rgb).max() <= 8
    with pytest.raises(ImageError, match="could not decode"):
        decode_compressed("jpeg", b"not a jpeg")
    with pytest.raises(ImageError, match="no data"):
        decode_compressed("jpeg", b"")


def test_bad_messages_name_the_problem():
    with pytest.raises(ImageError, match="unsupported encoding '32FC1'"):
        decode_image("32FC1", 2, 2, 16, bytes(32))
    with pytest.raises(ImageError, match="empty image"):
        decode_image("rgb8", 0, 4, 12, b"")
    with pytest.raises(ImageError, match="expected step x height = 12 x 2 = 24"):
        decode_image("rgb8", 2, 4, 12, bytes(23))
    with pytest.raises(ImageError, match="step 10 is shorter"):
        decode_image("rgb8", 2, 4, 10, bytes(20))
    assert set(ENCODINGS) >= {"rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "bayer_rggb8"}


@pytest.mark.parametrize("pad", [0, 3])
def test_encode_image_is_decode_images_inverse(seed, pad):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    for encoding in ENCODINGS:
        h, w, step, data = encode_image(rgb, encoding, padding=pad)
        assert (h, w) == (6, 8) and len(data) == step * h, encoding
        if encoding in BAYER_OFFSETS:  # the raw mosaic is what the test's own oracle builds
            raw = np.frombuffer(data, np.uint8).reshape(h, step)[:, :w]
            np.testing.assert_array_equal(raw, mosaic(rgb, encoding), err_msg=encoding)
            continue
        want = np.repeat(gray[:, :, None], 3, 2) if encoding.startswith("mono") else rgb
        np.testing.assert_array_equal(decode_image(encoding, h, w, step, data), want, err_msg=encoding)
    with pytest.raises(ImageError, match="RGB uint8"):
        encode_image(rgb[:, :, 0])
    with pytest.raises(ImageError, match="unsupported encoding"):
        encode_image(rgb, "yuv422")
