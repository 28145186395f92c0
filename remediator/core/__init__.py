"""Pure core: everything here is deterministic and does no I/O.

Time, storage and the network reach this layer only as values passed in by the
callers, which is what lets replay run the very same decisions on a virtual clock.
"""
