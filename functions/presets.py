"""The built-in styles: the paintings in web/styles/, described by web/styles/SOURCES.md.

Read from disk once per process (`Presets.load`); a request names one with ``"style_preset"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nst_jax import images

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


@dataclass(frozen=True)
class Preset:
    """One painting: `name` is its file's stem, `image` its pixels (uint8 RGB)."""

    name: str
    file: str
    title: str
    painter: str
    year: int | None
    image: np.ndarray

    def info(self) -> dict:
        """What `GET /config` says about it; `url` is its file among the page's."""
        return {"name": self.name, "title": self.title, "painter": self.painter, "year": self.year,
                "url": f"/styles/{self.file}"}


@dataclass(frozen=True)
class Presets:
    by_name: dict[str, Preset]

    @classmethod
    def load(cls, web_dir: Path) -> Presets:
        """The images of `web_dir`/styles with their rows of SOURCES.md (none if the folder is absent)."""
        folder = web_dir / "styles"
        rows = source_rows(folder / "SOURCES.md")
        found = {}
        for file in sorted(folder.glob("*")) if folder.is_dir() else ():
            if file.suffix.lower() in IMAGE_SUFFIXES and file.is_file():
                title, painter, year = rows.get(file.name, (file.stem.replace("_", " ").title(), "", None))
                found[file.stem] = Preset(file.stem, file.name, title, painter, year,
                                          images.decode_rgb8(file.read_bytes(), name=f"style {file.stem}"))
        return cls(found)

    def names(self) -> list[str]:
        return sorted(self.by_name)

    def listing(self) -> list[dict]:
        return [self.by_name[name].info() for name in self.names()]

    def images(self) -> dict[str, np.ndarray]:
        return {name: preset.image for name, preset in self.by_name.items()}


def source_rows(path: Path) -> dict[str, tuple[str, str, int | None]]:
    """file -> (title, painter, year) from the Markdown table `| file | painting | painter | year | ... |`;
    the painter's life dates in parentheses are left out."""
    rows = {}
    if not path.is_file():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[0].lower().endswith(IMAGE_SUFFIXES):
            painter = re.sub(r"\s*\([^)]*\)\s*$", "", cells[2])
            rows[cells[0]] = (cells[1], painter, int(cells[3]) if cells[3].isdigit() else None)
    return rows
