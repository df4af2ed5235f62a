"""Byte framing shared by the bitstream sections: varints and a bounds-checked reader."""

from __future__ import annotations

from weightstep.errors import BitstreamError


def put_varint(out: bytearray, value: int) -> None:
    """Append ``value`` (0 .. 2^32-1) as a little-endian base-128 varint."""
    if value < 0 or value > 0xFFFFFFFF:
        raise ValueError(f"varint out of range: {value}")
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def zigzag(v: int) -> int:
    """A signed integer as the unsigned one a varint holds: 0, -1, 1, -2, ... -> 0, 1, 2, 3, ..."""
    return 2 * v if v >= 0 else -2 * v - 1


def unzigzag(z: int) -> int:
    """The inverse of :func:`zigzag`."""
    return z // 2 if z % 2 == 0 else -(z + 1) // 2


class ByteReader:
    """Bounds-checked reading of a byte string; every failure is a BitstreamError."""

    def __init__(self, data: bytes, what: str):
        self.data, self.pos, self.what = data, 0, what

    def take(self, n: int, field: str) -> bytes:
        if n < 0 or n > len(self.data) - self.pos:
            raise BitstreamError(f"{self.what}: truncated {field} ({n} bytes needed, "
                                 f"{len(self.data) - self.pos} left)")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def varint(self, field: str) -> int:
        value = 0
        for i in range(5):
            byte = self.take(1, field)[0]
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if value > 0xFFFFFFFF:
                    break
                return value
        raise BitstreamError(f"{self.what}: malformed {field}")

    def rest(self) -> bytes:
        """Everything not read yet (the reader is then at the end)."""
        chunk, self.pos = self.data[self.pos:], len(self.data)
        return chunk
