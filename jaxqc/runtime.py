"""How the `jaxqc` process starts and ends: the re-run with huge pages, and the one-line internal error."""
from __future__ import annotations

import os
import sys
from pathlib import Path

HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"


def huge_page_command(argv: list, environ: dict, platform: str = sys.platform):
    """(argv, env) to re-run this command with glibc's malloc asking for transparent huge pages, or None.

    XLA:CPU allocates a fresh temporary buffer for every call of a compiled function (~300 MB for a
    SchNet force evaluation of 100 QM9 molecules) and the kernel maps it 4 KiB page by page: 72,000 page
    faults per call, half of the call's time on one core (measured: 248 ms, with huge pages 144 ms). The
    tunable must be set before the process starts, hence the re-run. None when not on Linux, when
    GLIBC_TUNABLES is already set (also by the re-run itself) or when JAXQC_HUGE_PAGES=0."""
    if platform != "linux" or "GLIBC_TUNABLES" in environ or environ.get("JAXQC_HUGE_PAGES") == "0":
        return None
    return [sys.executable, "-m", "jaxqc.cli", *argv], {**environ, "GLIBC_TUNABLES": HUGE_PAGES_TUNABLE}


INTERNAL_ERROR = 3  # exit code of an unexpected exception (2: a bad input or setting)


def internal_error(err: Exception) -> int:
    """One line on stderr and the full traceback in a log file whose path it prints."""
    import tempfile
    import traceback

    log = Path(tempfile.gettempdir()) / f"jaxqc-error-{os.getpid()}.log"
    log.write_text("".join(traceback.format_exception(err)))
    print(f"jaxqc: internal error: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''} "
          f"(traceback in {log}; --debug shows it here)", file=sys.stderr)
    return INTERNAL_ERROR
