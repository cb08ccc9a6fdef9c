"""ROS camera messages to the model's RGB input, without cv_bridge (SPEC §1 ROS node, issue 5).

:func:`decode_image` takes the fields of a ``sensor_msgs/Image`` and :func:`decode_compressed`
those of a ``sensor_msgs/CompressedImage``; both return RGB ``uint8 [H,W,3]`` or raise
:class:`ImageError` naming what is wrong (unsupported encoding, malformed sizes), so a node can log
it and drop the frame. Supported encodings: rgb8, bgr8, rgba8, bgra8, mono8, mono16 (scaled to 8
bits), and the Bayer patterns bayer_rggb8 / bggr8 / gbrg8 / grbg8 (OpenCV demosaicing; ROS names
the pattern of the top-left 2x2 block, OpenCV's short names the one a row and column in, so the
pattern-named OpenCV codes are used).
"""
from __future__ import annotations

import numpy as np

CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "mono16": 1,
            "bayer_rggb8": 1, "bayer_bggr8": 1, "bayer_gbrg8": 1, "bayer_grbg8": 1}
BYTES_PER_CHANNEL = {"mono16": 2}
ENCODINGS = tuple(CHANNELS)
_BAYER = {"bayer_rggb8": "COLOR_BayerRGGB2RGB", "bayer_bggr8": "COLOR_BayerBGGR2RGB",
          "bayer_gbrg8": "COLOR_BayerGBRG2RGB", "bayer_grbg8": "COLOR_BayerGRBG2RGB"}


class ImageError(ValueError):
    """The message can't be turned into an image; the text says why."""


def decode_image(encoding: str, height: int, width: int, step: int, data: bytes | bytearray | memoryview,
                 is_bigendian: bool = False) -> np.ndarray:
    """``sensor_msgs/Image`` fields -> RGB ``uint8 [height,width,3]`` (a new array)."""
    if encoding not in CHANNELS:
        raise ImageError(f"unsupported encoding {encoding!r}; supported: {', '.join(ENCODINGS)}")
    if height <= 0 or width <= 0:
        raise ImageError(f"empty image ({width}x{height})")
    row = width * CHANNELS[encoding] * BYTES_PER_CHANNEL.get(encoding, 1)
    if step < row:
        raise ImageError(f"step {step} is shorter than a {encoding} row of width {width} ({row} bytes)")
    if len(data) != step * height:
        raise ImageError(f"data has {len(data)} bytes, expected step x height = {step} x {height} = {step * height}")
    buf = np.frombuffer(data, dtype=np.uint8).reshape(height, step)[:, :row]
    if encoding == "mono16":
        pixels = buf.view(">u2" if is_bigendian else "<u2").reshape(height, width)
        gray = (pixels >> 8).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    pixels = buf.reshape(height, width, CHANNELS[encoding])
    if encoding == "mono8":
        return np.repeat(pixels, 3, axis=2)
    if encoding in _BAYER:
        import cv2

        return cv2.cvtColor(np.ascontiguousarray(pixels[:, :, 0]), getattr(cv2, _BAYER[encoding]))
    rgb = pixels[:, :, :3] if encoding.startswith("rgb") else pixels[:, :, 2::-1]
    return np.ascontiguousarray(rgb)


def decode_compressed(fmt: str, data: bytes | bytearray | memoryview) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` fields (JPEG or PNG bytes) -> RGB ``uint8 [H,W,3]``."""
    import cv2

    if len(data) == 0:
        raise ImageError("compressed image has no data")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageError(f"could not decode the compressed image (format {fmt!r}, {len(data)} bytes)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def encode_rgb8(image: np.ndarray) -> tuple[int, int, int, bytes]:
    """RGB ``uint8 [H,W,3]`` -> ``(height, width, step, data)`` for an rgb8 ``sensor_msgs/Image``."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(f"expected an RGB image [H,W,3], got shape {image.shape}")
    h, w, _ = image.shape
    return h, w, 3 * w, image.tobytes()
