"""The engine: steps, tasks, execution modes and the DotFlow workflow."""
