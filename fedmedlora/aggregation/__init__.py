"""Pure aggregation functions over adapter states (`dict[str, np.ndarray]`); the Flower strategies wrap them.

Import from the modules (nothing is re-exported here: `fedavgopt.fedavgopt` would shadow its own module):
- `weighted`: weighted_average, linear_combination (float64 sums, float32 out);
- `fedavgopt`: FedAvgOpt, Nelder-Mead over per-client coefficients, direct and Gram-matrix objectives;
- `lora_product`: exact LoRA aggregation (average of B A, truncated SVD);
- `validation_weights`: Fed-MedLoRA+ softmax weights from validation losses;
- `screening`: whether a client state is usable, and why not.
"""
