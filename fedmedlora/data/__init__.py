"""Data: reading named datasets into rows (ner.py, relations.py, instruct.py via rows.py), the prompt templates, and
sites (sites.py: the pooled rows split among simulated hospitals). Nothing here knows about models or Flower."""
