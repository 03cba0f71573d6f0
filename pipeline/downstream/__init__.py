"""What users do with a job's output: export datasets and motion, render overlays, evaluate against GT."""
