"""The paper's toolbox: prompt design, the Figure-1 comparison, sweeps, ensembles, nearest-token inspection."""
