"""A run's LoRA adapter (RUN/adapter/): saved in the key layout of the base model's causal LM, so plain peft attaches
it (`PeftModel.from_pretrained(AutoModelForCausalLM..., "RUN/adapter")`); loaded by slmrec onto the inner decoder in
that layout or in the inner-decoder layout of runs saved before it."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

from safetensors import SafetensorError

from slmrec_cli.errors import SlmrecError, first_line
from slmrec_cli.io import atomic_path, read_json, save_safetensors, write_json

ADAPTER = "adapter"
ADAPTER_WEIGHTS, ADAPTER_CONFIG = "adapter_model.safetensors", "adapter_config.json"
ADAPTER_FILES = (f"{ADAPTER}/{ADAPTER_WEIGHTS}", f"{ADAPTER}/{ADAPTER_CONFIG}")
PEFT_PREFIX = "base_model.model."  # what peft puts before a module's name in an adapter's keys


def inner_prefix(decoder) -> str:
    """Where a causal LM holds this inner decoder ("model" for LLaMA-family models: LlamaForCausalLM.model)."""
    return getattr(decoder, "base_model_prefix", None) or "model"


def load_adapter(decoder, adapter_dir: Path):
    """A saved LoRA adapter on the inner `decoder`; a damaged or mismatched one is one SlmrecError. Reads both layouts:
    the causal-LM one save_adapter writes (keys base_model.model.model.layers...) and the inner-decoder one of runs
    saved before it (base_model.model.layers...)."""
    from peft import PeftConfig, PeftModel
    from peft.utils import get_peft_model_state_dict
    from safetensors import safe_open

    adapter_dir, prefix = Path(adapter_dir), inner_prefix(decoder)
    try:
        config = PeftConfig.from_pretrained(str(adapter_dir))
        config.task_type = None  # wrap the inner decoder itself, whatever head the saved config names
        with warnings.catch_warnings():  # peft calls a transformers API that warns about its own rename
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", message="Found missing adapter keys")  # refused below, in one line
            model = PeftModel.from_pretrained(decoder, str(adapter_dir), config=config,
                                              key_mapping={f"^{re.escape(prefix)}\\.": ""})
        with safe_open(str(adapter_dir / ADAPTER_WEIGHTS), "pt") as f:
            saved = {k.replace(f"{PEFT_PREFIX}{prefix}.", PEFT_PREFIX, 1) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        raise SlmrecError(f"{adapter_dir} is not a usable LoRA adapter for this model ({first_line(e)}); "
                          "retrain the run") from None
    expected = set(get_peft_model_state_dict(model, save_embedding_layers=False))
    if saved != expected:  # peft only warns about missing keys, and the LoRA would silently do nothing
        odd = sorted(saved ^ expected)
        raise SlmrecError(f"{adapter_dir} does not fit this model ({len(odd)} LoRA tensors differ, e.g. {odd[0]}); "
                          "retrain the run")
    return model


def save_adapter(decoder, folder: Path, layers: int) -> None:
    """peft's save_pretrained of the wrapped inner decoder, rewritten into the causal LM's layout: keys
    base_model.model.<prefix>.layers..., task_type CAUSAL_LM, no auto_mapping naming the inner class. The base model
    is named as build_model set it (as the user named it), and peft's template card is replaced by a short one."""
    from safetensors.torch import load_file

    folder = Path(folder)
    # the embedding layers are never trained; "auto" would look the base model's name up on the Hub
    decoder.save_pretrained(str(folder), save_embedding_layers=False)
    prefix = inner_prefix(decoder.get_base_model())
    weights = load_file(str(folder / ADAPTER_WEIGHTS))
    save_safetensors({k.replace(PEFT_PREFIX, f"{PEFT_PREFIX}{prefix}.", 1): v for k, v in weights.items()},
                     folder / ADAPTER_WEIGHTS, metadata={"format": "pt"})
    config = read_json(folder / ADAPTER_CONFIG)
    config.update(task_type="CAUSAL_LM", auto_mapping=None)
    write_json(folder / ADAPTER_CONFIG, config)
    with atomic_path(folder / "README.md") as tmp:
        tmp.write_text(card(config.get("base_model_name_or_path") or "the base model", layers))


def card(base: str, layers: int) -> str:
    return f"""---
base_model: {base}
library_name: peft
tags: [lora, slmrec]
---
# LoRA adapter of an slmrec run

The LoRA an slmrec teacher or student run trained on the first {layers} layers of `{base}` (the run's config.json
says which run, data and base model). It attaches to that base model's causal LM cut to {layers} layers:

```python
from peft import PeftModel
from transformers import AutoModelForCausalLM

base = AutoModelForCausalLM.from_pretrained("BASE_MODEL_FOLDER", num_hidden_layers={layers})
model = PeftModel.from_pretrained(base, "RUN/adapter")
```

Only the decoder layers carry LoRA. The rest of the recommender (the id projections in `projections.safetensors`, the
item table in `item_embeddings.safetensors`, the prompt) is the run's; `slmrec export` merges everything into one
model that needs neither peft nor the base model files.
"""
