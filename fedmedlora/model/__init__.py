"""The model side: loading base models (loading.py; tiny_llama.py and gguf.py for the offline builtins, kept in
the machine's cache of ../local_cache.py; base_cache.py a base converted on loading, kept in a site's cache; quantization.py the
bitsandbytes rules), the LoRA adapter (adapter.py; base_identity.py says which base an adapter belongs to), the
process's resident model (resident.py), one client round of training (training.py) and greedy generation
(generation.py). shapes.py: the seeds' 8B shapes, built without weights."""
