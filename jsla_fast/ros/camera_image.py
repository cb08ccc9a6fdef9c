"""ROS camera messages to the model's RGB input, without cv_bridge (the README's "ROS node" lists the encodings).

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
    rgb = np.ascontiguousarray(pixels[:, :, :3] if encoding.startswith("rgb") else pixels[:, :, 2::-1])
    return rgb if rgb.flags.writeable else rgb.copy()  # a view of the message's bytes is read-only


def decode_compressed(fmt: str, data: bytes | bytearray | memoryview) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` fields (JPEG or PNG bytes) -> RGB ``uint8 [H,W,3]``."""
    import cv2

    if len(data) == 0:
        raise ImageError("compressed image has no data")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageError(f"could not decode the compressed image (format {fmt!r}, {len(data)} bytes)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def encode_image(rgb: np.ndarray, encoding: str = "rgb8", padding: int = 0) -> tuple[int, int, int, bytes]:
    """RGB ``uint8 [H,W,3]`` -> ``(height, width, step, data)`` of a ``sensor_msgs/Image`` in ``encoding``
    (little-endian; rows padded with ``padding`` bytes). Mono is BT.601 luma (mono16: x257), alpha is
    opaque, Bayer keeps each site's colour of the pattern named by the encoding's top-left 2x2 block."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageError(f"expected an RGB uint8 image [H,W,3], got {rgb.dtype} {rgb.shape}")
    if encoding not in CHANNELS:
        raise ImageError(f"unsupported encoding {encoding!r}; supported: {', '.join(ENCODINGS)}")
    h, w, _ = rgb.shape
    if encoding.startswith("mono"):
        import cv2

        gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
        pixels = (gray.astype("<u2") * 257).view(np.uint8) if encoding == "mono16" else gray
    elif encoding in _BAYER:
        pixels = np.empty((h, w), np.uint8)
        for k, colour in enumerate(encoding[len("bayer_"):len("bayer_") + 4]):  # e.g. "rggb"
            y, x = divmod(k, 2)
            pixels[y::2, x::2] = rgb[y::2, x::2, "rgb".index(colour)]
    else:
        pixels = rgb if encoding.startswith("rgb") else rgb[:, :, ::-1]
        if encoding.endswith("a8"):
            pixels = np.concatenate([pixels, np.full((h, w, 1), 255, np.uint8)], axis=2)
    rows = np.ascontiguousarray(pixels).reshape(h, -1)
    if padding:
        rows = np.concatenate([rows, np.zeros((h, padding), np.uint8)], axis=1)
    return h, w, rows.shape[1], rows.tobytes()
