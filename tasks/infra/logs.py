"""How every entry point logs: plain timestamped lines on stderr, the libraries' chatter turned down.

Below the CLI, the sweep and the benches, which all set it up the same way (the sweep's trial
subprocesses too), so none of them imports another's entry point.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings


def setup_logging(quiet: bool) -> None:
    """Plain timestamped log lines on stderr; the libraries' chatter turned down."""
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except ImportError:
        pass
