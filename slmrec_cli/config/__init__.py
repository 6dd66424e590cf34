"""Every command's options as typed configs: one dataclass per concern, each field with its help and its check.
Light to import (no torch), so the CLI builds its commands from them instantly."""
