"""The quality benchmark: does a stylized picture keep the photo, take the painting's colours and
strokes, and stay free of relief and dots, and how soon? Runs fixed content x style pairs at
several sizes and recipes, prints a table of `measures` per result (QUALITY.md), measures each
picture as it was during the run too (every --checkpoint-every steps: quality against seconds),
and writes per size a contact sheet (with a row of each pair's pictures as they were after
--budgets seconds) and the curves of the measures against seconds.

The pairs use only pictures the repository may ship: photos that Python packages ship
(scikit-image, scikit-learn; licences in QUALITY.md) and the public-domain paintings of
web/styles/. `--references DIR` adds published pictures to compare with: each `<photo>_<painting>.png`
of DIR (e.g. `tubingen_starry.png`: the photo `tubingen.jpg` of --reference-photos, default
DIR/../images, and the built-in painting whose name starts with `starry`) becomes a pair, scored
with the same measures, and shown beside ours ("published"). Recipes are the library's named ones
(`nst_jax.options.RECIPES`), and `NAME:key=value,...` or `NAME:{JSON}` adds one. `--baseline TREE`
adds the recipe "landed": the default options of another checkout (e.g. `git worktree add
/tmp/landed <commit>`), run through its own command line. Seconds are those of compiled programs:
each run is preceded by a one-step run of its shapes.

    python benchmarks/quality.py --sizes 512 --references ../shared/anchors --pairs tubingen golden_gate
    python benchmarks/quality.py --sizes 256 512 --pairs astronaut/starry china/ship --recipes default
    python benchmarks/quality.py --sizes 1024 2048 4096       # a GPU
    python benchmarks/quality.py --report-only --out DIR      # the table, sheets and curves of earlier runs
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import nst_jax  # noqa: E402
from benchmarks import measures  # noqa: E402
from nst_jax import images  # noqa: E402
from nst_jax.options import RECIPES  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
STYLES = {path.stem: path for path in sorted((REPO / "web/styles").glob("*.jpg"))}  # the built-in paintings
RECIPE_OPTIONS = RECIPES
PHOTOS = ("astronaut", "china", "rocket", "coffee")
PUBLISHED = "published"  # the recipe name of a reference picture (--references)


def content_photos(folder: Path | None = None) -> dict[str, np.ndarray]:
    """A face, a building in a landscape, a night scene with structures, an object: (H, W, 3) in
    [0, 1], from the packages that ship them, or as PNGs from `folder` (`--export-photos`: for a
    machine without those packages)."""
    if folder is not None:
        return {name: images.read(folder / f"{name}.png") for name in PHOTOS}
    try:
        import skimage.data
        import sklearn.datasets
    except ImportError as e:
        raise SystemExit(f"{e.name.partition('.')[0]} is missing: `scripts/setup.sh bench` installs the packages "
                         "whose photos the benchmark uses (or --photos DIR: PNGs written by --export-photos)") from None

    photos = {"astronaut": skimage.data.astronaut(), "china": sklearn.datasets.load_sample_image("china.jpg"),
              "rocket": skimage.data.rocket(), "coffee": skimage.data.coffee()}
    return {name: np.asarray(pixels, np.float32) / 255.0 for name, pixels in photos.items()}


def reference_pictures(folder: Path, photo_folder: Path) -> dict[tuple[str, str], Path]:
    """{(photo, painting): picture} of the `<photo>_<painting>.png` files of `folder`: `photo` names
    an image `<photo>.*` of `photo_folder`, `painting` the start of one built-in painting's name."""
    if not folder.is_dir():
        raise SystemExit(f"--references {folder}: no such folder")
    found = {}
    for path in sorted(folder.glob("*.png")):
        parts = path.stem.split("_")
        for i in range(1, len(parts)):
            photo, prefix = "_".join(parts[:i]), "_".join(parts[i:])
            paintings = [name for name in STYLES if name.startswith(prefix)]
            if any(photo_folder.glob(f"{photo}.*")) and len(paintings) == 1:
                found[photo, paintings[0]] = path
                break
        else:
            raise SystemExit(f"{path}: its name is not <photo>_<painting>, with a photo in {photo_folder} "
                             f"and the start of one of {', '.join(STYLES)}")
    if not found:
        raise SystemExit(f"--references {folder}: no <photo>_<painting>.png pictures in it")
    return found


def reference_photos(references: dict[tuple[str, str], Path], photo_folder: Path) -> dict[str, np.ndarray]:
    """The photos of the reference pictures, (H, W, 3) in [0, 1], by name."""
    return {c: images.read(next(photo_folder.glob(f"{c}.*"))) for c, _ in references}


def parse_recipe(text: str) -> tuple[str, dict]:
    """"name" of RECIPE_OPTIONS, "name:key=value,key=value" (values as JSON, else strings) or
    "name:{JSON object}"."""
    if ":" not in text:
        return text, RECIPE_OPTIONS[text]
    name, _, rest = text.partition(":")
    if rest.startswith("{"):
        return name, json.loads(rest)
    values = {}
    for item in filter(None, rest.split(",")):
        key, _, raw = item.partition("=")
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    return name, values


def peak_memory_mb() -> float:
    """Peak device memory where the backend reports it (GPU), else the process's peak RSS; both
    are peaks over the process so far, so runs go from small to large."""
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Checkpoint(NamedTuple):
    """The averaged image at one progress report: seconds since the run began, optimizer steps done."""

    seconds: float
    step: int
    image: np.ndarray


def stylize(model, content, style, size, recipe: dict, steps: int | None
            ) -> tuple[np.ndarray, float, list[Checkpoint]]:
    """Today's library with the options of `recipe` (`steps`, if given, overrides the recipe's):
    (result, seconds, the image at every report)."""
    options = nst_jax.Options.from_mapping({"size": size, **recipe, **({"steps": steps} if steps else {})},
                                           nst_jax.Limits(max_size=8192))
    reports = []
    start = time.perf_counter()
    result = nst_jax.stylize(content, [style], options, model=model, on_progress=reports.append)
    seconds = time.perf_counter() - start
    return result, seconds, [Checkpoint(p.elapsed, p.step, p.preview) for p in reports if p.preview is not None]


def compile_first(model, content, style, size, recipe: dict) -> None:
    """One step at every scale of `recipe` for this content's shape: the programs the timed run
    needs are compiled (or read from the cache) beforehand, so its seconds are the steps'."""
    stylize(model, content, style, size, recipe, 1)


def every(checkpoints: list[Checkpoint], steps: int) -> list[Checkpoint]:
    """The first checkpoint past each multiple of `steps` optimizer steps, and the last."""
    kept = []
    for c in checkpoints:
        if not kept or c.step // steps > kept[-1].step // steps or c is checkpoints[-1]:
            kept.append(c)
    return kept


def measure(model, result, photo, painting) -> dict:
    return {"layout": measures.layout(result, photo), "detail": measures.detail(result, photo),
            "palette": measures.palette(result, photo, painting),
            "texture": measures.texture(model, result, photo, painting),
            "texture_deep": measures.texture_deep(model, result, photo, painting),
            "relief": measures.relief(result, photo, painting),
            "ripples": measures.ripples(result, photo, painting), "dots": measures.dots(result),
            "noise": measures.noise(result, photo)}


def stylize_with_tree(tree: Path, content_path: Path, style_path: Path, size: int, steps: int | None,
                      out: Path) -> tuple[np.ndarray, float]:
    """Another checkout's command line at its default options (its own compiled-program cache
    makes repeated shapes cheap): (result, seconds of the whole command)."""
    command = [sys.executable, "-m", "nst_jax", "stylize", str(content_path), str(style_path), "-o", str(out),
               "--size", str(size), *(["--steps", str(steps)] if steps else [])]
    start = time.perf_counter()
    run = subprocess.run(command, cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True,
                         text=True)
    if run.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{run.stderr[-2000:]}")
    return images.read(out), time.perf_counter() - start


def tile(image: np.ndarray, height: int, label: str = "") -> Image.Image:
    """`image` scaled to `height` px tall, with `label` in its corner."""
    im = Image.fromarray(images.to_uint8(images.resize(image, height, round(image.shape[1] * height / image.shape[0]))))
    return labelled(im, label)


def crop(image: np.ndarray, side: int, label: str = "") -> Image.Image:
    """The `side` x `side` px centre of `image` at its own pixels: dots and fine noise show here."""
    h, w = image.shape[:2]
    y, x = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return labelled(Image.fromarray(images.to_uint8(image[y:y + side, x:x + side])), label)


def labelled(im: Image.Image, label: str) -> Image.Image:
    if label:
        draw = ImageDraw.Draw(im)
        draw.rectangle((0, 0, 6 * len(label) + 6, 12), fill=(0, 0, 0))
        draw.text((3, 0), label, fill=(255, 255, 0))
    return im


def contact_sheet(rows: list[list[Image.Image]], path: Path) -> None:
    widths = [sum(t.width for t in row) for row in rows]
    heights = [max(t.height for t in row) for row in rows]
    sheet = Image.new("RGB", (max(widths), sum(heights)), "white")
    for row, y in zip(rows, np.cumsum([0, *heights[:-1]])):
        x = 0
        for t in row:
            sheet.paste(t, (x, int(y)))
            x += t.width
    sheet.save(path, optimize=True)


def run(args, recipes: dict, photos: dict[str, np.ndarray], references: dict[tuple[str, str], Path]) -> None:
    """Stylize every pair at every size with every recipe: the results as PNGs, their measures
    appended to results.jsonl in `args.out`, a table row printed per result; each reference
    picture is measured as the recipe PUBLISHED of its pair, at every size."""
    model = nst_jax.load_model()
    paintings = {name: images.read(path) for name, path in STYLES.items()}
    pairs = [*references, *((c, s) for c in content_photos_names(photos, references) for s in paintings)]
    pairs = [(c, s) for c, s in pairs if not args.pairs or any(f in f"{c}/{s}" for f in args.pairs)]
    files = {}  # the pictures as files, for the baseline's command line
    if args.baseline:
        for name, pixels in [*photos.items(), *paintings.items()]:
            files[name] = args.out / f"input_{name}.png"
            images.write(pixels, files[name])
    print(f"device {model.device}, weights {model.weights.source}, recipes {recipes}")
    (args.out / "checkpoints").mkdir(exist_ok=True)
    print(TABLE_HEAD)
    runs = ([("landed", None)] if args.baseline else []) + list(recipes.items())
    with open(args.out / "results.jsonl", "a") as log:
        def record(**fields):
            log.write(json.dumps(fields) + "\n")
            log.flush()
            print(table_row(fields), flush=True)

        for size in sorted(args.sizes):
            for c, s in pairs:
                photo, painting = photos[c], paintings[s]
                if (c, s) in references:
                    published = images.read(references[c, s])
                    images.write(published, args.out / f"{c}_{s}_{size}_{PUBLISHED}.png")
                    record(size=size, pair=f"{c}/{s}", recipe=PUBLISHED, options=None, steps=None,
                           **measure(model, published, photo, painting), seconds=None, device=None, curve=[],
                           peak_mb=None)
                for name, recipe in runs:
                    path = args.out / f"{c}_{s}_{size}_{name}.png"
                    curve = []
                    if recipe is None:
                        result, seconds = stylize_with_tree(args.baseline, files[c], files[s], size, args.steps, path)
                    else:
                        compile_first(model, photo, painting, size, recipe)
                        result, seconds, checkpoints = stylize(model, photo, painting, size, recipe, args.steps)
                        images.write(result, path)
                        for point in every(checkpoints, args.checkpoint_every):
                            images.write(point.image, checkpoint_path(args.out, path, point.seconds))
                            curve.append({"seconds": point.seconds, "step": point.step,
                                          **measure(model, point.image, photo, painting)})
                    record(size=size, pair=f"{c}/{s}", recipe=name, options=recipe, steps=args.steps,
                           **measure(model, result, photo, painting), seconds=seconds, device=model.device,
                           curve=curve,
                           # another process's memory is not seen from here
                           peak_mb=peak_memory_mb() if recipe is not None else None)


def content_photos_names(photos: dict[str, np.ndarray], references: dict[tuple[str, str], Path]) -> list[str]:
    """The photos that pair with every built-in painting: those the packages ship."""
    return [c for c in photos if c not in {c for c, _ in references}]


def checkpoint_path(out: Path, result_path: Path, seconds: float) -> Path:
    """Where the image of a result's checkpoint at `seconds` is kept."""
    return out / "checkpoints" / f"{result_path.stem}_{seconds:07.2f}s.png"


def checkpoint_at(out: Path, result_path: Path, curve: list[dict], budget: float) -> tuple[Path, dict] | None:
    """The last checkpoint of a curve within `budget` seconds: what a run cut there has; None if none is."""
    within = [point for point in curve if point["seconds"] <= budget]
    return (checkpoint_path(out, result_path, within[-1]["seconds"]), within[-1]) if within else None


COLUMNS = ("layout", "detail", "palette", "texture", "texture_deep", "relief", "ripples", "dots", "noise")
TABLE_HEAD = ("| size | pair | recipe | layout | detail | palette | texture | deep texture | relief | ripples | dots ‰ "
              "| noise % | seconds | peak MB |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def figure(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table_row(r: dict) -> str:
    return (f"| {r['size']} | {r['pair']} | {r['recipe']} | "
            + " | ".join(figure(r.get(k), 2 if k in ("dots", "noise") else 3) for k in COLUMNS)
            + f" | {figure(r.get('seconds'), 0)} | {figure(r.get('peak_mb'), 0)} |")


SUMMARY_HEAD = ("| size | recipe | pairs | mean layout | worst layout | mean detail | worst detail | mean palette "
                "| worst palette | mean texture | worst texture | mean relief | worst relief | mean seconds |\n"
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def summary_row(size: int, recipe: str, rs: list[dict]) -> str:
    """Means over `rs`, and the worst of each: the lowest layout and detail, the highest palette,
    texture and relief."""
    def mean(k):
        values = [r[k] for r in rs if r.get(k) is not None]
        return float(np.mean(values)) if values else None

    def worst(k, pick):
        values = [r[k] for r in rs if r.get(k) is not None]
        return pick(values) if values else None
    cells = [figure(mean("layout")), figure(worst("layout", min)), figure(mean("detail")), figure(worst("detail", min)),
             figure(mean("palette")), figure(worst("palette", max)), figure(mean("texture")),
             figure(worst("texture", max)), figure(mean("relief")), figure(worst("relief", max)),
             figure(mean("seconds"), 0)]
    return f"| {size} | {recipe} | {len(rs)} | " + " | ".join(cells) + " |"


def report(out: Path, tile_px: int, photos: dict[str, np.ndarray], budgets: list[float]) -> None:
    """From `out`'s results.jsonl (the latest record of each result): the table, the means per
    size and recipe, and a contact sheet per size (photo | painting | each recipe's result, the
    published picture first | a 1:1 crop of each), sheet_<size>.png."""
    records = {}
    for line in (out / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        records[r["size"], r["pair"], r["recipe"]] = r
    print(TABLE_HEAD)
    for r in records.values():
        print(table_row(r))
    print("\n" + SUMMARY_HEAD)
    for size in sorted({k[0] for k in records}):
        by_recipe = {}
        for (s, pair, recipe), r in records.items():
            if s == size:
                by_recipe.setdefault(recipe, {})[pair] = r
        shared = set.intersection(*(set(pairs) for pairs in by_recipe.values()))
        for recipe, pairs in by_recipe.items():
            # first over the pairs every recipe ran (so recipes compare), then over all its pairs
            for chosen in filter(None, dict.fromkeys((tuple(sorted(shared)), tuple(sorted(pairs))))):
                print(summary_row(size, recipe, [pairs[p] for p in chosen]))
    paintings = {name: images.read(path) for name, path in STYLES.items()}
    for size in sorted({k[0] for k in records}):
        rows = []
        for pair in dict.fromkeys(k[1] for k in records if k[0] == size):
            c, s = pair.split("/")
            row, crops = [tile(photos[c], tile_px, c), tile(paintings[s], tile_px, s)], []
            recipes = sorted((k[2] for k in records if k[:2] == (size, pair)), key=lambda name: name != PUBLISHED)
            for recipe in recipes:
                r = records[size, pair, recipe]
                result = images.read(out / f"{c}_{s}_{size}_{recipe}.png")
                row.append(tile(result, tile_px, f"{recipe} D{r['detail']:.2f} P{r['palette']:.2f} "
                                                 f"R{r['relief']:.2f}" if "detail" in r else recipe))
                crops.append(crop(result, tile_px, f"{recipe} 1:1"))
            rows.append(row + crops)
            budget_row = [tile(np.ones_like(photos[c]), tile_px, "cut at")]
            for recipe in recipes:
                r = records[size, pair, recipe]
                for budget in budgets:
                    cut = checkpoint_at(out, out / f"{c}_{s}_{size}_{recipe}.png", r.get("curve", []), budget)
                    if cut is not None:
                        budget_row.append(tile(images.read(cut[0]), tile_px,
                                               f"{recipe} {budget:g}s D{cut[1].get('detail', 0):.2f}"))
            if len(budget_row) > 1:
                rows.append(budget_row)
        contact_sheet(rows, out / f"sheet_{size}.png")
        print(f"\ncontact sheet: {out / f'sheet_{size}.png'}")
        plot_curves({k[1:]: r for k, r in records.items() if k[0] == size}, size, out / f"curves_{size}.png")


CURVES = {"detail": "detail (1 = the photo's edges at 256 px)",
          "palette": "palette (0 = the painting's colours, 1 = the photo's)",
          "texture": "texture at block1-3 (1 = the photo's)", "relief": "relief (1 = the painting's shading)"}


def plot_curves(records: dict, size: int, path: Path) -> None:
    """The measures of CURVES against seconds, a line per result, a colour per recipe: curves_<size>.png."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CURVES), figsize=(5 * len(CURVES), 3.8), dpi=100)
    colours = {}
    for (pair, recipe), r in records.items():
        if not r.get("curve") or "detail" not in r["curve"][0]:
            continue
        colour = colours.setdefault(recipe, f"C{len(colours)}")
        t = [p["seconds"] for p in r["curve"]]
        for ax, key in zip(axes, CURVES):
            ax.plot(t, [p[key] for p in r["curve"]], color=colour, lw=1, marker=".", ms=3,
                    label=recipe if pair == next(p for p, q in records if q == recipe) else None)
    for ax, (key, label) in zip(axes, CURVES.items()):
        ax.set(xlabel="seconds (compiled programs; this machine)", ylabel=label, title=f"{size} px: {key}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    print(f"curves: {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--recipes", nargs="+", default=["default"])
    p.add_argument("--baseline", type=Path, help="a checkout whose default options run as the recipe 'landed'")
    p.add_argument("--pairs", nargs="*", help="only pairs whose 'content/style' name contains one of these")
    p.add_argument("--steps", type=int, help="steps per scale (default: the options' default)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "quality")
    p.add_argument("--checkpoint-every", type=int, default=25, metavar="STEPS",
                   help="measure the picture during the run, every this many optimizer steps")
    p.add_argument("--budgets", type=float, nargs="*", default=[15, 30, 60], metavar="S",
                   help="the contact sheet's row of each recipe's picture as it was after these many seconds")
    p.add_argument("--tile", type=int, default=160, help="height of the contact sheets' pictures, px")
    p.add_argument("--report-only", action="store_true", help="no runs: the table and sheets of --out's results")
    p.add_argument("--photos", type=Path, help="read the photos from this folder's PNGs, not from the packages")
    p.add_argument("--references", type=Path, metavar="DIR",
                   help="published pictures <photo>_<painting>.png to compare with (their pairs run too)")
    p.add_argument("--reference-photos", type=Path, metavar="DIR", help="their photos (default: DIR/../images)")
    p.add_argument("--export-photos", type=Path, metavar="DIR", help="write the photos to DIR as PNGs, and stop")
    args = p.parse_args()

    if args.export_photos:
        args.export_photos.mkdir(parents=True, exist_ok=True)
        for name, pixels in content_photos().items():
            images.write(pixels, args.export_photos / f"{name}.png")
        return
    args.out.mkdir(parents=True, exist_ok=True)
    photo_folder = args.reference_photos or (args.references / ".." / "images" if args.references else None)
    references = reference_pictures(args.references, photo_folder) if args.references else {}
    photos = {**content_photos(args.photos), **reference_photos(references, photo_folder)}
    if not args.report_only:
        run(args, dict(parse_recipe(r) for r in args.recipes), photos, references)
    report(args.out, args.tile, photos, args.budgets)


if __name__ == "__main__":
    main()
