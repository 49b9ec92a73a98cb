"""The demo's attachments (SPEC.md §16), made on the spot: a photo of a crushed parcel (a PNG
with sensor grain, about 270 KB, so its blob has two chunks), its thumbnail, and an invoice
PDF.

Plain standard library (zlib for PNG, hand-written PDF objects); deterministic for a seed.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Sequence

__all__ = ["parcel_photo", "parcel_thumbnail", "invoice_pdf"]


def _png(width: int, height: int, rows: Sequence[bytes]) -> bytes:
    """A PNG (8-bit RGB, no filter) of ``rows`` (each ``3 * width`` bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    raw = b"".join(b"\x00" + row for row in rows)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def _pixel(x: int, y: int, w: int, h: int) -> tuple[int, int, int]:
    """A cardboard box on a floor, its top corner pushed in, a strip of tape."""
    floor = (150 + y * 60 // h, 140 + y * 50 // h, 130 + y * 40 // h)
    bx0, bx1, by0, by1 = w // 5, 4 * w // 5, h // 4, 7 * h // 8
    if not (bx0 <= x < bx1 and by0 <= y < by1):
        return floor
    dent = (x - bx0) + (y - by0) < (bx1 - bx0) // 3  # the crushed corner
    if abs(x - (bx0 + bx1) // 2) < w // 40:
        return (200, 180, 120) if not dent else (150, 130, 90)  # tape
    base = (170, 120, 70) if not dent else (115, 80, 45)
    return base


def parcel_photo(width: int = 640, height: int = 480, seed: bytes = b"parcel") -> bytes:
    """The customer's photo of the damaged parcel: a PNG with per-pixel grain."""
    rows = []
    for y in range(height):
        grain = hashlib.shake_256(seed + y.to_bytes(4, "big")).digest(width)
        row = bytearray()
        for x in range(width):
            r, g, b = _pixel(x, y, width, height)
            n = grain[x] % 17 - 8
            row += bytes(
                (max(0, min(255, r + n)), max(0, min(255, g + n)), max(0, min(255, b + n)))
            )
        rows.append(bytes(row))
    return _png(width, height, rows)


def parcel_thumbnail(width: int = 80, height: int = 60) -> bytes:
    """A small PNG of the same scene, without grain: what the pointer carries inline."""
    rows = [
        b"".join(bytes(_pixel(x, y, width, height)) for x in range(width)) for y in range(height)
    ]
    return _png(width, height, rows)


def _pdf_text(s: str) -> str:
    return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def invoice_pdf(number: str, lines: Sequence[tuple[str, str]], total: str) -> bytes:
    """A one-page PDF invoice: a title, the item lines (description, amount) and a total."""
    text = [f"ACME Shop - Invoice {number}", ""]
    text += [f"{item:<40} {amount:>10}" for item, amount in lines]
    text += ["", f"{'Total':<40} {total:>10}", "", "Thank you for your patience."]
    ops = ["BT", "/F1 12 Tf", "14 TL", "72 770 Td"]
    for line in text:
        ops.append(f"({_pdf_text(line)}) Tj T*")
    ops.append("ET")
    stream = "\n".join(ops).encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Courier >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)
