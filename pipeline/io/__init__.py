"""Bytes in and out: object listing and ranged reads, frames decoded from them, and the Parquet store.

objects (byte ranges of one object) -> video (frames) ... schema/output (Parquet, the commit) -> readback.
"""
