"""A tiny PNG line-chart writer (zlib + struct, no plotting library): stacked panels of
time series with axes, tick labels and a legend, drawn with a 5x7 bitmap font.

matplotlib would pull numpy, pillow and friends into the environment for two line charts
of the soak run; this is enough for those and keeps `bench` dependency-free.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass, field

Color = tuple[int, int, int]

PALETTE: tuple[Color, ...] = (
    (31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)

# 5x7 glyphs, one string of 7 rows of 5 bits each (1 = ink); unknown characters are blank.
_FONT_ROWS = {
    "0": "01110 10001 10011 10101 11001 10001 01110", "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111", "3": "11110 00001 00001 01110 00001 00001 11110",
    "4": "00010 00110 01010 10010 11111 00010 00010", "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110", "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110", "9": "01110 10001 10001 01111 00001 00010 01100",
    "A": "01110 10001 10001 11111 10001 10001 10001", "B": "11110 10001 10001 11110 10001 10001 11110",
    "C": "01110 10001 10000 10000 10000 10001 01110", "D": "11100 10010 10001 10001 10001 10010 11100",
    "E": "11111 10000 10000 11110 10000 10000 11111", "F": "11111 10000 10000 11110 10000 10000 10000",
    "G": "01110 10001 10000 10111 10001 10001 01111", "H": "10001 10001 10001 11111 10001 10001 10001",
    "I": "01110 00100 00100 00100 00100 00100 01110", "J": "00111 00010 00010 00010 00010 10010 01100",
    "K": "10001 10010 10100 11000 10100 10010 10001", "L": "10000 10000 10000 10000 10000 10000 11111",
    "M": "10001 11011 10101 10101 10001 10001 10001", "N": "10001 10001 11001 10101 10011 10001 10001",
    "O": "01110 10001 10001 10001 10001 10001 01110", "P": "11110 10001 10001 11110 10000 10000 10000",
    "Q": "01110 10001 10001 10001 10101 10010 01101", "R": "11110 10001 10001 11110 10100 10010 10001",
    "S": "01111 10000 10000 01110 00001 00001 11110", "T": "11111 00100 00100 00100 00100 00100 00100",
    "U": "10001 10001 10001 10001 10001 10001 01110", "V": "10001 10001 10001 10001 10001 01010 00100",
    "W": "10001 10001 10001 10101 10101 10101 01010", "X": "10001 10001 01010 00100 01010 10001 10001",
    "Y": "10001 10001 01010 00100 00100 00100 00100", "Z": "11111 00001 00010 00100 01000 10000 11111",
    ".": "00000 00000 00000 00000 00000 01100 01100", ":": "00000 01100 01100 00000 01100 01100 00000",
    "-": "00000 00000 00000 11111 00000 00000 00000", "_": "00000 00000 00000 00000 00000 00000 11111",
    "/": "00001 00010 00010 00100 01000 01000 10000", "(": "00010 00100 01000 01000 01000 00100 00010",
    ")": "01000 00100 00010 00010 00010 00100 01000", "%": "11001 11010 00010 00100 01000 01011 10011",
    ",": "00000 00000 00000 00000 01100 00100 01000", "=": "00000 00000 11111 00000 11111 00000 00000",
    "+": "00000 00100 00100 11111 00100 00100 00000", "#": "01010 01010 11111 01010 11111 01010 01010",
    " ": "00000 00000 00000 00000 00000 00000 00000",
}
FONT = {ch: [int(row, 2) for row in rows.split()] for ch, rows in _FONT_ROWS.items()}


class Canvas:
    def __init__(self, width: int, height: int, background: Color = (255, 255, 255)) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(bytes(background) * (width * height))

    def set(self, x: int, y: int, color: Color) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            i = 3 * (y * self.width + x)
            self.pixels[i:i + 3] = bytes(color)

    def line(self, x0: int, y0: int, x1: int, y1: int, color: Color, thick: int = 1) -> None:
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        while True:
            for t in range(thick):
                self.set(x0, y0 + t, color)
            if x0 == x1 and y0 == y1:
                return
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    def rect(self, x0: int, y0: int, x1: int, y1: int, color: Color) -> None:
        for y in range(y0, y1 + 1):
            for x in range(x0, x1 + 1):
                self.set(x, y, color)

    def text(self, x: int, y: int, text: str, color: Color = (0, 0, 0), scale: int = 1) -> int:
        """Draw `text` (upper-cased) with its top-left at (x, y); returns the x after it."""
        for ch in text.upper():
            rows = FONT.get(ch, FONT[" "])
            for r, bits in enumerate(rows):
                for c in range(5):
                    if bits & (1 << (4 - c)):
                        for i in range(scale):
                            for j in range(scale):
                                self.set(x + c * scale + i, y + r * scale + j, color)
            x += 6 * scale
        return x

    def png(self) -> bytes:
        raw = b"".join(b"\x00" + bytes(self.pixels[3 * y * self.width:3 * (y + 1) * self.width])
                       for y in range(self.height))

        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def text_width(text: str, scale: int = 1) -> int:
    return 6 * scale * len(text)


def nice_step(span: float, ticks: int = 5) -> float:
    if span <= 0:
        return 1.0
    raw = span / ticks
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if m * mag >= raw:
            return m * mag
    return 10 * mag


def fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e6:
        return f"{value / 1e6:g}M"
    if abs(value) >= 1e4:
        return f"{value / 1e3:g}K"
    return f"{value:g}"


@dataclass
class Series:
    label: str
    points: list[tuple[float, float]]
    color: Color | None = None


@dataclass
class Panel:
    title: str
    y_label: str
    series: list[Series] = field(default_factory=list)


def chart(panels: list[Panel], x_label: str, width: int = 1000, panel_height: int = 300) -> bytes:
    """One PNG with the panels stacked vertically, sharing the x range."""
    margin_l, margin_r, margin_t, margin_b = 70, 200, 30, 40
    height = len(panels) * (panel_height + margin_t + margin_b)
    canvas = Canvas(width, height)
    xs = [x for p in panels for s in p.series for x, _ in s.points]
    x0, x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
    if x1 <= x0:
        x1 = x0 + 1
    grey, black = (220, 220, 220), (0, 0, 0)
    for index, panel in enumerate(panels):
        top = index * (panel_height + margin_t + margin_b) + margin_t
        left, right, bottom = margin_l, width - margin_r, top + panel_height
        ys = [y for s in panel.series for _, y in s.points]
        y_max = max(ys) if ys else 1.0
        y_max = y_max * 1.05 if y_max > 0 else 1.0
        step = nice_step(y_max)
        y_max = math.ceil(y_max / step) * step
        canvas.text(left, top - 18, f"{panel.title}  ({panel.y_label})", black, 2 if len(panel.title) < 40 else 1)
        yv = 0.0
        while yv <= y_max + 1e-9:
            py = bottom - int((yv / y_max) * (bottom - top))
            canvas.line(left, py, right, py, grey)
            label = fmt(yv)
            canvas.text(left - 6 - text_width(label), py - 3, label, black)
            yv += step
        xstep = nice_step(x1 - x0, 8)
        xv = math.ceil(x0 / xstep) * xstep
        while xv <= x1 + 1e-9:
            px = left + int((xv - x0) / (x1 - x0) * (right - left))
            canvas.line(px, top, px, bottom, grey)
            label = fmt(xv)
            canvas.text(px - text_width(label) // 2, bottom + 6, label, black)
            xv += xstep
        canvas.line(left, top, left, bottom, black)
        canvas.line(left, bottom, right, bottom, black)
        canvas.text((left + right) // 2 - text_width(x_label) // 2, bottom + 20, x_label, black)
        for i, s in enumerate(panel.series):
            color = s.color or PALETTE[i % len(PALETTE)]
            pts = sorted(s.points)
            prev = None
            for x, y in pts:
                px = left + int((x - x0) / (x1 - x0) * (right - left))
                py = bottom - int((y / y_max) * (bottom - top))
                if prev is not None:
                    canvas.line(prev[0], prev[1], px, py, color, thick=2)
                prev = (px, py)
            ly = top + 4 + 14 * i
            if ly < bottom - 10:
                canvas.rect(right + 10, ly, right + 22, ly + 6, color)
                canvas.text(right + 28, ly, s.label[:28], black)
    return canvas.png()
