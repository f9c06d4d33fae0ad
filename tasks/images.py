"""Image codecs and value conversions, each a named numerical choice.

Shards hold lossless PNG. Float generator outputs become uint8 by
round(x * 255) for [0, 1] and round((x + 1) * 127.5) for [-1, 1], after
clipping to the declared range (values outside it are an error first).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from casflow.tasks.errors import InputError

T = TypeVar("T")

PNG_COMPRESS_LEVEL = 1  # zlib level: fast; shards are about 10% larger than at level 6
RESIZE_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}
IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "ppm", "bmp")


def encode_png(image: np.ndarray) -> bytes:
    """uint8 HWC (C = 1 or 3) -> PNG bytes; identical input gives identical bytes."""
    mode = {1: "L", 3: "RGB"}[image.shape[2]]
    buffer = io.BytesIO()
    Image.fromarray(image[:, :, 0] if mode == "L" else image, mode).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def decode_image(data: bytes, source: str) -> np.ndarray:
    """Image file bytes -> uint8 HWC with C = 1 (grey) or 3 (RGB).

    Palette images become RGB; an alpha channel is dropped only when fully
    opaque (anything else would silently change the pixels)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if img.mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            mode = img.mode
            if mode in ("RGBA", "LA"):
                alpha = np.asarray(img.getchannel("A"))
                if alpha.min() < 255:
                    raise InputError(f"image has transparent pixels (mode {mode}); give opaque RGB or grey images", source=source)
                img = img.convert("RGB" if mode == "RGBA" else "L")
            elif mode not in ("L", "RGB"):
                raise InputError(f"unsupported image mode {mode}; give 8-bit grey or RGB images", source=source)
            array = np.asarray(img, dtype=np.uint8)
    except InputError:
        raise
    except Image.UnidentifiedImageError:  # its message shows a BytesIO's address, not the file
        raise InputError("corrupt or unreadable image (no image format PIL knows)", source=source) from None
    except Exception as exc:  # PIL raises many types for broken files
        raise InputError(f"corrupt or unreadable image ({type(exc).__name__}: {exc})", source=source) from None
    return array[:, :, None] if array.ndim == 2 else array


def resize(images: np.ndarray, height: int, width: int, filter_name: str) -> np.ndarray:
    """uint8 NHWC -> uint8 NHWC at (height, width) with the named PIL filter."""
    resample = RESIZE_FILTERS[filter_name]
    out = np.empty((len(images), height, width, images.shape[3]), dtype=np.uint8)
    for i, image in enumerate(images):
        pil = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)
        resized = np.asarray(pil.resize((width, height), resample=resample))
        out[i] = resized[:, :, None] if resized.ndim == 2 else resized
    return out


def to_uint8(array: np.ndarray, output_range: str, *, model: str, source: str) -> np.ndarray:
    """Generator output in its declared range -> uint8, with errors for anything outside it."""
    if output_range == "uint8":
        if array.dtype != np.uint8:
            raise InputError(f"expected uint8 images (output_range: uint8), got dtype {array.dtype}", model=model, source=source)
        return array
    if not np.issubdtype(array.dtype, np.floating):
        raise InputError(f"expected float images for output_range {output_range}, got dtype {array.dtype}", model=model, source=source)
    finite = np.isfinite(array)
    if not finite.all():
        bad = int((~finite).sum())
        kind = "NaN" if np.isnan(array).any() else "infinite"
        raise InputError(f"{bad} {kind} values in the images", model=model, source=source)
    low, high = (0.0, 1.0) if output_range == "0..1" else (-1.0, 1.0)
    tolerance = 1e-3  # float noise at the edges of the range is not an error
    lo, hi = float(array.min()), float(array.max())
    if lo < low - tolerance or hi > high + tolerance:
        raise InputError(f"values span [{lo:.4g}, {hi:.4g}], outside the declared output_range {output_range}",
                         model=model, source=source)
    unit = (np.clip(array, low, high) - low) / (high - low)
    return np.rint(unit.astype(np.float64) * 255).astype(np.uint8)


def in_threads(fn: Callable[..., T], *columns: Sequence[Any]) -> list[T]:
    """fn over the items in order, on every core: PIL and zlib release the GIL while they work."""
    if len(columns[0]) < 256:
        return list(map(fn, *columns))
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        return list(pool.map(fn, *columns, chunksize=64))


def decode_many(blobs: list[bytes], sources: list[str]) -> list[np.ndarray]:
    return in_threads(decode_image, blobs, sources)


def encode_many(images: np.ndarray) -> list[bytes]:
    return in_threads(encode_png, images)


def stack_images(images: list[np.ndarray], sources: list[str]) -> np.ndarray:
    """One uint8 NHWC array; an image whose shape differs from the first is named in the error."""
    if not images:
        return np.zeros((0, 1, 1, 1), dtype=np.uint8)
    shape = images[0].shape
    for image, source in zip(images, sources):
        if image.shape != shape:
            raise InputError(f"image is {_hwc(image.shape)}, the first image is {_hwc(shape)}", source=source)
    return np.stack(images)


def _hwc(shape: tuple[int, ...]) -> str:
    return f"{shape[0]}x{shape[1]} with {shape[2]} channel{'s' if shape[2] != 1 else ''}"
