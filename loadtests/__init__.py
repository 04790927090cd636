"""Load tests: Locust users (users.py, locustfile.py, step.py) and the flood runner.

Only `python -m locust` ever imports the Locust files: Locust monkey-patches the process
with gevent. The flood runner (flood.py and its helpers) imports no Locust module, so the
CLI and the tests can use it.
"""
