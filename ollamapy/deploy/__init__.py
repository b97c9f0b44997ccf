"""Ways to run ollamapy beyond one server process: `ray_serve` (replicas behind Ray Serve)."""
