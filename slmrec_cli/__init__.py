"""slmrec: small LLM-based sequential recommenders."""

import logging as _logging

__version__ = "0.1.0"

# bitsandbytes, imported by peft, warns on every start on CPUs with AVX-512 BF16 that an optional kernel package
# (`kernels`, from the Hugging Face hub) is missing; its plain CPU kernels work without it. Not our users' concern.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)
