"""`fedmedlora experiment`: zero-shot, single-site, centralized and federated side by side (cli.py plans and runs,
baselines.py trains the in-process settings, federated.py runs each strategy through `fedmedlora run`, report.py
writes the table, CSV and plot)."""
