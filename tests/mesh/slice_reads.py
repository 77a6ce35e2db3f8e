"""A stand-in for safetensors.safe_open that records every slice a loader reads, for the loading checks."""

from __future__ import annotations


def recording_safe_open(reads: list):
    """safe_open, appending (stored shape, block shape, block bytes) to `reads` for every slice read."""
    from safetensors import safe_open

    class Recording:
        def __init__(self, *args, **kwargs):
            self.f = safe_open(*args, **kwargs)

        def __enter__(self):
            self.f.__enter__()
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

        def __getattr__(self, name):  # keys(), get_tensor(): as the real file
            return getattr(self.f, name)

        def get_slice(self, name):
            stored = self.f.get_slice(name)

            class Slice:
                get_shape = stored.get_shape

                def __getitem__(self, index):
                    block = stored[index]
                    reads.append((tuple(stored.get_shape()), tuple(block.shape), block.nbytes))
                    return block

            return Slice()

    return Recording
