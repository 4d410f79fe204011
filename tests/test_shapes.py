"""Working shapes: aspect buckets, the scales of a multi-scale run, the style image's size."""

from __future__ import annotations

from nst_jax import Options, shapes


def test_working_shapes_are_bucketed():
    found = {shapes.working_shape(h, 1000, 512) for h in range(300, 1001)}
    assert len(found) <= shapes.ASPECT_BUCKETS and all(w == 512 and h % 32 == 0 for h, w in found)


def test_scale_sizes_coarse_to_fine():
    assert shapes.scale_sizes(512, 128, 2, 10) == [128, 256, 512]
    assert shapes.scale_sizes(2048, 256, 2, 10) == [256, 512, 1024, 2048]
    assert shapes.scale_sizes(1024, 256, 2 ** 0.5, 10) == [256, 384, 512, 736, 1024]  # rounded up to 32 px
    assert shapes.scale_sizes(300, 128, 2, 10) == [160, 320]
    assert shapes.scale_sizes(256, 256, 2, 10) == [256]
    assert shapes.scale_sizes(200, 256, 2, 10) == [224]


def test_a_larger_picture_starts_at_a_finer_scale_where_the_scales_are_capped():
    assert shapes.scale_sizes(512, 256, 2 ** 0.5, 3) == [256, 384, 512]
    assert shapes.scale_sizes(1024, 256, 2 ** 0.5, 3) == [512, 736, 1024]
    assert shapes.scale_sizes(2048, 256, 2, 2) == [1024, 2048]
    assert shapes.scale_sizes(2048, 256, 2, 1) == [2048]


def test_the_style_image_is_never_upscaled():
    assert shapes.style_longest((640, 1024, 3), 512, 1.0) == 512
    assert shapes.style_longest((640, 1024, 3), 2048, 1.0) == 1024
    assert shapes.style_longest((640, 1024, 3), 512, 0.5) == 256
    assert shapes.style_longest((300, 500, 3), 1024, 1.0) == 480  # its own side, bucketed
    assert shapes.style_longest((20, 20, 3), 512, 1.0) == shapes.MIN_SIDE



def test_the_default_starts_every_picture_up_to_1024_px_at_256_px_and_the_seed_recipe_halves_from_128_px():
    def widths(options):
        return [shape[1] for shape in shapes.scale_shapes((768, 1024, 3), options)]

    assert widths(Options(size=512)) == [256, 384, 512]
    assert widths(Options(size=1024)) == [256, 384, 512, 736, 1024]  # the 512 px picture, refined
    assert widths(Options(size=2048)) == [512, 736, 1024, 1472, 2048]  # max_scales caps it
    assert widths(Options.from_mapping({"recipe": "seed", "size": 1024})) == [128, 256, 512, 1024]
