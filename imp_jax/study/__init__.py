"""Many runs: sweeps, cluster workers, reports, and the reproduction of the study with its
claims and verdicts."""
