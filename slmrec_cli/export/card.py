"""What an export says about itself: the ONNX files' metadata_props and the model card (README.md)."""

from __future__ import annotations

from slmrec_cli.export.files import EXPORT_FORMAT, EXPORT_FORMAT_VERSION, FILES, ITEM_MAP, MEANT_FOR

PROTOCOL = "slmrec leave-one-out, test split, sampled and full ranking, pessimistic ties (docs/protocol.md)"
ITEMS = ("int64 [batch, length]: internal item indices 1..n_items (item_map.tsv maps raw ids to them), 0 = padding; "
         "left-padded, oldest first; only the last max_len items are read")
USER = "float32 [batch, id_dim]: the user vector"
SCORES = ("float32 [batch, n_items + 1]: user vector · item table; column 0 is padding and must be masked; the "
          "history's items are not masked")
WHAT = {"torch-fp32": "the reference: the merged decoder (transformers) and its head (safetensors)",
        "onnx-fp32": "ONNX Runtime, fp32", "onnx-int8": "ONNX Runtime, int8 (CPU serving)",
        "onnx-int4": "ONNX Runtime, 4-bit weights (smallest ONNX file)",
        "onnx-fp16": "ONNX Runtime, fp16 weights and compute (for the CUDA execution provider; inputs and outputs "
                     "stay int64/float32)",
        "bnb-int8": "bitsandbytes LLM.int8() decoder + head (CUDA)",
        "bnb-nf4": "bitsandbytes NF4 decoder + head (CUDA)"}


def onnx_metadata(manifest: dict, variant: str) -> dict[str, str]:
    """The metadata_props of an ONNX variant: what its input and outputs mean, and where it comes from."""
    return {"slmrec_version": manifest["version"], "slmrec_format": f"{EXPORT_FORMAT} {EXPORT_FORMAT_VERSION}",
            "variant": variant, "source_run": manifest["source_run"], "kind": manifest["kind"],
            "base_model": manifest["base_model"]["ref"], "layers": str(manifest["layers"]),
            "dataset": manifest["data"]["name"], "data_hash": manifest["data"]["hash"],
            "n_items": str(manifest["n_items"]), "max_len": str(manifest["max_len"]), "pad_id": "0",
            "id_dim": str(manifest["id_dim"]), "item_map": ITEM_MAP, "input.items": ITEMS, "output.user": USER,
            "output.scores": SCORES, "protocol": PROTOCOL, "meant_for": ",".join(MEANT_FOR[variant])}


def model_card(manifest: dict, out: str, variants: list[str], quality: dict | None) -> str:
    """README.md of an export: what it is, its files, the ONNX contract, how to load it, and its measured quality."""
    base, data = manifest["base_model"], manifest["data"]
    layout = manifest.get("variants", {})
    rows = []
    for v in variants:
        rows.append(f"| `{FILES[v]}{'/' if '.' not in FILES[v] else ''}` | `{v}` | {WHAT[v]} |")
        data_file = layout.get(v, {}).get("external_data")
        if data_file:
            rows.append(f"| `{data_file}` | `{v}` | the weights of `{FILES[v]}` (ONNX external data, past protobuf's "
                        f"2 GiB): **keep it next to `{FILES[v]}`**, under this name |")
    files = "\n".join(rows)
    external = [layout[v]["external_data"] for v in variants if layout.get(v, {}).get("external_data")]
    note = ("\n\nThe `.data` files hold the weights of the ONNX file named before `.data`; the `.onnx` refers to "
            "it by that relative name, so ONNX Runtime finds it only in the same folder: copy, move or upload the two "
            "together and do not rename either." if external else "")
    onnx = next((FILES[v] for v in ("onnx-int8", "onnx-fp32", "onnx-int4") if v in variants), "model.onnx")
    return f"""---
library_name: transformers
tags: [slmrec, recommender, sequential-recommendation, onnx]
---
# A sequential recommender exported by slmrec

**What it is.** The {manifest['kind']} run `{manifest['source_run']}`: the first {manifest['layers']} of the
{base.get('layers_total', '?')} layers of `{base['ref']}` with the run's LoRA merged, reading a user's item history
through a {manifest['id_dim']}-d item table and scoring every one of the {manifest['n_items']} items as the next one.
Trained on `{data['name']}` (data hash `{data['hash']}`); exported by slmrec {manifest['version']}. Raw item ids map to
the model's item indices through `{ITEM_MAP}` (`slmrec recommend` speaks raw ids).

## Files
| file | variant | what it is for |
|---|---|---|
{files}
| `{ITEM_MAP}` | | raw item id ↔ index (index 0 is padding) |
| `config.json` | | slmrec's manifest (format `{EXPORT_FORMAT}`), not a transformers config: load `decoder/` |
| `checksums.json` | | sha256 of every file above; slmrec checks them before loading a variant |
| `quality.json`, `bench.json` | | measured quality and latency |{note}

## The ONNX contract
- input `items`: {ITEMS} (max_len = {manifest['max_len']}).
- output `user`: {USER} (id_dim = {manifest['id_dim']}).
- output `scores`: {SCORES} (n_items = {manifest['n_items']}).
- `metadata_props` of every ONNX file say the same (pad_id, max_len, n_items, item_map, the input and outputs), with
  the slmrec version, source run, dataset and evaluation protocol.

```python
import numpy as np
import onnxruntime as ort

sess = ort.InferenceSession("{out}/{onnx}")
print(sess.get_modelmeta().custom_metadata_map)
items = np.array([[0, 0, 1, 2, 3]], dtype=np.int64)  # left-padded item indices, oldest first
user, scores = sess.run(None, {{"items": items}})
scores[:, 0] = -np.inf  # padding; mask the history's items too if they must not come back
top10 = np.argsort(-scores, axis=1)[:, :10]
```

## With transformers and safetensors only
`decoder/` is the merged decoder (`AutoModel`; its token embedding is a one-row placeholder: it reads
`inputs_embeds`); `head.safetensors` holds the rest: `prefix` and `suffix` (the prompt's token embeddings), `up.*`
(item vector → hidden), `down.*` (hidden → user vector) and `id_table` (the item table, row 0 padding). One history:

```python
import torch
from safetensors.torch import load_file
from transformers import AutoModel

decoder = AutoModel.from_pretrained("{out}/decoder").eval()
head = load_file("{out}/head.safetensors")


def scores(items: list[int]) -> torch.Tensor:
    \"\"\"Scores of every item index as the next one, for one history of item indices (oldest first, no padding).\"\"\"
    hist = head["id_table"][torch.tensor(items[-{manifest['max_len']}:])] @ head["up.weight"].T + head["up.bias"]
    x = torch.cat([head["prefix"], hist, head["suffix"]])[None]
    with torch.no_grad():
        h = decoder(inputs_embeds=x).last_hidden_state[0, -1]
    user = h @ head["down.weight"].T + head["down.bias"]
    return user @ head["id_table"].T  # column 0 is padding
```

Batches of left-padded histories move the padding in front of the prompt (attention mask 0 there, positions counted
from the first real token), as slmrec's `splice` does; the ONNX graph does it for you.

## Quality
{quality_table(quality)}
"""


def quality_table(quality: dict | None) -> str:
    if not quality:
        return "Not measured."
    rows = ["| variant | MB | MRR % (sampled) | MRR % (full) | NDCG@10 % | HR@10 % | rel. MRR | measured on |",
            "|---|" + "---:|" * 6 + "---|"]
    for v in quality["variants"]:
        s, f = v["metrics"]["sampled"], v["metrics"]["full"]
        rows.append(f"| {v['name']} | {v['bytes'] / 2**20:.1f} | {100 * s['MRR']:.2f} | {100 * f['MRR']:.2f} | "
                    f"{100 * s['NDCG@10']:.2f} | {100 * s['HR@10']:.2f} | {v['relative_mrr']:.3f} | "
                    f"{v.get('measured_on', '')} |")
    for v in quality.get("not_measured", []):
        rows.append(f"| {v['name']} | | | | | | | not measured here: {v['why']} |")
    for v in quality.get("failed", []):
        rows.append(f"| {v['name']} | | | | | | | failed its check, left out: {v['why']} |")
    checks = [f"{name} max |onnx - torch| {c['max_abs_diff']:.1e} (tolerance {c['tolerance']:.1e}: atol {c['atol']:g} "
              f"+ rtol {c['rtol']:g} x max |torch|, on {c['onnx_on']})"
              for name, c in quality.get("onnx_check", {}).items() if c.get("passed") is not None]
    return (f"{quality['dataset']} `{quality['data_hash']}`, {quality['split']} split, {quality['users']} users; "
            f"protocol: {PROTOCOL}, {quality['candidates_sampled']} candidates in the sampled one. From "
            "`quality.json`" + (f"; ONNX checked against torch: {'; '.join(checks)}" if checks else "") + ".\n\n"
            + "\n".join(rows))
