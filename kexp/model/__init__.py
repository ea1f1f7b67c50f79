"""Models from config: building the architecture and compiling it with Keras objects."""

from kexp.model.build import build_model, compile_model

__all__ = ["build_model", "compile_model"]
