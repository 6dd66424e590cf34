"""ONNX post-training compression: int8 (smooth, block or dynamic), int4 weight-only blocks, and fp16 for CUDA with
the head and the norms' statistics kept in fp32; each file written whole by export.onnx.save_onnx."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

from slmrec_cli.config.export import INT8_SCHEMES
from slmrec_cli.errors import SlmrecError
from slmrec_cli.export import onnx as onnx_files  # EXTERNAL_DATA_ABOVE read at call time (tests lower it)
from slmrec_cli.export.onnx import initializer_bytes, onnx_work, save_onnx


def int8_excluded_nodes(model_path: Path, outliers: bool = True) -> list[str]:
    """MatMuls left in fp32 by dynamic int8: the recommender head (up/down projections and the item scores: small,
    and where the ranking is decided) and, with `outliers`, the MLP down-projections. Dynamic int8 quantizes each
    activation tensor with one scale, and the down-projection's input carries the "massive activations" of LLMs that
    one scale cannot hold: quantizing everything halved MRR on the ml-100k student. After SmoothQuant
    (export/smooth.py) the down-projections quantize well and only the head stays fp32."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    head = ("/rec/up/", "/rec/down/")
    out = []
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        top_level = node.name.count("/") == 1  # the item scoring (user @ table.T) sits outside the modules
        if (outliers and "down_proj" in node.name) or node.name.startswith(head) or top_level:
            out.append(node.name)
    return out


@contextmanager
def quiet_quantizer():
    """ONNX Runtime's quantizers log every node at INFO (and advise pre-processing meant for CNNs): keep errors."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_int8(src: Path, dst: Path, scheme: str) -> dict:
    """int8 ONNX; returns what was done, for quality.json.
    smooth: `src` is the SmoothQuant-ed model (export/smooth.py); ONNX Runtime dynamic quantization (per-channel
      int8 weights, one int8 scale per activation tensor at run time, MatMulInteger) of every MatMul but the head.
    block: every weight MatMul as int8 weights in blocks of 32 with their own scales, and int8 compute on activations
      quantized per block at run time (MatMulNBits, accuracy level 4). Block scales hold the outliers.
    dynamic: dynamic quantization of the unsmoothed model, with the outlier layers (int8_excluded_nodes) in fp32."""
    if scheme not in INT8_SCHEMES:
        raise SlmrecError(f"--int8-scheme must be one of {', '.join(INT8_SCHEMES)}, got '{scheme}'")
    src, dst = Path(src), Path(dst)
    if scheme == "block":
        matmul_nbits(src, dst, bits=8, accuracy_level=4)
        return {"onnx_int8_scheme": scheme}
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    excluded = int8_excluded_nodes(src, outliers=scheme == "dynamic")
    big = initializer_bytes(onnx.load(str(src), load_external_data=False)) > onnx_files.EXTERNAL_DATA_ABOVE
    with quiet_quantizer(), onnx_work(dst) as work:
        # past 2 GiB the quantizer must write its output with external data (its own, named after the file);
        # save_onnx then writes the result by its own size
        quantize_dynamic(str(src), str(work / dst.name), weight_type=QuantType.QInt8, per_channel=True,
                         nodes_to_exclude=excluded, use_external_data_format=big)
        save_onnx(onnx.load(str(work / dst.name)), dst)
    return {"onnx_int8_scheme": scheme, "onnx_int8_fp32_nodes": excluded}


def quantize_int4(src: Path, dst: Path) -> None:
    """Block-wise 4-bit weight-only MatMul (blocks of 32, symmetric), fp32 compute."""
    matmul_nbits(src, dst, bits=4, accuracy_level=None)


def matmul_nbits(src: Path, dst: Path, *, bits: int, accuracy_level: int | None, block_size: int = 32) -> None:
    try:
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    except ImportError as e:
        raise SlmrecError(f"int{bits} ONNX quantization needs onnx and onnx-ir ({e.name} is missing): "
                          "pip install '.[cpu]'") from None
    quant = MatMulNBitsQuantizer(onnx.load(str(src)), bits=bits, block_size=block_size, is_symmetric=True,
                                 accuracy_level=accuracy_level)
    with quiet_quantizer():
        quant.process()
    save_onnx(quant.model.model, Path(dst))


def norm_statistic_nodes(graph) -> list[str]:
    """The nodes of each RMSNorm's statistic rsqrt(mean(x²) + eps), as torch exports it: Pow → ReduceMean → Add → Sqrt
    → Div (or Reciprocal), with the Constants they read. In fp16, Pow(x, 2) overflows once |x| passes 256 (65504 is
    fp16's largest), and LLM residual streams go there."""
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    constants = {node.output[0]: node for node in graph.node if node.op_type == "Constant"}
    out = []
    for node in graph.node:
        if node.op_type != "Pow":
            continue
        chain = [node]
        for ops in (("ReduceMean",), ("Add",), ("Sqrt",), ("Div", "Reciprocal")):
            after = consumers.get(chain[-1].output[0], [])
            if len(after) != 1 or after[0].op_type not in ops:
                break
            chain.append(after[0])
        if len(chain) > 1:  # a Pow that feeds a ReduceMean: a norm's statistic
            out += [n.name for n in chain] + [constants[i].name for n in chain for i in n.input if i in constants]
    return out


def join_fp32_nodes(graph) -> None:
    """Where ONNX Runtime's fp16 converter leaves two fp32 nodes back to back, it still passes the tensor through fp16
    (a Cast to fp16 after the first, one back to fp32 before the second): the second reads the first's fp32 output
    directly. Only the converter's own casts (named *_cast_to_fp16_node, *_cast_to_fp32_node) are touched."""
    producer = {o: node for node in graph.node for o in node.output}
    direct = {}
    for node in graph.node:
        before = producer.get(node.input[0]) if node.op_type == "Cast" else None
        if node.name.endswith("_cast_to_fp32_node") and before is not None \
                and before.name.endswith("_cast_to_fp16_node"):
            direct[node.output[0]] = before.input[0]
    for node in graph.node:
        node.input[:] = [direct.get(name, name) for name in node.input]
    while True:  # the casts left unread go, the one to fp32 first, then the one to fp16 it read
        used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
        kept = [node for node in graph.node if node.op_type != "Cast" or any(o in used for o in node.output)]
        if len(kept) == len(graph.node):
            return
        del graph.node[:]
        graph.node.extend(kept)


def sort_nodes(graph) -> None:
    """Nodes in topological order, as ONNX requires (the fp16 converter appends the casts it inserts at the end)."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        waiting = []
        for node in pending:
            if all(name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                waiting.append(node)
        if len(waiting) == len(pending):
            raise SlmrecError(f"the fp16 graph has a cycle or a missing input at {waiting[0].name}")
        pending = waiting
    del graph.node[:]
    graph.node.extend(ordered)


def convert_fp16(src: Path, dst: Path) -> dict:
    """dst ← src with its float tensors and compute in float16 (ONNX Runtime's converter), for the CUDA execution
    provider. Inputs and outputs keep their types (int64 items in, float32 user and scores out: keep_io_types), and
    stay fp32: the recommender head (the up/down projections and the item scores, where the ranking is decided; int8
    keeps it in fp32 too) and each RMSNorm's statistic (norm_statistic_nodes, joined in fp32: join_fp32_nodes). The
    converter is given the path, so its shape inference works past 2 GiB."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    kept = int8_excluded_nodes(src, outliers=False)
    norms = norm_statistic_nodes(onnx.load(str(src), load_external_data=False).graph)
    with quiet_quantizer():
        model = convert_float_to_float16(str(src), keep_io_types=True, node_block_list=kept + norms)
    join_fp32_nodes(model.graph)
    sort_nodes(model.graph)
    save_onnx(model, Path(dst))
    return {"onnx_fp16_fp32_nodes": kept, "onnx_fp16_fp32_norm_nodes": norms}
