"""Export and import: run minicompress's models in the runtimes that ship them, and bring models in.

The chapter, in order:

1. ``lowering``: a model walked into a flat list of steps (the rules of what can be exported, float and int8);
2. ``tflite``: TensorFlow Lite FlatBuffers (float32, and TFLite's int8 scheme), run in LiteRT;
3. ``onnx``: ONNX graphs (float32, and QuantizeLinear / QLinearConv / QLinearMatMul), run in ONNX Runtime;
4. ``importing``: minicompress models from ONNX files (e.g. from ``torch.onnx.export``) and from safetensors
   weights plus a model spec.

The runtimes and file formats are optional packages: ``pip install -e ".[export]"``. Without them, the functions
that need them raise ``MissingExtraError`` naming the package and that command.
"""
import importlib

EXTRA = 'pip install -e ".[export]"'


class MissingExtraError(ImportError):
    """An optional package of the ``export`` extra is not installed."""


def require(module, fn):
    """Import an optional package, or raise MissingExtraError naming it, the function, and the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(f"{fn}: needs the optional package {module!r} ({exc}); install the export "
                                f"extra: {EXTRA}") from None


from .lowering import UnsupportedModelError  # noqa: E402  (after require, which the submodules import)
from .importing import from_onnx, from_safetensors, zoo_spec  # noqa: E402
from .onnx import run_onnx, save_onnx, to_onnx  # noqa: E402
from .tflite import run_tflite, save_tflite, to_tflite  # noqa: E402

__all__ = ["MissingExtraError", "UnsupportedModelError", "require", "to_tflite", "save_tflite", "run_tflite",
           "to_onnx", "save_onnx", "run_onnx", "from_onnx", "from_safetensors", "zoo_spec"]
