"""Training gptcore's models: the data (data.py), the loop (train.py), checkpoints
(checkpoint.py), the presets' recipes (recipes.py) and the `train` / `sample` commands (cli.py)."""
