"""Training: the loop, its parts and phases (supervised, SSOD), schedules, optimizer, run folder, results.csv."""
