"""A synthetic street scene for `clipsam demo`, drawn in code so the demo needs no download."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

DEMO_VOCABULARY = ("sky", "car", "road", "tree", "grass")


def demo_scene(height: int = 480, width: int = 640, seed: int = 0) -> np.ndarray:
    """uint8 [H, W, 3] RGB: sky, trees, a road and a car, with mild texture noise (deterministic by seed)."""
    rows = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    sky = (1 - rows) * np.array([90, 150, 235], np.float32) + rows * np.array([190, 215, 245], np.float32)
    canvas = np.broadcast_to(sky, (height, width, 3)).copy()
    image = Image.fromarray(canvas.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    unit = min(height / 480, width / 640)  # sizes below are drawn for 480×640 and scaled

    def px(value: float) -> int:
        return int(round(value * unit))

    horizon = int(height * 0.55)
    draw.rectangle([0, horizon, width, height], fill=(70, 120, 55))
    draw.polygon(
        [(width * 0.3, height), (width * 0.45, horizon), (width * 0.55, horizon), (width * 0.95, height)],
        fill=(85, 85, 90),
    )
    for center_x in (0.08, 0.2, 0.82):
        cx = int(width * center_x)
        draw.rectangle([cx - px(6), horizon - px(40), cx + px(6), horizon + px(10)], fill=(90, 60, 30))
        draw.ellipse([cx - px(45), horizon - px(130), cx + px(45), horizon - px(25)], fill=(40, 110, 40))
    car_x, car_y = int(width * 0.5), int(height * 0.78)
    draw.rounded_rectangle(
        [car_x - px(110), car_y - px(45), car_x + px(110), car_y + px(25)], radius=px(18), fill=(200, 30, 35)
    )
    draw.rounded_rectangle(
        [car_x - px(65), car_y - px(85), car_x + px(60), car_y - px(40)], radius=px(14), fill=(180, 25, 30)
    )
    draw.rectangle([car_x - px(55), car_y - px(78), car_x + px(50), car_y - px(48)], fill=(150, 200, 230))
    for wheel_x in (car_x - px(70), car_x + px(70)):
        draw.ellipse([wheel_x - px(24), car_y + px(2), wheel_x + px(24), car_y + px(50)], fill=(20, 20, 20))
    rng = np.random.default_rng(seed)
    noisy = np.asarray(image, np.float32) + rng.normal(0.0, 4.0, (height, width, 3)).astype(np.float32)
    return noisy.round().clip(0, 255).astype(np.uint8)
