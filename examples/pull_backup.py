#!/usr/bin/env python3
"""A pull-mode backup client: reads a point in time that stratad (or
qemu-storage-daemon) exports over NBD and applies it to a backup file.

    pull_backup.py --socket /run/strata/nbd.sock --export backup \\
                   --output disk.backup.raw [--bitmap t] [--discard]

- Without --bitmap (a full backup) every extent is copied; holes and zero
  extents of `base:allocation` become holes in the output (a sparse file).
- With --bitmap NAME (an incremental or differential backup: the daemon
  exports the bitmap with the point in time, `bitmaps: [NAME]` in
  block-export-add) only the extents `qemu:dirty-bitmap:NAME` marks are
  read and written over the output, which holds the previous backup.
- With --discard each range is trimmed on the export once it is safely in
  the output: over a snapshot-access node this gives the fleecing image's
  space back as the backup goes (the export must be writable for trims;
  writes to it are still refused).

The output is written and fsync()ed before the program says "done";
anything else (a read error, a broken snapshot: EACCES) stops it with a
message and exit status 1, and the backup is to be redone.
"""
import argparse
import ctypes
import ctypes.util
import os
import sys

import nbd

CHUNK = 16 << 20  # largest read: well under NBD's 32 MiB limit
DIRTY = 1         # qemu:dirty-bitmap: bit 0 marks a dirty extent
HOLE, ZERO = nbd.STATE_HOLE, nbd.STATE_ZERO


def connect(args):
    h = nbd.NBD()
    h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    if args.bitmap:
        h.add_meta_context("qemu:dirty-bitmap:" + args.bitmap)
    h.set_export_name(args.export)
    h.connect_unix(args.socket)
    if args.bitmap and not h.can_meta_context("qemu:dirty-bitmap:" + args.bitmap):
        sys.exit(f"the export has no bitmap '{args.bitmap}'")
    return h


def extents(h, context, offset, length):
    """[(offset, length, flags)] of `context` over [offset, offset + length)."""
    out = []
    end = offset + length
    while offset < end:
        got = []

        def cb(meta, _offset, entries, _err):
            if meta == context:
                got.extend(entries)
            return 0

        h.block_status(min(end - offset, CHUNK * 4), offset, cb)
        for i in range(0, len(got), 2):
            n = min(got[i], end - offset)
            if n == 0:
                break
            out.append((offset, n, got[i + 1]))
            offset += n
            if offset >= end:
                break
    return out


def copy_range(h, out, offset, length, discard):
    """Copies data of [offset, offset + length) into the output."""
    for pos in range(offset, offset + length, CHUNK):
        n = min(CHUNK, offset + length - pos)
        os.pwrite(out, h.pread(n, pos), pos)
    if discard:
        os.fsync(out)  # safe in the backup before the daemon drops it
        h.trim(length, offset)


def punch(out, offset, length):
    """Zeroes a range of the output, freeing its blocks where the file
    system can (fallocate PUNCH_HOLE | KEEP_SIZE), else by writing zeroes."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    if libc.fallocate(out, 0x01 | 0x02, offset, length) == 0:
        return
    for pos in range(offset, offset + length, CHUNK):
        os.pwrite(out, bytes(min(CHUNK, offset + length - pos)), pos)


def backup(args):
    h = connect(args)
    size = h.get_size()
    out = os.open(args.output, os.O_RDWR | os.O_CREAT, 0o644)
    os.ftruncate(out, size)
    copied = 0
    if args.bitmap:
        context = "qemu:dirty-bitmap:" + args.bitmap
        for off, n, flags in extents(h, context, 0, size):
            if flags & DIRTY:
                copy_range(h, out, off, n, args.discard)
                copied += n
    else:
        for off, n, flags in extents(h, nbd.CONTEXT_BASE_ALLOCATION, 0, size):
            if flags & ZERO:
                punch(out, off, n)
                if args.discard:
                    h.trim(n, off)
            else:
                copy_range(h, out, off, n, args.discard)
                copied += n
    os.fsync(out)
    os.close(out)
    h.shutdown()
    print(f"done: {copied} bytes copied of {size}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--socket", required=True)
    p.add_argument("--export", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--bitmap")
    p.add_argument("--discard", action="store_true")
    args = p.parse_args()
    try:
        backup(args)
    except nbd.Error as e:
        sys.exit(f"backup failed: {e}")


if __name__ == "__main__":
    main()
