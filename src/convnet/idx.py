"""The IDX file format of (Fashion-)MNIST: read one file (gzipped or raw), write one (for fixtures and exports).

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions), one
big-endian 4-byte size per dimension, then the values, big-endian, in C order.
"""

import gzip
import os
from pathlib import Path
import zlib

import numpy as np

from convnet.errors import DataError

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
  """Reads one IDX file, gzipped or raw; raises DataError naming the file and what is wrong."""
  path = Path(path)
  try:
    raw = path.read_bytes()
  except FileNotFoundError:
    raise DataError(f"{path}: file not found") from None
  except OSError as e:
    raise DataError(f"{path}: cannot read ({e.strerror})") from None
  if raw[:2] == b"\x1f\x8b":
    try:
      raw = gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as e:
      raise DataError(f"{path}: corrupt or truncated gzip data ({e})") from None
  if len(raw) < 4:
    raise DataError(f"{path}: truncated: {len(raw)} bytes, too short for an IDX header")
  zero, type_code, ndim = int.from_bytes(raw[:2], "big"), raw[2], raw[3]
  if zero != 0 or type_code not in _IDX_DTYPES or ndim == 0:
    raise DataError(
      f"{path}: wrong magic number 0x{int.from_bytes(raw[:4], 'big'):08x}; not an IDX file "
      f"(expected 0x00000801 for labels or 0x00000803 for images)"
    )
  header_size = 4 + 4 * ndim
  if len(raw) < header_size:
    raise DataError(f"{path}: truncated header: {len(raw)} bytes, need {header_size} for {ndim} dimensions")
  shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
  dtype = np.dtype(_IDX_DTYPES[type_code])
  expected = int(np.prod(shape)) * dtype.itemsize
  found = len(raw) - header_size
  if found < expected:
    raise DataError(f"{path}: truncated: header says {shape} ({expected} bytes of data), found {found} bytes")
  if found > expected:
    raise DataError(f"{path}: corrupt: header says {shape} ({expected} bytes of data), found {found} bytes")
  return np.frombuffer(raw, dtype, offset=header_size).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
  """Writes ``array`` as an IDX file (gzipped if the name ends in .gz); for fixtures and exports."""
  array = np.asarray(array)
  codes = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
  if array.dtype not in codes:
    raise ValueError(f"IDX cannot store dtype {array.dtype}")
  header = bytes([0, 0, codes[array.dtype], array.ndim])
  header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
  data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
  path = Path(path)
  path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
