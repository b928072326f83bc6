"""Report rendering and the analyses that write reports: the ladder report, bootstrap CIs, the benchmark report, the diagnosis, the budget sweep."""
