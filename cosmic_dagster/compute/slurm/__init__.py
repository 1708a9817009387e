"""Slurm through its command line (sbatch/squeue/sacct/scancel) on a reachable cluster."""
