"""The self-improvement loop: the algorithm (`controller`), built with its collaborators by
`compose.build_controller`: the journal and its folded state (`runlog`, `journal`), task runs
(`evaluation`, `workload`), the proposal step (`propose_step`, `proposals`), the money and
stops (`spend`), what it records (`records`, `lineage`); its settings (`settings`, `runfile`),
how it decides (`acceptance`, `attempts`, `power`, `splits`, `tamper`) and picks a parent
(`selection`), and the run's hold on the machine (`workspace`, `runlock`, `run_ownership`,
`scratch`, `leftovers`)."""
