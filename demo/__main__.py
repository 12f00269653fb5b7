"""`python -m demo`: the whole pipeline on built-in data (see demo/run.py)."""
from demo.run import main

main()
