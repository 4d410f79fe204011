"""Command line: `nst-jax stylize`, `nst-jax weights fetch|convert`, `nst-jax serve`, `nst-jax warmup`."""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from pathlib import Path

from nst_jax import shapes
from nst_jax.errors import NSTError
from nst_jax.options import RECIPE_HELP, RECIPES, SPEC_BY_NAME, SPECS, Options, Spec
from nst_jax.weights import FETCHABLE


def _layer_weight(text: str) -> tuple[str, float]:
    """"LAYER=W" -> (LAYER, W); the layer and the weight are checked with the other options."""
    layer, equals, weight = text.partition("=")
    try:
        return layer, float(weight)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a style layer is LAYER=WEIGHT, e.g. block1_conv1=1, not {text!r}") from None


class _ToDict(argparse.Action):
    """Collects (key, value) pairs into a dict."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, dict(values))


def _flag(spec: Spec) -> dict:
    """argparse's arguments of an option's flag, from its `option` statement."""
    default = spec.to_json(spec.default)
    if spec.default is None:
        default = "equal" if spec.kind == "blend" else "none"
    elif spec.kind == "layer_weights":
        default = " ".join(f"{name}={weight:g}" for name, weight in default.items())
    kwargs = {"dest": spec.name, "default": argparse.SUPPRESS, "help": f"{spec.help}; default {default}"}
    if spec.kind == "boolean":  # the flag turns the default over
        return {**kwargs, "action": "store_false" if spec.default else "store_true",
                "help": f"no {spec.name}: {spec.help}" if spec.default else spec.help}
    if spec.kind == "blend":
        return {**kwargs, "type": float, "nargs": "+", "metavar": spec.metavar}
    if spec.kind == "layer_weights":
        return {**kwargs, "type": _layer_weight, "nargs": "+", "metavar": spec.metavar, "action": _ToDict}
    if spec.kind == "string":
        return {**kwargs, "choices": spec.enum, "metavar": spec.metavar}
    return {**kwargs, "type": int if spec.kind == "integer" else float}


def _add_stylize(sub) -> None:
    p = sub.add_parser("stylize", help="repaint CONTENT in the style of STYLE(s)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("content", type=Path)
    p.add_argument("styles", type=Path, nargs="*", metavar="STYLE", help="one or more (or --style-preset with --server)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output image (.png, .jpg, ...)")
    p.add_argument("--weights", type=Path, help="weights file (default: the fetched one)")
    p.add_argument("--server", metavar="URL", help="stylize on the NeuraStyle function at URL instead of here; "
                                                    "the options given are sent, the server's defaults fill the rest")
    p.add_argument("--style-preset", metavar="NAME", help="with --server: a built-in style of the server's")
    p.add_argument("--recipe", choices=tuple(RECIPES), default="default", help=RECIPE_HELP)
    # Options left out keep the recipe's value (SUPPRESS: absent from the parsed arguments).
    opt = p.add_argument_group("options (default: the recipe's; shown: the default recipe's)")
    for spec in SPECS:
        opt.add_argument(spec.flag, **_flag(spec))


def _add_weights(sub) -> None:
    p = sub.add_parser("weights", help="obtain and convert pretrained VGG weights")
    wsub = p.add_subparsers(dest="weights_command", required=True)
    f = wsub.add_parser("fetch", help="download and convert (VGG19, else the VGG16 fallback)")
    f.add_argument("--model", choices=FETCHABLE, default=FETCHABLE[0])
    c = wsub.add_parser("convert", help="convert a Keras .h5 or torchvision .pth file you have")
    c.add_argument("file", type=Path)
    c.add_argument("-o", "--output", type=Path, help="default: weights/<arch>.npz")


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="run the HTTP function and the web page locally")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, help="default: $PORT or 8080")


def _add_warmup(sub) -> None:
    p = sub.add_parser("warmup", help="compile every program a request at these sizes can need, "
                                      "into the persistent compilation cache")
    p.add_argument("--size", type=int, action="append", required=True, metavar="N",
                   help="longest side of the output, px (repeat for more sizes)")
    p.add_argument("--aspect", type=_aspect, action="append", metavar="W:H",
                   help="only content images of this aspect ratio, e.g. 4:3 (repeat for more; default: all)")
    p.add_argument("--max-batch", type=_at_least_one, default=1, metavar="N",
                   help="batches of up to N requests too, as a server with NEURASTYLE_MAX_BATCH=N pads them")
    p.add_argument("--style", type=Path, nargs="+", action="extend", default=[], metavar="FILE",
                   help="style images to analyse exactly at every scale too, as a server's warm-up does with "
                        "its built-in paintings (--style web/styles/*.jpg)")
    p.add_argument("--weights", type=Path, help="weights file (default: the fetched one)")


def _at_least_one(text: str) -> int:
    """A whole number, 1 or more."""
    if not (text.isdigit() and int(text) >= 1):
        raise argparse.ArgumentTypeError(f"a whole number from 1 is needed, not {text!r}")
    return int(text)


def _aspect(text: str) -> tuple[int, int]:
    """"W:H" -> (W, H) (`nst_jax.shapes.parse_aspect`)."""
    try:
        return shapes.parse_aspect(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nst-jax", description="NeuraStyle: neural style transfer in JAX")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_stylize(sub)
    _add_weights(sub)
    _add_serve(sub)
    _add_warmup(sub)
    return parser


def given_options(args: argparse.Namespace) -> dict:
    """The options given on the command line of parsed `stylize` arguments, by name (argparse
    leaves out those not given)."""
    return {name: value for name, value in vars(args).items() if name in SPEC_BY_NAME}


def stylize_options(args: argparse.Namespace) -> Options:
    """The validated `Options` of parsed `stylize` arguments: the recipe, overridden by the options given."""
    return Options.from_mapping({"recipe": args.recipe, **given_options(args)}, n_styles=len(args.styles))


@contextlib.contextmanager
def progress_bar():
    """Within: an `on_progress` callback that draws a tqdm bar of the time: the seconds run of
    the seconds run and left (the estimate of each report), never moving backwards."""
    from tqdm import tqdm

    with tqdm(desc="stylize", total=1.0, dynamic_ncols=True,
              bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}") as bar:
        def on_progress(p):
            left = p.seconds_left if p.seconds_left is not None else math.nan
            if math.isfinite(left):
                bar.n = max(bar.n, p.elapsed / max(p.elapsed + left, 1e-9))
            cut = ", cut by the time limit" if p.budget_cut else ""
            bar.set_postfix_str(f"about {left:.0f} s left, step {p.step}/{p.total}{cut}, "
                                f"scale {p.scale + 1}/{p.scales} {p.shape[1]}x{p.shape[0]}, loss {p.loss:.4g}")
        yield on_progress


def run_stylize(args) -> None:
    from nst_jax import images, load_model, stylize

    if args.server:
        return run_remote(args)
    if args.style_preset or not args.styles:
        raise NSTError("give one or more STYLE images (--style-preset is for --server)")
    options = stylize_options(args)
    images.check_writable(args.output)
    content = images.read(args.content)
    styles = [images.read(p) for p in args.styles]
    model = load_model(args.weights)
    with progress_bar() as on_progress:
        result = stylize(content, styles, options, model=model, on_progress=on_progress)
    images.write(result, args.output)
    print(f"wrote {args.output} ({result.shape[1]}x{result.shape[0]})")


def run_remote(args) -> None:
    """`stylize --server URL`: the same request sent to a deployed function. Only the options
    given on the command line are sent (and the recipe where one is named)."""
    from tqdm import tqdm

    from nst_jax import client, images

    if args.weights:
        raise NSTError("--weights is for local runs; the server uses its own")
    options = given_options(args)
    if args.recipe != "default":
        options["recipe"] = args.recipe
    images.check_writable(args.output)

    def read(path: Path) -> bytes:
        try:
            return path.read_bytes()
        except OSError as e:
            raise NSTError(f"cannot read {path}: {e.strerror}") from None

    def on_retry(error, wait_s, attempt):  # above the progress bar
        tqdm.write(f"nst-jax: {error}; trying again in {wait_s:g} s ({attempt}/{client.MAX_RETRIES})", file=sys.stderr)

    with progress_bar() as on_progress:
        result = client.stylize(args.server, read(args.content), [read(p) for p in args.styles], args.style_preset,
                                options, on_progress=on_progress, on_retry=on_retry)
    images.write(result.image, args.output)
    print(f"wrote {args.output} ({result.image.shape[1]}x{result.image.shape[0]}, {result.steps} steps "
          f"in {result.elapsed_s:g} s on {args.server})")


def run_weights(args) -> None:
    from nst_jax import config, convert, weights

    if args.weights_command == "fetch":
        path = convert.fetch(args.model)
    else:
        w = convert.convert_file(args.file)
        path = weights.save(w, args.output or config.current().weights_dir / f"{w.arch}.npz")
    print(f"weights ready: {path}")


def run_serve(args) -> None:
    """The HTTP function's server (it is HTTP, so it lives in functions/, not in the library)."""
    try:
        from functions import server
    except ModuleNotFoundError as e:
        if e.name != "functions":
            raise
        raise NSTError("the HTTP function (functions/) is not installed; "
                       "install the project from a checkout (pip install -e .)") from e
    server.serve(args.host, args.port)


def run_warmup(args) -> None:
    from nst_jax import images, load_model, warmup

    for size in args.size:
        Options(size=size).validate()
    styles = [images.read(path) for path in args.style]
    model = load_model(args.weights)
    warmup.warmup(args.size, model=model, styles=styles, log=print, aspects=args.aspect, max_batch=args.max_batch)
    print(f"compilation cache: {warmup.cache_summary()}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "weights":
        from nst_jax.model import enable_compilation_cache

        enable_compilation_cache()  # before anything compiles: later runs skip compiling
    try:
        if args.command == "stylize":
            run_stylize(args)
        elif args.command == "weights":
            run_weights(args)
        elif args.command == "warmup":
            run_warmup(args)
        else:
            run_serve(args)
    except NSTError as e:
        print(f"nst-jax: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nst-jax: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
