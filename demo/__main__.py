"""`python -m demo`: the whole pipeline on built-in data (see demo/run.py)."""
from cli import run_main
from demo.run import main

run_main(main)   # a stop (Ctrl-C, SIGTERM) stops the running step too
