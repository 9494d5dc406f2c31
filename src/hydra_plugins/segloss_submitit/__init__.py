"""segloss's Hydra launcher plugin: the SLURM launcher of ``conf/hydra/launcher/slurm.yaml``."""
