"""The self-improvement loop: the algorithm (`controller`), its settings (`settings`, `runfile`),
what it records (`journal`, `lineage`), how it decides (`acceptance`, `attempts`, `power`,
`splits`, `tamper`) and picks a parent (`selection`), and the run's hold on the machine
(`workspace`, `runlock`, `run_ownership`, `scratch`, `leftovers`)."""
