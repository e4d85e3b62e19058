"""How computations run, and what they cost: devices and mixed precision (``device``), stable
seeds, pinned threads and the environment fingerprint (``determinism``), the on-disk cache
(``cache``), one-thread worker processes (``workers``), progress bars (``progress``), where time
goes (``timing``) and the compute charged (``costs``). Imports only :mod:`clamu_helpers.core`."""
