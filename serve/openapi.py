"""OpenAPI descriptions of the request bodies (the routes read raw bodies: JSON and multipart alike)."""

from __future__ import annotations

_OPTIONS = {
    "min_confidence": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.7},
    "min_region_size": {"type": "integer", "minimum": 0, "default": 100},
    "iou_threshold": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.8},
    "max_prompts": {"type": "integer", "minimum": 1},
    "use_boxes": {"type": "boolean", "default": False},
}


def _body(extra: dict) -> dict:
    json_fields = {
        "image": {"type": "string", "format": "byte", "description": "base64 of a PNG / JPEG / … file"},
        "vocabulary": {
            "type": "array",
            "items": {"type": "string"},
            "description": "class names, as --vocabulary",
        },
        "file": {"type": "string", "description": "the name the response's image.file reports"},
        **_OPTIONS,
        **extra,
    }
    form_fields = {
        **json_fields,
        "image": {
            "type": "string",
            "format": "binary",
            "description": "the image file (its filename is image.file)",
        },
    }
    form_fields.pop("file")
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["image", "vocabulary"],
                        "properties": json_fields,
                    }
                },
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["image", "vocabulary"],
                        "properties": form_fields,
                    },
                    "encoding": {"vocabulary": {"explode": True}},
                },
            },
        }
    }


SEGMENT_DOC = _body({})
DENSE_DOC = _body({"format": {"type": "string", "enum": ["png", "npz"], "default": "png"}})
