"""What run directories say: a run directory as data (`runs.py`), its figures (`figures.py`), Markdown and
number formatting (`markdown.py`) and `mdpt report` (`report.py`). Imports `experiments/` and below, never
`reproduction/`."""
