"""One module per command: its config and the function that runs it. Shared helpers live below (data, models,
runs, train, evaluation, distill, export, report), never here."""
