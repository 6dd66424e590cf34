"""The models' configs (config.json's "model"): SASRec, and the LLM recommender with its prompt and LoRA."""

from __future__ import annotations

from dataclasses import dataclass

from slmrec_cli.config.fields import LORA, check_choice, opt, split_commas
from slmrec_cli.errors import SlmrecError


@dataclass
class SASRecConfig:
    """config.json's "model" of a SASRec run."""

    n_items: int = opt("Items in the catalogue (from the dataset).", 0, cli=False)
    dim: int = opt("Id embedding width (the table the LLM models reuse).", 128)
    layers: int = opt("Self-attention blocks.", 2)
    heads: int = opt("Attention heads.", 2)
    max_len: int = opt("Most recent items the model reads.", 50)
    dropout: float = opt("Dropout on embeddings, attention and feed-forward.", 0.2)

    def __post_init__(self) -> None:
        for key in ("dim", "layers", "heads", "max_len"):
            if getattr(self, key) < 1:
                raise SlmrecError(f"--{key.replace('_', '-')} must be at least 1, got {getattr(self, key)}")
        if self.dim % self.heads:
            raise SlmrecError(f"--dim {self.dim} is not divisible by --heads {self.heads}; change one of them")
        if not 0 <= self.dropout < 1:
            raise SlmrecError(f"--dropout must be in [0, 1), got {self.dropout}")


# Named prompts for --prompt. `items` (the default) is the history alone, so every item slot is followed by the next
# one and causal (dense) targets can score each slot; `instruction` is the wording slmrec used before, a question
# after the history, so the last position is the response cue (targets last or all only).
PROMPTS = {
    "items": "{history}",
    "instruction": ("Here is the sequence of items a user interacted with, oldest first: {history}\n"
                    "Which item will the user interact with next? Answer:"),
}
DEFAULT_PROMPT = PROMPTS["items"]
TARGETS = ("causal", "last", "all")
LORA_TARGETS = ("gate_proj", "up_proj", "down_proj")


def prompt_template(value: str | None) -> str:
    """--prompt: a preset name (items, instruction) or a template; None = the default."""
    return DEFAULT_PROMPT if value is None else PROMPTS.get(value, value)


@dataclass
class LLMRecConfig:
    """config.json's "model" of a teacher or student run."""

    n_items: int = opt("Items in the catalogue (from the dataset).", 0, cli=False)
    id_dim: int = opt("d0: width of the SASRec id table (from --ids).", 0, cli=False)
    hidden: int = opt("d1: width of the LLM (from the base model).", 0, cli=False)
    layers: int = opt("Keep the first N decoder layers of the base model.", 8)
    max_len: int = opt("Most recent items the model reads.", 30)
    prompt: str = opt("items (default: the history alone) | instruction (slmrec's question after the history; "
                      "targets last or all) | a template with one '{history}' where the items go.", DEFAULT_PROMPT,
                      cli_type=str | None, cli_default=None, from_cli=prompt_template)
    lora_r: int = opt("LoRA rank.", 16, panel=LORA)
    lora_alpha: int = opt("LoRA alpha.", 16, panel=LORA)
    lora_dropout: float = opt("LoRA dropout.", 0.05, panel=LORA)
    lora_targets: list[str] = opt("Comma-separated module names that get LoRA.", factory=lambda: list(LORA_TARGETS),
                                  panel=LORA, cli_type=str, cli_default=",".join(LORA_TARGETS), from_cli=split_commas)
    train_ids: bool = opt("Train the item id table with the model (the SASRec table from --ids, which the history is "
                          "read from and every item scored against); default: frozen, as E4SRec and SLMRec keep it.",
                          False)

    def __post_init__(self) -> None:
        for key in ("layers", "max_len"):
            if getattr(self, key) < 1:
                raise SlmrecError(f"--{key.replace('_', '-')} must be at least 1, got {getattr(self, key)}")
        if self.lora_r < 1 or self.lora_alpha < 1:
            raise SlmrecError(f"--lora-r and --lora-alpha must be at least 1, got {self.lora_r} and "
                              f"{self.lora_alpha}")
        if not 0 <= self.lora_dropout < 1:
            raise SlmrecError(f"--lora-dropout must be in [0, 1), got {self.lora_dropout}")
        if not self.lora_targets:
            raise SlmrecError("--lora-targets is empty; name at least one module, e.g. gate_proj,up_proj,down_proj")
        self.prompt_parts()

    def prompt_parts(self) -> tuple[str, str]:
        if self.prompt.count("{history}") != 1:
            raise SlmrecError("--prompt must contain '{history}' exactly once (where the item sequence goes)")
        prefix, suffix = self.prompt.split("{history}")
        return prefix, suffix


def check_prompt_for_targets(prompt: str, targets: str) -> None:
    """Causal targets score every item slot as the prediction of the next one: nothing may follow `{history}`."""
    check_choice(targets, TARGETS, "--targets")
    if targets == "causal" and prompt.split("{history}", 1)[-1]:
        shown = next((name for name, text in PROMPTS.items() if text == prompt), repr(prompt))
        raise SlmrecError(f"--prompt {shown} has text after '{{history}}', which --targets causal cannot use (each "
                          "item slot must be followed by the next item); end the prompt with '{history}' "
                          "(e.g. --prompt items) or use --targets last")
