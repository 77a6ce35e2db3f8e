"""The TPU accelerator types this tool accepts, and how many workers (VMs) each slice has.

The worker count is what `logs` loops over, one copy per worker; a wrong count would
silently miss logs, so an unknown type is refused rather than guessed.
"""

# gcloud names v5e slices v5litepod-<chips>. Slices of up to 8 chips are one VM; larger
# ones are built from 4-chip VMs (machine type ct5lp-hightpu-4t), e.g. v5litepod-16 = 4 VMs.
V5E_CHIPS = (1, 4, 8, 16, 32, 64, 128, 256)

# v4 types count TensorCores: 2 per chip, 4 chips per VM, so 8 per worker.
V4_CORES_PER_WORKER = 8
V4_MAX_CORES = 8192


def worker_count(accelerator_type: str) -> int:
    """Workers in a slice of this type; ValueError with a one-line reason if unknown."""
    family, _, size = accelerator_type.rpartition("-")
    if size.isdigit():
        n = int(size)
        if family == "v4" and n % V4_CORES_PER_WORKER == 0 and 0 < n <= V4_MAX_CORES:
            return n // V4_CORES_PER_WORKER
        if family == "v5litepod" and n in V5E_CHIPS:
            return 1 if n <= 8 else n // 4
        if family == "v5e":
            raise ValueError(
                f"unknown accelerator type {accelerator_type!r}: gcloud calls it v5litepod-{n}"
            )
    raise ValueError(
        f"unknown accelerator type {accelerator_type!r} (known: v4-N with N a multiple of 8, "
        f"v5litepod-N with N in {', '.join(map(str, V5E_CHIPS))})"
    )
