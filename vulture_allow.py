"""Names vulture (pyproject.toml, [tool.vulture]) reports as unused that are used from outside slmrec's own code.
Each line names one, with who uses it; anything vulture reports that is not here is dead code and goes."""

# torch calls forward() through Module.__call__
forward  # noqa
# attributes set on other libraries' objects, which read them: transformers configs and tokenizers, peft's
# LoraConfig, ONNX Runtime's SessionOptions, cuDNN's flags, Rich's tables, an optimizer's scheduler state
use_cache  # noqa
tie_last_hidden_states  # noqa
padding_side  # noqa
vocab_size  # noqa
base_model_name_or_path  # noqa
task_type  # noqa
pre_tokenizer  # noqa
intra_op_num_threads  # noqa
inter_op_num_threads  # noqa
log_severity_level  # noqa
enable_profiling  # noqa
profile_file_prefix  # noqa
benchmark  # noqa
caption  # noqa
_last_lr  # noqa
__signature__  # noqa  (Typer reads a command's signature from it: cli_options.py)
# io.RawIOBase's protocol, read by io.TextIOWrapper over data/fast_csv.py's gzip reader
readable  # noqa
seekable  # noqa
closed  # noqa
# a prepared dataset's public maps from index to raw id (tests/test_data_readers.py; users mapping results back)
item_raw_ids  # noqa
user_raw_ids  # noqa
# the hook tests use to stop a run mid-training as Ctrl-C would (tests/test_crash_safety.py, test_sasrec.py, ...)
request_stop  # noqa
