"""The benchmark behind `jaxqc compare`: every registered method that applies, on one data set, with one
protocol, in one table (runner), each in its own process for its peak memory (worker), with the split of
jaxqc.data.splits (protocol), each family's frozen budgets (budgets), and a table, JSON and plots (report)."""
