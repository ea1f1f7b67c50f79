"""Data: sources read files into arrays, splits divide them, the pipeline feeds Keras."""
