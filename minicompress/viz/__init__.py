"""Pictures of what each technique does, drawn with matplotlib: one module per technique (pruning, quantization,
distillation, binary), the demo's summary, the autograd graph (graph), step-by-step animations recorded during
real runs (animate) and the views behind the tutorials' sliders (live)."""
