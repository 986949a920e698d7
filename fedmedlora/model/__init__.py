"""The model side: loading base models (loading.py, tiny_llama.py for the offline builtin), the LoRA adapter
(adapter.py), the process's resident model (resident.py), one client round of training (training.py) and greedy
generation (generation.py)."""
