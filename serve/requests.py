"""HTTP request bodies → (image, vocabulary, options), with every user mistake as a `RequestError`.

Two body forms carry the same fields:
- JSON: {"image": "<base64 PNG/JPEG bytes>", "vocabulary": ["sky", "car"], "file": "street.jpg", <options>}
- multipart/form-data: an `image` file part (its filename is the JSON's image.file), repeated `vocabulary`
  fields, options as fields.
Options (as `clipsam segment`): min_confidence, min_region_size, iou_threshold, max_prompts, use_boxes.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from clipsam import SegmentOptions, Vocabulary, vocabulary_from_words
from clipsam.engine.errors import VocabularyError
from clipsam.engine.image_io import to_rgb_u8
from clipsam.serve.multipart import MultipartError, parse_multipart

INT_MAX = 2**31 - 1


@dataclass(frozen=True)
class OptionField:
    """One request option: its type, inclusive range, default and meaning. The parser below enforces it
    and serve/openapi.py describes it, from this one table."""

    kind: type  # float, int or bool
    default: object
    description: str
    low: float | None = None
    high: float | None = None
    nullable: bool = False


OPTIONS = {
    "min_confidence": OptionField(float, 0.7, "a region's SCLIP confidence to become a prompt", 0.0, 1.0),
    "min_region_size": OptionField(int, 100, "smallest region (pixels) that becomes a prompt", 0, INT_MAX),
    "iou_threshold": OptionField(float, 0.8, "same-class masks overlapping more are merged", 0.0, 1.0),
    "max_prompts": OptionField(int, None, "keep at most this many prompts (null: all)", 1, INT_MAX, True),
    "use_boxes": OptionField(bool, False, "give SAM2 each region's box beside its point"),
}
OPTION_FIELDS = tuple(OPTIONS)
DENSE_FORMATS = ("png", "npz")
DENSE_FIELDS = ("format",)
# A form's boolean is the text "true" or "false" (any case), as its document says; "0", "yes" and the like are
# refused, so a form means what a client generated from the document means by it.
_TRUE, _FALSE = ("true",), ("false",)
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError)


class RequestError(Exception):
    """A request the service refuses: HTTP `status`, a metrics `kind`, a one-line message."""

    def __init__(self, status: int, kind: str, message: str):
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = " ".join(message.split())


@dataclass(frozen=True)
class ImageRequest:
    """A parsed request. image: uint8 [H, W, 3] RGB (EXIF orientation applied, as `clipsam segment` reads
    files); file: the name the JSON's image.file reports; fields: the other fields, validated."""

    image: np.ndarray
    vocabulary: Vocabulary
    file: str
    fields: dict
    typed: bool = True  # JSON values (strict JSON types); False: multipart text fields


def parse_request(content_type: str, body: bytes, max_pixels: int, extra_fields: tuple = ()) -> ImageRequest:
    """Parse a JSON or multipart body; `extra_fields` names the fields allowed beside the segment options."""
    allowed = set(OPTION_FIELDS) | set(extra_fields)
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "application/json":
        image_bytes, words, file, raw = _json_fields(body)
    elif kind == "multipart/form-data":
        image_bytes, words, file, raw = _multipart_fields(content_type, body)
    else:
        raise RequestError(
            415,
            "bad_request",
            f"unsupported content type {kind!r}: send application/json or multipart/form-data",
        )
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise RequestError(400, "bad_request", f"unknown field(s): {', '.join(unknown)}")
    vocabulary = request_vocabulary(words)
    image = decode_image(image_bytes, max_pixels)
    return ImageRequest(image, vocabulary, file, raw, typed=kind == "application/json")


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """PNG / JPEG / … bytes → uint8 [H, W, 3] RGB; 400 for empty or undecodable bytes, 413 above max_pixels
    (checked from the header, before decoding)."""
    if not data:
        raise RequestError(400, "bad_image", "the image is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise RequestError(
                    413,
                    "too_large",
                    f"the image has {width}×{height} = {width * height:,} pixels, more than the service's "
                    f"limit of {max_pixels:,}",
                )
            image.load()
            return to_rgb_u8(ImageOps.exif_transpose(image))
    except UnidentifiedImageError:
        raise RequestError(400, "bad_image", "the image is not a picture Pillow can read") from None
    except Image.DecompressionBombError as err:
        raise RequestError(413, "too_large", f"the image is too large ({err})") from None
    except _DECODE_ERRORS as err:
        raise RequestError(400, "bad_image", f"the image is corrupt or truncated ({err})") from None


def request_vocabulary(words) -> Vocabulary:
    """The vocabulary under the CLI's rules (engine/vocabulary.py); mistakes are 400s with its messages. A
    JSON vocabulary is a list, as its document says: a bare string is refused, not read as one class."""
    if not isinstance(words, list) or not all(isinstance(word, str) for word in words):
        raise RequestError(400, "vocabulary", "vocabulary must be a list of class names")
    if not words:
        raise RequestError(400, "vocabulary", "the vocabulary is empty: give one or more class names")
    try:
        return vocabulary_from_words(words)
    except VocabularyError as err:
        raise RequestError(400, "vocabulary", str(err)) from None


def segment_options(fields: dict, typed: bool = False) -> SegmentOptions:
    """SegmentOptions from request fields under OPTIONS' types and ranges. typed: JSON values, which must
    have their JSON type (a number, a boolean); else multipart text, parsed."""
    values = {}
    for name, spec in OPTIONS.items():
        if name not in fields:
            continue
        value = fields[name]
        if value is None and spec.nullable and typed:
            values[name] = None
        elif spec.kind is bool:
            values[name] = _flag(value, name, typed)
        else:
            values[name] = _number(value, name, spec, typed)
    return SegmentOptions(**values)


def dense_format(fields: dict) -> str:
    """The /v1/dense answer's format: "png" (default) or "npz", exactly."""
    kind = fields.get("format", "png")
    if kind not in DENSE_FORMATS:
        raise RequestError(400, "bad_request", f"format must be png or npz, got {kind!r}")
    return kind


def _json_fields(body: bytes) -> tuple[bytes, object, str, dict]:
    try:
        record = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RequestError(400, "bad_request", f"the body is not valid JSON ({err})") from None
    if not isinstance(record, dict):
        raise RequestError(400, "bad_request", "the JSON body must be an object")
    record = dict(record)
    encoded = record.pop("image", None)
    if not isinstance(encoded, str):
        raise RequestError(400, "bad_image", "field 'image' (base64 of the image file) is missing")
    try:
        image_bytes = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, "bad_image", "field 'image' is not valid base64") from None
    words = record.pop("vocabulary", [])
    file = record.pop("file", "upload")
    if not isinstance(file, str):
        raise RequestError(400, "bad_request", "field 'file' must be a string")
    return image_bytes, words, file, record


def _multipart_fields(content_type: str, body: bytes) -> tuple[bytes, list[str], str, dict]:
    try:
        parts = parse_multipart(content_type, body)
    except MultipartError as err:
        raise RequestError(400, "bad_request", f"malformed multipart body: {err}") from None
    images = [part for part in parts if part.name == "image"]
    if len(images) != 1:
        raise RequestError(400, "bad_image", "give exactly one 'image' file part")
    words, raw = [], {}
    for part in parts:
        if part.name == "image":
            continue
        try:
            text = part.data.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError(400, "bad_request", f"field {part.name!r} is not UTF-8 text") from None
        if part.name == "vocabulary":
            if text[:1] in ("[", "{"):  # a JSON list in one part would become classes named '["sky"', ...
                message = f"vocabulary part {text[:40]!r} looks like JSON: send one part per class"
                raise RequestError(400, "vocabulary", message)
            words.append(text)
        elif part.name in raw:  # one value per option: a repeated field is not a list
            raise RequestError(400, "bad_request", f"field {part.name!r} is given more than once")
        else:
            raw[part.name] = text
    return images[0].data, words, images[0].filename or "upload", raw


def _number(value, name: str, spec: OptionField, typed: bool):
    kind, low, high = spec.kind, spec.low, spec.high
    try:
        if isinstance(value, bool) or (typed and not isinstance(value, int | float)):
            raise ValueError
        if kind is int and isinstance(value, float):
            if not value.is_integer():  # JSON Schema: 3.0 is an integer, 2.5 is not
                raise ValueError
            value = int(value)
        number = kind(value)
    except (TypeError, ValueError, OverflowError):
        raise RequestError(
            400, "bad_request", f"{name} must be a{'n integer' if kind is int else ' number'}"
        ) from None
    if number != number or (low is not None and number < low) or (high is not None and number > high):
        raise RequestError(400, "bad_request", f"{name} must be in [{low}, {high}], got {value!r}")
    return number


def _flag(value, name: str, typed: bool) -> bool:
    if isinstance(value, bool):
        return value
    text = value.strip().lower() if isinstance(value, str) and not typed else None
    if text in _TRUE + _FALSE:
        return text in _TRUE
    raise RequestError(400, "bad_request", f"{name} must be true or false, got {value!r}")
