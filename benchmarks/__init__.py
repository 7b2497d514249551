"""Side-by-side timing scripts; results are written as JSON under benchmarks/results/."""
