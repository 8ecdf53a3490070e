"""Reading an NBD meta context's extents with python3-libnbd."""


def flagged_extents(handle, context, flag=1):
    """[(offset, length)] of the export where `context` (already negotiated on
    `handle`) reports `flag`, e.g. the dirty extents of qemu:dirty-bitmap:NAME.
    Asks again from where each reply ends until the whole export is covered."""
    found, covered = [], [0]

    def extents(meta, offset, entries, err):
        pos = offset
        for i in range(0, len(entries), 2):
            if meta == context and entries[i + 1] & flag:
                found.append((pos, entries[i]))
            pos += entries[i]
        covered[0] = pos
        return 0

    size = handle.get_size()
    while covered[0] < size:
        handle.block_status(size - covered[0], covered[0], extents)
    return found
