"""Image files the tests make for the photo paths."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

from PIL import Image

IHDR = 8  # the PNG header chunk after the signature: length (4), b"IHDR" (4), 13 bytes of fields, CRC (4)


def bomb_png(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A PNG of a few dozen bytes whose header declares ``width x height`` pixels: a decompression bomb (400 MP by
    default, above Pillow's limit of 2 x ``Image.MAX_IMAGE_PIXELS``)."""
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    assert data[IHDR + 4 : IHDR + 8] == b"IHDR"
    data[IHDR + 8 : IHDR + 16] = struct.pack(">II", width, height)
    data[IHDR + 21 : IHDR + 25] = struct.pack(">I", zlib.crc32(bytes(data[IHDR + 4 : IHDR + 21])))
    path.write_bytes(bytes(data))
    return path
