"""The GPU run's earlier name: ``python -m tests.gpu.check_gpu`` runs :mod:`tests.gpu.bench_gpu`.

Its checks now live by section in ``sec_embedding``, ``sec_decoder``, ``sec_services`` and
``sec_extra``, run by ``bench_gpu`` under per-section time limits.
"""

from __future__ import annotations

import sys

from tests.gpu.bench_gpu import main

if __name__ == "__main__":
    sys.exit(main())
