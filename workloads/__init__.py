"""The memory models memsim traces, in plain torch: one module a family, registered by name.

Importing this package registers every family (see memsim.trace.workload).
"""
from memsim.workloads import llama  # noqa: F401  (registers on import)
from memsim.workloads import mamba  # noqa: F401
from memsim.workloads import mamba2  # noqa: F401
from memsim.workloads import linear_attention  # noqa: F401
from memsim.workloads import xlstm  # noqa: F401
from memsim.workloads import rwkv  # noqa: F401
from memsim.workloads import memory_transformer  # noqa: F401
from memsim.workloads import titans  # noqa: F401
from memsim.workloads import samba  # noqa: F401
from memsim.workloads import moe  # noqa: F401
