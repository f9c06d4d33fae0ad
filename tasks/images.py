"""Image codecs and value conversions, each a named numerical choice.

Shards hold lossless PNG. Float generator outputs become uint8 by
round(x * 255) for [0, 1] and round((x + 1) * 127.5) for [-1, 1], after
clipping to the declared range (values outside it are an error first).
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
from PIL import Image

from casflow.tasks.errors import InputError
from casflow.tasks.parallel import ordered_map

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


# What PIL may take an image file for. Anything else is refused before decoding: PIL would otherwise
# identify dozens of formats by content whatever the file's name (EPS would start Ghostscript).
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "PPM", "BMP")
_CHANNELS = {"L": 1, "LA": 1, "RGB": 3, "RGBA": 3, "P": 3}  # per mode, as decode_image converts it


def _open(data: bytes, source: str) -> Image.Image:
    """The image's header only (PIL reads pixels on load()), in one of IMAGE_FORMATS."""
    try:
        return Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except Image.UnidentifiedImageError:  # its message shows a BytesIO's address, not the file
        raise InputError("corrupt or unreadable image (not a PNG, JPEG, WebP, PPM or BMP file PIL can read)",
                         source=source) from None
    except Image.DecompressionBombError as exc:
        raise InputError(f"image refused before decoding ({exc})", source=source) from None
    except Exception as exc:  # PIL raises many types for broken headers
        raise InputError(f"corrupt or unreadable image ({type(exc).__name__}: {exc})", source=source) from None


def _declared_shape(img: Image.Image, source: str, max_pixels: int) -> tuple[int, int, int]:
    """(H, W, C) from the header, before any pixel is decoded; more than max_pixels is an error."""
    width, height = img.size
    if width * height > max_pixels:
        raise InputError(f"image is {height}x{width} ({width * height} pixels), more than limits.max_image_pixels "
                         f"({max_pixels}); refused before decoding", source=source)
    if img.mode not in _CHANNELS:
        raise InputError(f"unsupported image mode {img.mode}; give 8-bit grey or RGB images", source=source)
    return height, width, _CHANNELS[img.mode]


def decode_image(data: bytes, source: str, *, max_pixels: int, shape: tuple[int, int, int] | None = None) -> np.ndarray:
    """Image file bytes -> uint8 HWC with C = 1 (grey) or 3 (RGB).

    The header is checked before decoding: at most max_pixels pixels, and the
    (H, W, C) given as `shape`, when given. Palette images become RGB; an alpha
    channel is dropped only when fully opaque (anything else would silently
    change the pixels)."""
    with _open(data, source) as img:
        declared = _declared_shape(img, source, max_pixels)
        if shape is not None and declared[:2] != shape[:2]:  # the size before decoding; channels after (alpha first)
            raise InputError(f"image is {_hwc(declared)}, the first image is {_hwc(shape)}", source=source)
        try:
            img.load()
            if img.mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            mode = img.mode
            if mode in ("RGBA", "LA"):
                alpha = np.asarray(img.getchannel("A"))
                if alpha.min() < 255:
                    raise InputError(f"image has transparent pixels (mode {mode}); give opaque RGB or grey images", source=source)
                img = img.convert("RGB" if mode == "RGBA" else "L")
            array = np.asarray(img, dtype=np.uint8)
        except InputError:
            raise
        except Exception as exc:  # PIL raises many types for broken files
            raise InputError(f"corrupt or unreadable image ({type(exc).__name__}: {exc})", source=source) from None
    array = array[:, :, None] if array.ndim == 2 else array
    if shape is not None and array.shape != shape:
        raise InputError(f"image is {_hwc(array.shape)}, the first image is {_hwc(shape)}", source=source)
    return array


def decode_stack(blobs: list[bytes], sources: list[str], *, max_pixels: int, max_decoded_bytes: int,
                 what: str, workers: int | None = None) -> np.ndarray:
    """Images of one size decoded into one uint8 NHWC array, on every core (`parallel.ordered_map`).

    Sizes are checked before pixels are decoded: the first image's header
    gives (H, W, C), N x H x W x C must not exceed max_decoded_bytes, and every
    image's header must show the same (H, W, C) within max_pixels. `what`
    names the input in the error about its total."""
    if not blobs:
        return np.zeros((0, 1, 1, 1), dtype=np.uint8)
    shape = header_shape(blobs[0], sources[0], max_pixels)
    check_decoded_bytes(len(blobs), shape, max_decoded_bytes, what)
    out = np.empty((len(blobs), *shape), dtype=np.uint8)
    jobs = ((blobs[i : i + CHUNK], sources[i : i + CHUNK], max_pixels, shape) for i in range(0, len(blobs), CHUNK))
    for start, chunk in zip(range(0, len(blobs), CHUNK), ordered_map(decode_chunk, jobs, workers=workers)):
        out[start : start + len(chunk)] = chunk
    return out


def header_shape(blob: bytes, source: str, max_pixels: int) -> tuple[int, int, int]:
    """(H, W, C) an image declares in its header, checked against max_pixels; no pixel is decoded."""
    with _open(blob, source) as img:
        return _declared_shape(img, source, max_pixels)


def check_decoded_bytes(count: int, shape: tuple[int, int, int], max_decoded_bytes: int, what: str) -> None:
    """N x H x W x C of an input's images, from the first image's header, against limits.max_decoded_bytes."""
    total = count * shape[0] * shape[1] * shape[2]
    if total > max_decoded_bytes:
        raise InputError(f"{count} images of {_hwc(shape)} decode to {total} bytes, more than "
                         f"limits.max_decoded_bytes ({max_decoded_bytes}); refused before decoding", source=what)


# ---------------------------------------------------------------- jobs for the worker processes (parallel.py)

CHUNK = 256  # images per job: large enough to amortise the trip to a worker, small enough to bound memory


def decode_chunk(blobs: list[bytes], sources: list[str], max_pixels: int, shape: tuple[int, int, int]) -> np.ndarray:
    """Image files -> uint8 (N, H, W, C), each checked against `shape` from its header first."""
    out = np.empty((len(blobs), *shape), dtype=np.uint8)
    for i, (blob, source) in enumerate(zip(blobs, sources)):
        out[i] = decode_image(blob, source, max_pixels=max_pixels, shape=shape)
    return out


@dataclasses.dataclass(frozen=True)
class Transcode:
    """What happens to each image between its source and a shard: decoded (image files) and checked
    against the source's `shape` (the first image's, from its header), resized to `size` (H, W) with
    `resize_filter` when that differs from the source's, encoded as PNG."""

    shape: tuple[int, int, int]
    max_pixels: int
    size: tuple[int, int] | None = None
    resize_filter: str | None = None


def png_chunk(images: np.ndarray | list[bytes], sources: list[str], transcode: Transcode) -> list[bytes]:
    """uint8 NHWC images, or image files, -> PNG bytes each; the same bytes in any process."""
    out = []
    for i, image in enumerate(images):
        if isinstance(image, bytes):
            image = decode_image(image, sources[i], max_pixels=transcode.max_pixels, shape=transcode.shape)
        if transcode.size is not None and image.shape[:2] != transcode.size:
            image = resize(image[None], *transcode.size, transcode.resize_filter)[0]
        out.append(encode_png(image))
    return out


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


def encode_many(images: np.ndarray, workers: int | None = None) -> list[bytes]:
    """PNG bytes of uint8 NHWC images, on every core."""
    jobs = ((images[i : i + CHUNK], [], Transcode(tuple(images.shape[1:]), 0)) for i in range(0, len(images), CHUNK))
    return [png for chunk in ordered_map(png_chunk, jobs, workers=workers) for png in chunk]


def _hwc(shape: tuple[int, ...]) -> str:
    return f"{shape[0]}x{shape[1]} with {shape[2]} channel{'s' if shape[2] != 1 else ''}"
