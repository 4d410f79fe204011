"""Sweep style weight and learning rate; report how stylized and how recognisable each result is.

    python benchmarks/choose_defaults.py CONTENT STYLE [--size 192] [--steps 150] [--sheet sweep.png]

For each setting it prints the result's style error (relative Gram error against the
style image, mean over the style layers; the content image's own value is the
baseline) and content error (relative error of block5_conv2 activations against
the content image), and writes all results side by side into one contact sheet.
"""

from __future__ import annotations

import argparse
import itertools
import time

from PIL import Image, ImageDraw

import nst_jax
from nst_jax import images, losses
from nst_jax.transfer import CONTENT_LAYER, STYLE_LAYERS


def errors(model, image, content, style):
    """(style error, content error) of `image` against the targets, at the image's own size."""
    layers = (CONTENT_LAYER, *STYLE_LAYERS)
    f = model.features(image[None], layers)
    fc = model.features(content[None], (CONTENT_LAYER,))
    fs = model.features(images.resize(style, *images.fit_shape(*style.shape[:2], max(image.shape[:2]), 8))[None],
                        STYLE_LAYERS)
    style_err = losses.style_loss(f, {n: losses.gram(fs[n]) for n in STYLE_LAYERS}, STYLE_LAYERS)
    content_err = losses.content_loss(f[CONTENT_LAYER], fc[CONTENT_LAYER])
    return float(style_err[0]), float(content_err[0])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("content")
    p.add_argument("style")
    p.add_argument("--size", type=int, default=192)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--style-weights", type=float, nargs="+", default=[1e2, 1e3, 1e4, 1e5])
    p.add_argument("--lrs", type=float, nargs="+", default=[0.01, 0.02, 0.05])
    p.add_argument("--sheet", default="sweep.png")
    args = p.parse_args()

    model = nst_jax.load_model()
    content, style = images.read(args.content), images.read(args.style)
    small = images.resize(content, *images.fit_shape(*content.shape[:2], args.size))
    base_style, _ = errors(model, small, small, style)
    print(f"content image itself: style error {base_style:.4f}")
    print("style_weight      lr  style_err  content_err  seconds")
    tiles = []
    for sw, lr in itertools.product(args.style_weights, args.lrs):
        opts = nst_jax.Options(size=args.size, steps=args.steps, style_weight=sw, lr=lr, multiscale=False)
        t = time.perf_counter()
        out = nst_jax.stylize(content, [style], opts, model=model)
        se, ce = errors(model, out, small, style)
        print(f"{sw:12.0e} {lr:7.3f} {se:10.4f} {ce:12.4f} {time.perf_counter() - t:8.1f}", flush=True)
        tile = Image.fromarray(images.to_uint8(out))
        ImageDraw.Draw(tile).text((3, 3), f"sw={sw:.0e} lr={lr}", fill=(255, 255, 0))
        tiles.append(tile)
    cols = len(args.lrs)
    w, h = tiles[0].size
    sheet = Image.new("RGB", (w * cols, h * ((len(tiles) + cols - 1) // cols)))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % cols) * w, (i // cols) * h))
    sheet.save(args.sheet)
    print(f"wrote {args.sheet}")


if __name__ == "__main__":
    main()
