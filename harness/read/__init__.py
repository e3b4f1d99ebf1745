"""Reading a run: the HTML report and diffs (`report`), exports for the official harness and for
fine-tuning (`export`), a run's weak spots for the forge (`forge_target`). Reads what
`harness.loop` wrote; changes nothing."""
