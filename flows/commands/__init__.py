"""Implementations of `lakehouse` commands that serve people: the terminal views, the HTML report
and the notebook server. flows/cli.py registers them; each module imports its heavy parts lazily."""
