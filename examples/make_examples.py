"""Re-create the example images from examples/formulas.txt with the project's renderer (none is a test formula).

python examples/make_examples.py
"""

from pathlib import Path

import numpy as np

from data.augment import AugmentConfig, augment
from data.render import DENG, RenderStyle, render

HERE = Path(__file__).parent
NAMES = ["quadratic", "gaussian_integral", "basel", "maxwell"]
STYLES = [DENG, DENG, RenderStyle(font="mathpazo", dpi=200), RenderStyle(font="txfonts", dpi=160)]


def main() -> None:
    formulas = (HERE / "formulas.txt").read_text().splitlines()
    for name, formula, style in zip(NAMES, formulas, STYLES, strict=True):
        result = render([formula], style=style, workers=1, progress=False)[0]
        if result.image is None:
            raise RuntimeError(f"{name}: {result.error}")
        result.image.save(HERE / f"{name}.png", optimize=True)
    # Screenshot-like: rendered larger, then tinted, blurred, noised and JPEG-compressed by the training augmentation.
    large = render([formulas[0]], style=RenderStyle(dpi=300), workers=1, progress=False)[0].image
    shot = augment(large, AugmentConfig(strength=1.0), np.random.default_rng(3)).convert("RGB")
    shot.save(HERE / "quadratic_screenshot.jpg", quality=70)


if __name__ == "__main__":
    main()
